use super::*;
use crate::schema::Limits;
use crate::test_view::{message, track};

fn mask(paths: &[&str]) -> Mask {
    track().parse_paths(paths.iter().copied()).unwrap()
}

#[test]
fn empty_unset_and_star_mean_the_whole_view() {
    let schema = track();
    assert!(schema.parse_paths(Vec::<String>::new()).unwrap().is_all());
    assert!(schema.parse_field_mask(None).unwrap().is_all());
    assert!(
        schema
            .parse_field_mask(Some(prost_types::FieldMask::default()))
            .unwrap()
            .is_all()
    );
    assert!(schema.parse_paths(["*"]).unwrap().is_all());
    assert!(schema.parse_paths(["title", "*"]).unwrap().is_all());
    assert!(schema.parse_json("").unwrap().is_all());
    assert!(schema.parse_json("*").unwrap().is_all());
}

#[test]
fn star_does_not_hide_invalid_paths() {
    assert!(track().parse_paths(["*", "bogus"]).is_err());
}

#[test]
fn normalizes_sorts_and_drops_covered_paths() {
    let parsed = mask(&[
        "title",
        "creator.id",
        "creator",
        "stats.likes_count",
        "title",
        "id",
    ]);
    assert_eq!(
        parsed.paths().unwrap(),
        ["creator", "id", "stats.likes_count", "title"]
    );
    assert_eq!(parsed.to_string(), "creator,id,stats.likes_count,title");
    assert_eq!(
        format!("{parsed:?}"),
        "Mask(creator,id,stats.likes_count,title)"
    );
}

#[test]
fn sorting_keeps_descendants_next_to_their_parent() {
    // `.` sorts before `_`, so `creator.id` lands between `creator` and a sibling such as
    // `creator_x` would; with `access` and `artwork_url` the order is plain.
    let parsed = mask(&["artwork_url", "access.downloadable", "access"]);
    assert_eq!(parsed.paths().unwrap(), ["access", "artwork_url"]);
}

#[test]
fn counts_paths_against_the_limit() {
    let limits = Limits {
        max_paths: 2,
        ..Limits::default()
    };
    let schema = ViewSchema::with_limits(message("Track"), limits).unwrap();
    assert!(schema.parse_paths(["id", "title"]).is_ok());
    assert_eq!(
        schema.parse_paths(["id", "title", "id"]),
        Err(MaskError::TooManyPaths { max: 2 })
    );
    assert_eq!(
        schema.parse_json("id,title,genre"),
        Err(MaskError::TooManyPaths { max: 2 })
    );
    assert_eq!(
        MaskError::TooManyPaths { max: 2 }.user_message(),
        "field mask has more than 2 paths"
    );
}

#[test]
fn covers_is_a_prefix_test_on_segments() {
    let parsed = mask(&["creator", "stats.likes_count"]);
    assert!(parsed.covers("creator"));
    assert!(parsed.covers("creator.id"));
    assert!(!parsed.covers("creator_x"));
    assert!(!parsed.covers("stats"));
    assert!(parsed.covers("stats.likes_count"));
    assert!(!parsed.covers("stats.reposts_count"));
    assert!(!parsed.covers("access"));
    assert!(Mask::all().covers("anything.at.all"));
    assert!(!Mask::nothing().covers("id"));
}

#[test]
fn touches_sees_ancestors_and_descendants() {
    let parsed = mask(&["creator.id"]);
    assert!(parsed.touches("creator"));
    assert!(parsed.touches("creator.id"));
    assert!(!parsed.touches("creator.followers_count"));
    assert!(!parsed.touches("stats"));
}

#[test]
fn union_merges_and_normalizes() {
    let a = mask(&["creator.id", "title"]);
    let b = mask(&["creator", "id"]);
    assert_eq!(a.union(&b), mask(&["creator", "id", "title"]));
    assert!(a.union(&Mask::all()).is_all());
    assert_eq!(a.union(&Mask::nothing()), a);
}

#[test]
fn intersect_keeps_the_more_specific_path() {
    let a = mask(&["creator", "title", "stats.likes_count"]);
    let b = mask(&["creator.id", "stats", "id"]);
    assert_eq!(a.intersect(&b), mask(&["creator.id", "stats.likes_count"]));
    assert_eq!(a.intersect(&Mask::all()), a);
    assert_eq!(Mask::all().intersect(&b), b);
    assert!(a.intersect(&mask(&["id"])).is_nothing());
}

#[test]
fn subtract_expands_what_it_cuts_into() {
    let schema = track();
    let a = mask(&["creator", "title"]);
    let b = mask(&["creator.id", "title"]);
    assert_eq!(
        a.subtract(&b, &schema),
        mask(&[
            "creator.display_name",
            "creator.followed_by_viewer",
            "creator.followers_count"
        ])
    );
    assert!(a.subtract(&Mask::all(), &schema).is_nothing());
    assert_eq!(a.subtract(&Mask::nothing(), &schema), a);
    assert_eq!(a.subtract(&mask(&["id"]), &schema), a);
    let rest = Mask::all().subtract(&mask(&["creator", "stats.likes_count"]), &schema);
    assert!(!rest.covers("creator.id"));
    assert!(rest.covers("stats.reposts_count"));
    assert!(!rest.covers("stats.likes_count"));
    assert!(rest.covers("title"));
    assert!(rest.covers("labels"));
}

#[test]
fn covers_mask_orders_masks() {
    let small = mask(&["creator.id"]);
    let big = mask(&["creator", "title"]);
    assert!(big.covers_mask(&small));
    assert!(!small.covers_mask(&big));
    assert!(Mask::all().covers_mask(&big));
    assert!(!big.covers_mask(&Mask::all()));
    assert!(big.covers_mask(&Mask::nothing()));
}

#[test]
fn json_form_is_lower_camel_case() {
    let parsed = mask(&["title", "creator.followers_count"]);
    assert_eq!(parsed.to_json(), "creator.followersCount,title");
    let back = track().parse_json("title,creator.followersCount").unwrap();
    assert_eq!(back, parsed);
    assert_eq!(Mask::all().to_json(), "*");
    assert_eq!(Mask::nothing().to_json(), "");
}

#[test]
fn json_form_rejects_the_known_bad_cases() {
    let schema = track();
    for bad in [
        "creator.followers_count",
        "Title",
        "_title",
        "title,",
        ",title",
        "title,,id",
        "creator..id",
        "title, id",
        "creator.*",
        "tags.first",
    ] {
        assert!(schema.parse_json(bad).is_err(), "{bad:?}");
    }
    let error = schema.parse_json("creator.followerCount").unwrap_err();
    assert_eq!(error.path(), Some("creator.followerCount"));
}

#[test]
fn field_mask_form_spells_the_whole_view_as_star() {
    assert_eq!(Mask::all().to_field_mask().paths, ["*"]);
    assert_eq!(mask(&["id"]).to_field_mask().paths, ["id"]);
    let round_trip = track()
        .parse_field_mask(Some(mask(&["creator.id", "title"]).to_field_mask()))
        .unwrap();
    assert_eq!(round_trip, mask(&["creator.id", "title"]));
}
