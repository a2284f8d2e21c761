//! Feeds arbitrary text to both mask parsers of the Track test view.
//!
//! The input is read as the canonical JSON form as a whole, and as a list of path form paths
//! (one per line). Neither parser may panic, and whatever they accept must round trip through
//! both forms and behave under the algebra.

#![no_main]

use std::sync::LazyLock;

use field_mask::{Mask, ViewSchema};
use libfuzzer_sys::fuzz_target;
use prost_reflect::DescriptorPool;

static SCHEMA: LazyLock<ViewSchema> = LazyLock::new(|| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests");
    let files = protox::compile(["view.proto"], [dir]).expect("the test view compiles");
    let pool = DescriptorPool::from_file_descriptor_set(files).expect("the test view is valid");
    let track = pool
        .get_message_by_name("testview.v1.Track")
        .expect("the test view has a Track");
    ViewSchema::new(track).expect("the track view is valid")
});

fn check_round_trips(mask: &Mask) {
    // A mask that selects nothing has no wire form: its empty form reads as the whole view.
    if mask.is_nothing() {
        return;
    }
    let json = mask.to_json();
    let from_json = SCHEMA.parse_json(&json).expect("a mask's JSON form parses");
    assert_eq!(&from_json, mask, "JSON round trip of {json:?}");
    let from_paths = SCHEMA
        .parse_paths(mask.to_field_mask().paths)
        .expect("a mask's paths parse");
    assert_eq!(&from_paths, mask, "path round trip of {mask}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let json = SCHEMA.parse_json(text);
    let paths = SCHEMA.parse_paths(text.split('\n'));
    for mask in [&json, &paths].into_iter().flatten() {
        check_round_trips(mask);
    }
    if let (Ok(a), Ok(b)) = (&json, &paths) {
        let union = a.union(b);
        let both = a.intersect(b);
        let rest = a.subtract(b, &SCHEMA);
        assert!(union.covers_mask(a) && union.covers_mask(b));
        assert!(a.covers_mask(&both) && b.covers_mask(&both));
        assert!(a.covers_mask(&rest));
        assert!(rest.intersect(b).is_nothing());
        check_round_trips(&rest);
        check_round_trips(&union);
        check_round_trips(&both);
    }
    if let Err(error) = &json {
        assert!(!error.user_message().is_empty());
    }
});
