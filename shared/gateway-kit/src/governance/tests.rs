use prometheus_client::encoding::text::encode;
use tonic::Code;

use super::*;

fn view() -> ViewSchema {
    let pool = prost_reflect::DescriptorPool::decode(protos::descriptors::CONSUMER).unwrap();
    ViewSchema::new(pool.get_message_by_name("consumer.v1.Track").unwrap()).unwrap()
}

fn mask(view: &ViewSchema, paths: &[&str]) -> Mask {
    view.parse_paths(paths.iter().copied()).unwrap()
}

fn page(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

fn one(keys: u64) -> Cost {
    Cost {
        calls: 2,
        keys,
        extra: 0,
    }
}

fn governance(
    masks: AllowedMaskSettings,
    budget: BudgetSettings,
) -> (Governance, Registry, ViewSchema) {
    let view = view();
    let mut registry = Registry::default();
    let governance = Governance::new(&view, &masks, &budget, &mut registry).unwrap();
    (governance, registry, view)
}

#[test]
fn served_reads_count_each_leaf_the_mask_selects_per_client() {
    let (governance, registry, view) =
        governance(AllowedMaskSettings::default(), BudgetSettings::default());
    let web = Client::named("web-bff");
    for _ in 0..3 {
        governance
            .admit(
                "GetTrack",
                &web,
                &mask(&view, &["title", "creator"]),
                one(1),
            )
            .unwrap()
            .served();
    }
    // Refused or failed reads are not served: only `served` counts.
    let _unserved = governance
        .admit("GetTrack", &web, &mask(&view, &["genre"]), one(1))
        .unwrap();
    let text = page(&registry);
    assert!(text.contains("gateway_view_info{view=\"consumer.v1.Track\"} 1"));
    for path in [
        "title",
        "creator.id",
        "creator.followers_count",
        "creator.followed_by_viewer",
    ] {
        assert!(
            text.contains(&format!(
                "gateway_field_reads_total{{client=\"web-bff\",path=\"{path}\"}} 3"
            )),
            "{path} in {text}"
        );
    }
    assert!(text.contains("gateway_field_reads_total{client=\"web-bff\",path=\"genre\"} 0"));
    assert!(text.contains("gateway_field_last_read_seconds{client=\"web-bff\",path=\"title\"} 1"));
    // The whole view reaches every leaf; a path into a well-known type counts its leaf.
    let ios = Client::named("ios-bff");
    governance
        .admit("GetTrack", &ios, &Mask::all(), one(1))
        .unwrap()
        .served();
    governance
        .admit(
            "GetTrack",
            &ios,
            &mask(&view, &["created_at.seconds"]),
            one(1),
        )
        .unwrap()
        .served();
    let text = page(&registry);
    for leaf in governance.leaf_paths() {
        let expected = if leaf == "created_at" { 2 } else { 1 };
        assert!(
            text.contains(&format!(
                "gateway_field_reads_total{{client=\"ios-bff\",path=\"{leaf}\"}} {expected}"
            )),
            "{leaf} in {text}"
        );
    }
}

#[test]
fn allow_lists_compare_normalized_masks_and_enforce_or_log() {
    let lists = |mode| AllowedMaskSettings {
        mode,
        clients: [(
            "web-bff".to_owned(),
            vec!["title, creator.id".to_owned(), "*".to_owned()],
        )]
        .into_iter()
        .collect(),
    };
    let web = Client::named("web-bff");
    let (enforcing, registry, view) =
        governance(lists(MaskMode::Enforce), BudgetSettings::default());
    // Listed masks pass in any order, with duplicates and the whole view as an unset mask.
    for paths in [
        &["creator.id", "title", "title"][..],
        &["title", "creator.id"],
    ] {
        assert!(
            enforcing
                .admit("GetTrack", &web, &mask(&view, paths), one(1))
                .is_ok()
        );
    }
    assert!(
        enforcing
            .admit("GetTrack", &web, &Mask::all(), one(1))
            .is_ok()
    );
    let status = enforcing
        .admit("GetTrack", &web, &mask(&view, &["title"]), one(1))
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "client \"web-bff\" may not read with the mask \"title\": it is not on the client's list \
         of allowed masks"
    );
    // A client with no list has no allowed mask.
    let status = enforcing
        .admit("GetTrack", &Client::unknown(), &Mask::all(), one(1))
        .unwrap_err();
    assert!(status.message().contains("\"unknown\""));
    let text = page(&registry);
    assert!(text.contains("gateway_masks_unlisted_total{client=\"web-bff\"} 1"));
    assert!(text.contains("gateway_masks_unlisted_total{client=\"unknown\"} 1"));

    let (logging, registry, view) =
        governance(lists(MaskMode::LogUnknown), BudgetSettings::default());
    for _ in 0..2 {
        assert!(
            logging
                .admit("GetTrack", &web, &mask(&view, &["title"]), one(1))
                .is_ok()
        );
    }
    assert!(page(&registry).contains("gateway_masks_unlisted_total{client=\"web-bff\"} 2"));

    let (off, registry, view) = governance(lists(MaskMode::Off), BudgetSettings::default());
    assert!(
        off.admit("GetTrack", &web, &mask(&view, &["title"]), one(1))
            .is_ok()
    );
    assert!(page(&registry).contains("gateway_masks_unlisted_total{client=\"web-bff\"} 0"));
}

#[test]
fn an_allow_list_that_does_not_parse_fails_start_up() {
    let masks = AllowedMaskSettings {
        mode: MaskMode::Enforce,
        clients: [("web-bff".to_owned(), vec!["title,nope".to_owned()])]
            .into_iter()
            .collect(),
    };
    let error = Governance::new(
        &view(),
        &masks,
        &BudgetSettings::default(),
        &mut Registry::default(),
    )
    .unwrap_err();
    assert!(
        error.starts_with("allowed_masks.clients.web-bff: \"title,nope\":"),
        "{error}"
    );
}

#[test]
fn budgets_measure_or_refuse_naming_the_cost_and_the_budget() {
    let budget = |mode| BudgetSettings {
        mode,
        default: 10,
        clients: [("web-bff".to_owned(), 200)].into_iter().collect(),
    };
    let web = Client::named("web-bff");
    let (enforcing, registry, view) =
        governance(AllowedMaskSettings::default(), budget(BudgetMode::Enforce));
    let whole = Mask::all();
    assert!(
        enforcing
            .admit("BatchGetTracks", &web, &whole, one(100))
            .is_ok()
    );
    let status = enforcing
        .admit("BatchGetTracks", &web, &whole, one(101))
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "this read's planned cost is 202 (2 upstream calls × 101 keys), over the fanout budget \
         of 200 of client \"web-bff\": ask for fewer fields or fewer tracks"
    );
    // Clients without a budget of their own have the default.
    let page_cost = Cost {
        calls: 1,
        keys: 10,
        extra: 1,
    };
    let status = enforcing
        .admit(
            "ListLikedTracks",
            &Client::unknown(),
            &mask(&view, &["title"]),
            page_cost,
        )
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("11 (1 upstream calls × 10 keys + 1 to list the page)")
    );
    let text = page(&registry);
    assert!(
        text.contains("gateway_request_cost_count{client=\"web-bff\"} 2"),
        "{text}"
    );
    assert!(text.contains("gateway_over_budget_total{client=\"web-bff\"} 1"));

    let (measuring, registry, _) =
        governance(AllowedMaskSettings::default(), budget(BudgetMode::Measure));
    assert!(
        measuring
            .admit("BatchGetTracks", &web, &whole, one(500))
            .is_ok()
    );
    let text = page(&registry);
    assert!(text.contains("gateway_over_budget_total{client=\"web-bff\"} 1"));
    assert!(
        text.contains("gateway_request_cost_sum{client=\"web-bff\"} 1000.0"),
        "{text}"
    );
    let verdict = measuring.explain(&web, &whole, one(3));
    assert_eq!(
        (verdict.cost.total(), verdict.budget, verdict.mask_allowed),
        (6, 200, true)
    );
}

#[test]
fn the_mask_comes_from_the_field_or_the_header_never_both() {
    let view = view();
    let mut metadata = MetadataMap::new();
    let field = Some(prost_types::FieldMask {
        paths: vec!["title".into()],
    });
    assert_eq!(
        requested_mask(&view, &metadata, field.clone()).unwrap(),
        mask(&view, &["title"])
    );
    metadata.insert(
        READ_MASK_HEADER,
        "creator.followersCount,title".parse().unwrap(),
    );
    assert_eq!(
        requested_mask(&view, &metadata, None).unwrap(),
        mask(&view, &["title", "creator.followers_count"])
    );
    let error = requested_mask(&view, &metadata, field).unwrap_err();
    assert_eq!(error.field(), "x-read-mask");
    assert!(
        error
            .to_string()
            .starts_with("x-read-mask: the request sets read_mask too")
    );
    metadata.insert(READ_MASK_HEADER, "creator.nope".parse().unwrap());
    let error = requested_mask(&view, &metadata, None).unwrap_err();
    assert!(error.to_string().starts_with("x-read-mask: "), "{error}");
    assert!(error.to_string().contains("nope"), "{error}");
}
