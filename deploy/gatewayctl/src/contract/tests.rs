use super::*;

fn consumer() -> DescriptorPool {
    DescriptorPool::decode(protos::descriptors::CONSUMER).unwrap()
}

#[test]
fn the_consumer_view_has_the_contract_paths_and_well_known_types_are_leaves() {
    let pool = consumer();
    let paths: Vec<String> = leaf_paths(&pool.get_message_by_name("consumer.v1.Track").unwrap())
        .into_iter()
        .map(|leaf| leaf.path)
        .collect();
    for path in [
        "id",
        "title",
        "description",
        "genre",
        "duration",
        "artwork_url",
        "created_at",
        "creator.id",
        "creator.followers_count",
        "creator.followed_by_viewer",
        "stats.likes_count",
        "stats.reposts_count",
        "viewer.liked",
        "viewer.reposted",
        "access.downloadable",
    ] {
        assert!(paths.iter().any(|p| p == path), "{path} in {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("duration.")),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "creator"), "{paths:?}");
}

#[test]
fn repeated_fields_are_leaves_and_recursion_stops() {
    // A message that holds itself, through a singular field and a repeated one.
    let file = prost_types::FileDescriptorProto {
        name: Some("node.proto".into()),
        package: Some("test.v1".into()),
        syntax: Some("proto3".into()),
        message_type: vec![prost_types::DescriptorProto {
            name: Some("Node".into()),
            field: vec![
                field(
                    "name",
                    1,
                    prost_types::field_descriptor_proto::Type::String,
                    None,
                    false,
                ),
                field(
                    "parent",
                    2,
                    prost_types::field_descriptor_proto::Type::Message,
                    Some(".test.v1.Node"),
                    false,
                ),
                field(
                    "children",
                    3,
                    prost_types::field_descriptor_proto::Type::Message,
                    Some(".test.v1.Node"),
                    true,
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let pool = DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
        file: vec![file],
    })
    .unwrap();
    let paths = leaf_paths(&pool.get_message_by_name("test.v1.Node").unwrap());
    assert_eq!(
        paths,
        [
            LeafPath {
                path: "name".into(),
                numbers: vec![1]
            },
            LeafPath {
                path: "parent".into(),
                numbers: vec![2]
            },
            LeafPath {
                path: "children".into(),
                numbers: vec![3]
            },
        ]
    );
}

fn field(
    name: &str,
    number: i32,
    kind: prost_types::field_descriptor_proto::Type,
    type_name: Option<&str>,
    repeated: bool,
) -> prost_types::FieldDescriptorProto {
    use prost_types::field_descriptor_proto::Label;
    prost_types::FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(if repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(kind as i32),
        type_name: type_name.map(Into::into),
        json_name: Some(name.into()),
        ..Default::default()
    }
}

#[test]
fn windows_take_d_h_m_and_s() {
    assert_eq!(Window::parse("30d").unwrap().seconds, 30 * 86_400);
    assert_eq!(Window::parse("12h").unwrap().seconds, 12 * 3_600);
    assert_eq!(Window::parse("90m").unwrap().seconds, 90 * 60);
    assert_eq!(Window::parse("3600s").unwrap().seconds, 3_600);
    assert_eq!(Window::parse("30d").unwrap().to_string(), "30d");
    assert!(Window::parse("30").unwrap_err().contains("no unit"));
    assert!(Window::parse("d").is_err());
    assert!(Window::parse("1.5d").is_err());
    assert!(Window::parse("").is_err());
}

#[test]
fn unix_seconds_print_as_utc() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_796_000_000), "2026-11-30T00:53:20Z");
}

#[test]
fn the_same_set_removes_nothing() {
    let pool = consumer();
    let views = vec!["consumer.v1.Track".to_owned()];
    let report = check(&pool, &pool, &views, &[], Window::parse("30d").unwrap(), 0).unwrap();
    assert!(report.failures.is_empty());
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("no path removed")),
        "{report:?}"
    );
    let unknown = vec!["consumer.v1.Nope".to_owned()];
    assert!(
        check(
            &pool,
            &pool,
            &unknown,
            &[],
            Window::parse("30d").unwrap(),
            0
        )
        .is_err()
    );
}
