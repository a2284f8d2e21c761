use super::*;

#[test]
fn masks_in_path_or_json_form_become_the_json_form() {
    assert_eq!(
        mask_to_json("creator.followers_count, title"),
        "creator.followersCount,title"
    );
    assert_eq!(
        mask_to_json("creator.followersCount,stats"),
        "creator.followersCount,stats"
    );
    assert_eq!(mask_to_json("*"), "*");
    assert_eq!(mask_to_json(""), "");
}

#[test]
fn unary_methods_resolve_and_streaming_ones_point_to_their_commands() {
    assert_eq!(
        resolve(Gateway::Consumer, "GetTrack").unwrap().full_name(),
        "consumer.v1.ConsumerGateway.GetTrack"
    );
    assert_eq!(
        resolve(Gateway::Creator, "creator.v1.CreatorGateway/UpdateTrack")
            .unwrap()
            .name(),
        "UpdateTrack"
    );
    let streaming = resolve(Gateway::Consumer, "DownloadTrack").unwrap_err();
    assert!(
        streaming.to_string().contains("gatewayctl download"),
        "{streaming}"
    );
    let unknown = resolve(Gateway::Creator, "Nope").unwrap_err();
    assert!(unknown.to_string().contains("ListMyTracks"), "{unknown}");
}

#[test]
fn the_command_line_parses() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "gatewayctl",
        "call",
        "consumer",
        "GetTrack",
        "-d",
        r#"{"track_id":"trk_00001"}"#,
        "--mask",
        "title",
        "--user",
        "usr_0001",
    ])
    .unwrap();
    assert!(matches!(
        cli.command,
        Command::Call {
            gateway: Gateway::Consumer,
            ..
        }
    ));
    assert_eq!(cli.global.user.as_deref(), Some("usr_0001"));
}
