use super::*;
use crate::error::SegmentProblem;
use crate::test_view::{message, track};

fn check(schema: &ViewSchema, path: &str) -> Result<(), MaskError> {
    schema.check_path(path, Form::Path, None)
}

fn check_json(schema: &ViewSchema, path: &str) -> Result<String, MaskError> {
    let mut snake = String::new();
    schema.check_path(path, Form::Json, Some(&mut snake))?;
    Ok(snake)
}

#[test]
fn accepts_fields_and_paths_into_singular_messages() {
    let schema = track();
    for path in [
        "id",
        "creator",
        "creator.followers_count",
        "stats.likes_count",
        "access.downloadable",
        "created_at.seconds",
        "tags",
        "labels",
        "collaborators",
        "plays_count",
    ] {
        assert_eq!(check(&schema, path), Ok(()), "{path}");
    }
}

#[test]
fn rejects_unknown_fields_naming_the_path() {
    let schema = track();
    let error = check(&schema, "creator.nickname").unwrap_err();
    assert_eq!(
        error,
        MaskError::UnknownField {
            path: "creator.nickname".to_owned(),
            field: "nickname".to_owned(),
            message: "testview.v1.Creator".to_owned(),
        }
    );
    assert_eq!(
        error.user_message(),
        r#"field mask path "creator.nickname" names unknown field "nickname" in testview.v1.Creator"#
    );
    assert_eq!(error.path(), Some("creator.nickname"));
}

#[test]
fn rejects_paths_through_scalars_lists_and_maps() {
    let schema = track();
    assert!(matches!(
        check(&schema, "title.length"),
        Err(MaskError::ThroughScalar { field, .. }) if field == "title"
    ));
    assert!(matches!(
        check(&schema, "creator.id.value"),
        Err(MaskError::ThroughScalar { field, .. }) if field == "id"
    ));
    assert!(matches!(
        check(&schema, "collaborators.id"),
        Err(MaskError::ThroughRepeated { field, .. }) if field == "collaborators"
    ));
    assert!(matches!(
        check(&schema, "tags.first"),
        Err(MaskError::ThroughRepeated { .. })
    ));
    assert!(matches!(
        check(&schema, "labels.mood"),
        Err(MaskError::ThroughMap { field, path }) if field == "labels" && path == "labels.mood"
    ));
}

#[test]
fn rejects_malformed_segments() {
    let schema = track();
    let cases = [
        (
            "",
            MaskError::EmptySegment {
                path: String::new(),
            },
        ),
        (
            "creator.",
            MaskError::EmptySegment {
                path: "creator.".to_owned(),
            },
        ),
        (
            "creator..id",
            MaskError::EmptySegment {
                path: "creator..id".to_owned(),
            },
        ),
        (
            ".id",
            MaskError::EmptySegment {
                path: ".id".to_owned(),
            },
        ),
        (
            "creator.*",
            MaskError::MisplacedWildcard {
                path: "creator.*".to_owned(),
            },
        ),
    ];
    for (path, expected) in cases {
        assert_eq!(check(&schema, path), Err(expected), "{path:?}");
    }
    let problems = [
        ("_id", SegmentProblem::LeadingUnderscore),
        ("creator.followersCount", SegmentProblem::UpperCase),
        ("Title", SegmentProblem::UpperCase),
        ("creator.id ", SegmentProblem::InvalidCharacter),
        ("foo_1", SegmentProblem::DigitAfterUnderscore),
    ];
    for (path, problem) in problems {
        assert!(
            matches!(check(&schema, path), Err(MaskError::InvalidSegment { problem: found, .. }) if found == problem),
            "{path:?}"
        );
    }
}

#[test]
fn enforces_depth_and_length_limits() {
    let limits = Limits {
        max_paths: 4,
        max_depth: 3,
        max_path_len: 30,
    };
    let schema = ViewSchema::with_limits(message("Folder"), limits).unwrap();
    assert_eq!(check(&schema, "parent.parent.name"), Ok(()));
    assert_eq!(
        check(&schema, "parent.parent.parent.name"),
        Err(MaskError::TooDeep {
            path: "parent.parent.parent.name".to_owned(),
            depth: 4,
            max: 3,
        })
    );
    let long = "parent.parent.parent.parent.name";
    let error = check(&schema, long).unwrap_err();
    assert!(
        matches!(&error, MaskError::PathTooLong { max: 30, prefix } if long.starts_with(prefix.as_str()))
    );
    assert_eq!(
        error.user_message(),
        format!("field mask path starting {long:?} is longer than the limit of 30 bytes")
    );
}

#[test]
fn recursive_messages_share_one_node() {
    let schema = ViewSchema::new(message("Folder")).unwrap();
    assert_eq!(schema.inner.nodes.len(), 1);
    assert_eq!(schema.message_node("parent.parent"), Some(0));
    assert_eq!(schema.message_node("parent.name"), None);
}

#[test]
fn json_paths_are_converted_to_the_path_form() {
    let schema = track();
    assert_eq!(
        check_json(&schema, "creator.followersCount").unwrap(),
        "creator.followers_count"
    );
    assert_eq!(check_json(&schema, "artworkUrl").unwrap(), "artwork_url");
    assert!(matches!(
        check_json(&schema, "creator.followers_count"),
        Err(MaskError::InvalidSegment {
            problem: SegmentProblem::UnderscoreInJson,
            ..
        })
    ));
    assert!(matches!(
        check_json(&schema, "creator.followerCount"),
        Err(MaskError::UnknownField { field, .. }) if field == "followerCount"
    ));
}

#[test]
fn refuses_views_whose_names_have_no_json_form() {
    let error = ViewSchema::new(message("Awkward")).unwrap_err();
    assert_eq!(
        error,
        SchemaError::FieldName {
            message: "testview.v1.Awkward".to_owned(),
            field: "ipv4_1".to_owned(),
            problem: SegmentProblem::DigitAfterUnderscore,
        }
    );
}

#[test]
fn debug_names_the_view() {
    assert!(format!("{:?}", track()).contains("testview.v1.Track"));
    assert_eq!(track().name(), "testview.v1.Track");
}

#[test]
fn leaf_paths_end_on_fields_with_nothing_to_select_inside() {
    let leaves = track().leaf_paths();
    let expected = [
        "access.downloadable",
        "artwork_url",
        "collaborators",
        "created_at",
        "creator.display_name",
        "creator.followed_by_viewer",
        "creator.followers_count",
        "creator.id",
        "description",
        "duration",
        "genre",
        "id",
        "labels",
        "plays_count",
        "stats.likes_count",
        "stats.reposts_count",
        "tags",
        "title",
        "viewer.liked",
        "viewer.reposted",
    ];
    assert_eq!(leaves, expected);
    // Every leaf is a valid path.
    for leaf in &leaves {
        check(&track(), leaf).unwrap();
    }
}
