//! The id rule, written once for the whole topology: ids are opaque to callers, 1 to
//! [`MAX_ID_LEN`] ASCII letters, digits, `_` and `-`. The foundation services check it on every
//! request, and the gateways check it at their edge so that a bad id never costs an upstream
//! call; each maps the problem into its own error type.

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 64;

/// What is wrong with an id; the message completes a sentence that starts with the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    #[error("is required")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("must be made of ASCII letters, digits, '_' and '-' only")]
    BadCharacter,
}

/// Checks one id.
pub fn check(id: &str) -> Result<(), IdProblem> {
    if id.is_empty() {
        return Err(IdProblem::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdProblem::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdProblem::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_seed_and_new_ids_and_names_each_problem() {
        for id in ["trk_00042", "usr_0007", "trk_0190a1b2c3d4", "A-b_9"] {
            assert_eq!(check(id), Ok(()), "{id}");
        }
        assert_eq!(check(""), Err(IdProblem::Empty));
        assert_eq!(check(&"x".repeat(64)), Ok(()));
        assert_eq!(check(&"x".repeat(65)), Err(IdProblem::TooLong));
        for id in ["a b", "trk/1", "é", "x\"y"] {
            assert_eq!(check(id), Err(IdProblem::BadCharacter), "{id}");
        }
    }
}
