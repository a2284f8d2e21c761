//! Keyset pagination for lists ordered newest first. A page token is the position of the last
//! item of the previous page, `(time, id)`, hex-encoded so that callers treat it as opaque.

use crate::FoundationError;

pub const DEFAULT_PAGE_SIZE: i32 = 20;
pub const MAX_PAGE_SIZE: i32 = 100;

/// The page size a request asks for: 0 means the default; negative or above the maximum is
/// an error.
pub fn page_size(requested: i32) -> Result<i64, FoundationError> {
    match requested {
        0 => Ok(i64::from(DEFAULT_PAGE_SIZE)),
        1..=MAX_PAGE_SIZE => Ok(i64::from(requested)),
        _ => Err(FoundationError::invalid(
            "page_size",
            format!("must be between 0 and {MAX_PAGE_SIZE}"),
        )),
    }
}

/// Where a page starts: after the item at `(time_us, id)` in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time_us: i64,
    pub id: String,
}

impl Cursor {
    /// The first page: before any item.
    pub fn start() -> Self {
        Self {
            time_us: i64::MAX,
            id: String::new(),
        }
    }

    pub fn encode(&self) -> String {
        hex::encode(format!("{}|{}", self.time_us, self.id))
    }

    /// Decodes a page token; the empty token is the first page.
    pub fn decode(token: &str) -> Result<Self, FoundationError> {
        if token.is_empty() {
            return Ok(Self::start());
        }
        let bad = || FoundationError::invalid("page_token", "is not a token this service issued");
        let bytes = hex::decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (time, id) = text.split_once('|').ok_or_else(bad)?;
        let time_us = time.parse().map_err(|_| bad())?;
        crate::ids::check("page_token", id).map_err(|_| bad())?;
        Ok(Self {
            time_us,
            id: id.to_owned(),
        })
    }
}

/// Splits what a query fetched with `LIMIT page_size + 1` into the page and, when there is
/// more, the cursor of the next page.
pub fn split<T>(
    mut items: Vec<T>,
    page_size: i64,
    cursor_of: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    let size = usize::try_from(page_size).unwrap_or(0);
    if items.len() <= size {
        return (items, None);
    }
    items.truncate(size);
    let next = items.last().map(cursor_of);
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let cursor = Cursor {
            time_us: 1_700_000_000_000_000,
            id: "trk_00042".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert_eq!(Cursor::decode("").unwrap(), Cursor::start());
        for bad in ["zz", "00", &hex::encode("x|trk"), &hex::encode("1|a b")] {
            let error = Cursor::decode(bad).unwrap_err().to_string();
            assert!(error.starts_with("page_token"), "{error}");
        }
    }

    #[test]
    fn a_page_with_one_item_too_many_has_a_next_cursor() {
        let cursor = |n: &i64| Cursor {
            time_us: *n,
            id: format!("id{n}"),
        };
        let (page, next) = split(vec![5, 4, 3], 2, cursor);
        assert_eq!(page, [5, 4]);
        assert_eq!(next, Some(cursor(&4)));
        let (page, next) = split(vec![5, 4], 2, cursor);
        assert_eq!(page, [5, 4]);
        assert_eq!(next, None);
    }

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(page_size(0).unwrap(), 20);
        assert_eq!(page_size(100).unwrap(), 100);
        assert!(page_size(101).is_err());
        assert!(page_size(-1).is_err());
    }
}
