//! The grammar of path segments in the path form and in the JSON form, and the conversion
//! between the two.
//!
//! Path form segments are lower snake_case: `[a-z]` then `[a-z0-9_]`, where every underscore is
//! followed by a lower case letter. JSON form segments are lowerCamelCase: `[a-z]` then
//! `[a-zA-Z0-9]`. Under these two grammars the conversion is a bijection, which is what makes
//! every valid mask round trip through its JSON form.

use crate::error::SegmentProblem;

/// Checks one non-empty path form segment.
pub(crate) fn check_snake(segment: &str) -> Result<(), SegmentProblem> {
    let bytes = segment.as_bytes();
    match bytes.first() {
        Some(b'_') => return Err(SegmentProblem::LeadingUnderscore),
        Some(b'0'..=b'9') => return Err(SegmentProblem::LeadingDigit),
        Some(b'A'..=b'Z') => return Err(SegmentProblem::UpperCase),
        Some(b'a'..=b'z') | None => {}
        Some(_) => return Err(SegmentProblem::InvalidCharacter),
    }
    let mut previous = 0u8;
    for &byte in bytes {
        match byte {
            b'a'..=b'z' => {}
            b'0'..=b'9' if previous == b'_' => return Err(SegmentProblem::DigitAfterUnderscore),
            b'0'..=b'9' => {}
            b'_' if previous == b'_' => return Err(SegmentProblem::DoubleUnderscore),
            b'_' => {}
            b'A'..=b'Z' => return Err(SegmentProblem::UpperCase),
            _ => return Err(SegmentProblem::InvalidCharacter),
        }
        previous = byte;
    }
    if previous == b'_' {
        return Err(SegmentProblem::TrailingUnderscore);
    }
    Ok(())
}

/// Checks one non-empty JSON form segment.
pub(crate) fn check_camel(segment: &str) -> Result<(), SegmentProblem> {
    let bytes = segment.as_bytes();
    match bytes.first() {
        Some(b'_') => return Err(SegmentProblem::UnderscoreInJson),
        Some(b'0'..=b'9') => return Err(SegmentProblem::LeadingDigit),
        Some(b'A'..=b'Z') => return Err(SegmentProblem::LeadingUpperCase),
        Some(b'a'..=b'z') | None => {}
        Some(_) => return Err(SegmentProblem::InvalidCharacter),
    }
    for &byte in bytes {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {}
            b'_' => return Err(SegmentProblem::UnderscoreInJson),
            _ => return Err(SegmentProblem::InvalidCharacter),
        }
    }
    Ok(())
}

/// Appends the lowerCamelCase form of a valid snake_case segment to `out`.
pub(crate) fn snake_to_camel(segment: &str, out: &mut String) {
    let mut upper_next = false;
    for ch in segment.chars() {
        if ch == '_' {
            upper_next = true;
        } else if upper_next {
            out.push(ch.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(ch);
        }
    }
}

/// Appends the snake_case form of a valid lowerCamelCase segment to `out`.
pub(crate) fn camel_to_snake(segment: &str, out: &mut String) {
    for ch in segment.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
}

/// The first bytes of `text`, cut at a character boundary, for error messages about over-long
/// input.
pub(crate) fn prefix(text: &str, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests;
