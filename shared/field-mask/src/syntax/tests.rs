use super::*;

#[test]
fn snake_segments_follow_the_grammar() {
    for good in [
        "id",
        "title",
        "followers_count",
        "sha256",
        "x509_cert",
        "a_b_c",
    ] {
        assert_eq!(check_snake(good), Ok(()), "{good}");
    }
    let cases = [
        ("_id", SegmentProblem::LeadingUnderscore),
        ("1id", SegmentProblem::LeadingDigit),
        ("Id", SegmentProblem::UpperCase),
        ("followersCount", SegmentProblem::UpperCase),
        ("foo_1", SegmentProblem::DigitAfterUnderscore),
        ("foo__bar", SegmentProblem::DoubleUnderscore),
        ("foo_", SegmentProblem::TrailingUnderscore),
        ("foo-bar", SegmentProblem::InvalidCharacter),
        ("foo bar", SegmentProblem::InvalidCharacter),
        ("é", SegmentProblem::InvalidCharacter),
        ("*", SegmentProblem::InvalidCharacter),
    ];
    for (bad, problem) in cases {
        assert_eq!(check_snake(bad), Err(problem), "{bad}");
    }
}

#[test]
fn camel_segments_follow_the_grammar() {
    for good in ["id", "followersCount", "sha256", "x509Cert", "fooBAR"] {
        assert_eq!(check_camel(good), Ok(()), "{good}");
    }
    let cases = [
        ("_id", SegmentProblem::UnderscoreInJson),
        ("followers_count", SegmentProblem::UnderscoreInJson),
        ("Id", SegmentProblem::LeadingUpperCase),
        ("1id", SegmentProblem::LeadingDigit),
        ("foo-bar", SegmentProblem::InvalidCharacter),
    ];
    for (bad, problem) in cases {
        assert_eq!(check_camel(bad), Err(problem), "{bad}");
    }
}

#[test]
fn conversion_round_trips_both_ways() {
    let pairs = [
        ("followers_count", "followersCount"),
        ("x509_cert", "x509Cert"),
        ("foo_b_a_r", "fooBAR"),
        ("id", "id"),
    ];
    for (snake, camel) in pairs {
        let mut out = String::new();
        snake_to_camel(snake, &mut out);
        assert_eq!(out, camel);
        out.clear();
        camel_to_snake(camel, &mut out);
        assert_eq!(out, snake);
        assert_eq!(check_snake(snake), Ok(()));
        assert_eq!(check_camel(camel), Ok(()));
    }
}

#[test]
fn prefix_cuts_at_a_character_boundary() {
    assert_eq!(prefix("abc", 10), "abc");
    assert_eq!(prefix("abcdef", 3), "abc");
    assert_eq!(prefix("aé", 2), "a");
}
