//! Scope tags: which of an account's tokens a caller sees
//! (`docs/product.md` "Scope tags").
//!
//! A token carries scope tags; a caller whose identity lists scopes
//! (`adesync:scopes`) sees and acts only on tokens with at least one of
//! them, and a caller without that claim sees every token of its account.
//! A token the caller may not see is answered exactly as another account's
//! token: not found.
//!
//! Tags are compared exactly (case included): they are identifiers an
//! identity provider issues, not words to be matched loosely, and a loose
//! match (`Paris` for `paris`) would widen what a scoped caller sees.

use std::collections::BTreeSet;

/// Most scope tags on one token, and in one caller's claim.
pub const MAX_SCOPE_TAGS: usize = 50;
/// Longest scope tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

/// Which tokens of its account a caller sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// No `adesync:scopes` claim: every token of the account.
    #[default]
    All,
    /// Tokens with at least one of these tags; none when it is empty (a
    /// claim that lists nothing, or that could not be read, grants nothing).
    Tags(BTreeSet<String>),
}

impl Scope {
    /// A caller limited to `tags`.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(tags: I) -> Self {
        Scope::Tags(tags.into_iter().map(Into::into).collect())
    }

    /// The caller's tags, None when it sees everything.
    pub fn limited_to(&self) -> Option<&BTreeSet<String>> {
        match self {
            Scope::All => None,
            Scope::Tags(tags) => Some(tags),
        }
    }
}

/// Whether a caller with `scope` sees a token tagged `token_tags`.
pub fn visible(token_tags: &[String], scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Tags(mine) => token_tags.iter().any(|tag| mine.contains(tag)),
    }
}

/// Why a list of scope tags is refused (each names the problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidScopeTags {
    #[error("scope_tags may list at most {MAX_SCOPE_TAGS} tags ({0} given)")]
    TooMany(usize),
    #[error("a scope tag must not be empty (scope_tags item {0})")]
    Empty(usize),
    #[error("scope tag {0:?} is longer than {MAX_TAG_CHARS} characters")]
    TooLong(String),
    #[error(
        "scope tag {0:?} may contain only letters A-Z and a-z, digits and the characters _ . : -"
    )]
    BadCharacter(String),
    #[error("scope tag {0:?} is listed twice in scope_tags")]
    Duplicate(String),
}

/// Whether `tag` is a well-formed scope tag: 1 to 64 characters of
/// `A-Z a-z 0-9 _ . : -`. No spaces: API Gateway flattens an array claim
/// to `[a b]`, so a tag with a space could not be told from two tags.
pub fn check_tag(tag: &str) -> Result<(), InvalidScopeTags> {
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(InvalidScopeTags::TooLong(tag.to_owned()));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    {
        return Err(InvalidScopeTags::BadCharacter(tag.to_owned()));
    }
    Ok(())
}

/// A token's scope tags as given (`POST /v1/tokens`, renewal, `PATCH`):
/// at most [`MAX_SCOPE_TAGS`], each well-formed, none twice (a repeated
/// tag is a mistake in the request, not something to fix silently).
/// Answered sorted, as they are shown.
pub fn scope_tags(given: &[String]) -> Result<Vec<String>, InvalidScopeTags> {
    if given.len() > MAX_SCOPE_TAGS {
        return Err(InvalidScopeTags::TooMany(given.len()));
    }
    let mut seen = BTreeSet::new();
    for (index, tag) in given.iter().enumerate() {
        if tag.is_empty() {
            return Err(InvalidScopeTags::Empty(index));
        }
        check_tag(tag)?;
        if !seen.insert(tag.clone()) {
            return Err(InvalidScopeTags::Duplicate(tag.clone()));
        }
    }
    Ok(seen.into_iter().collect())
}

/// A scoped caller set tags that would hide the token from itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "scope_tags must include at least one of your scope tags ({}), or the token would be hidden from you",
    mine.iter().cloned().collect::<Vec<_>>().join(", ")
)]
pub struct OutsideScope {
    pub mine: BTreeSet<String>,
}

/// The tags a caller with `scope` may give a token (creating it, renewing
/// it or changing its tags): a scoped caller only tags that keep the token
/// visible to itself, so it can neither hide a token from itself nor hand
/// one over to scopes it does not have alone. A caller without scopes may
/// set any tags, none included.
pub fn may_set(tags: &[String], scope: &Scope) -> Result<(), OutsideScope> {
    match scope {
        Scope::Tags(mine) if !visible(tags, scope) => Err(OutsideScope { mine: mine.clone() }),
        _ => Ok(()),
    }
}

/// The tags of a new token: the ones given (checked by [`may_set`]), or,
/// when none are given, the scoped caller's own tags — as Intune tags what
/// a scoped administrator creates — so the creator keeps seeing it.
pub fn new_token_tags(
    given: Option<Vec<String>>,
    scope: &Scope,
) -> Result<Vec<String>, OutsideScope> {
    match (given, scope) {
        (Some(tags), _) => may_set(&tags, scope).map(|()| tags),
        (None, Scope::All) => Ok(Vec::new()),
        (None, Scope::Tags(mine)) => Ok(mine.iter().cloned().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(items: &[&str]) -> Vec<String> {
        items.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn a_caller_without_scopes_sees_every_token() {
        assert!(visible(&[], &Scope::All));
        assert!(visible(&tags(&["paris"]), &Scope::All));
    }

    #[test]
    fn a_scoped_caller_sees_only_tokens_with_one_of_its_tags() {
        let paris = Scope::tags(["paris", "lyon"]);
        assert!(visible(&tags(&["paris"]), &paris));
        assert!(visible(&tags(&["berlin", "lyon"]), &paris));
        assert!(!visible(&tags(&["berlin"]), &paris));
        assert!(
            !visible(&[], &paris),
            "an untagged token is not in any scope"
        );
        // Exact comparison: no case folding, no prefixes, no trimming.
        assert!(!visible(&tags(&["Paris"]), &paris));
        assert!(!visible(&tags(&["paris-north"]), &paris));
        assert!(!visible(&tags(&["par"]), &paris));
    }

    #[test]
    fn an_empty_scope_sees_nothing() {
        let nothing = Scope::tags(Vec::<String>::new());
        assert!(!visible(&[], &nothing));
        assert!(!visible(&tags(&["paris"]), &nothing));
    }

    #[test]
    fn tags_are_checked_and_sorted() {
        assert_eq!(
            scope_tags(&tags(&["b", "A-1", "x_y.z:w"])).unwrap(),
            tags(&["A-1", "b", "x_y.z:w"])
        );
        assert_eq!(scope_tags(&[]).unwrap(), Vec::<String>::new());
        let longest = "a".repeat(MAX_TAG_CHARS);
        assert!(scope_tags(std::slice::from_ref(&longest)).is_ok());
        let fifty: Vec<String> = (0..MAX_SCOPE_TAGS).map(|i| format!("t{i}")).collect();
        assert!(scope_tags(&fifty).is_ok());
    }

    #[test]
    fn bad_tags_are_refused_with_the_problem_named() {
        assert_eq!(
            scope_tags(&tags(&["ok", ""])),
            Err(InvalidScopeTags::Empty(1))
        );
        let long = "a".repeat(MAX_TAG_CHARS + 1);
        assert_eq!(
            scope_tags(std::slice::from_ref(&long)),
            Err(InvalidScopeTags::TooLong(long.clone()))
        );
        for bad in ["a b", " a", "a\t", "é", "a/b", "a,b", "[a]", "\"a\"", "a*"] {
            assert_eq!(
                scope_tags(&tags(&[bad])),
                Err(InvalidScopeTags::BadCharacter(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            scope_tags(&tags(&["a", "b", "a"])),
            Err(InvalidScopeTags::Duplicate("a".into()))
        );
        let many: Vec<String> = (0..=MAX_SCOPE_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            scope_tags(&many),
            Err(InvalidScopeTags::TooMany(MAX_SCOPE_TAGS + 1))
        );
        assert!(
            InvalidScopeTags::Duplicate("a".into())
                .to_string()
                .contains("\"a\" is listed twice")
        );
    }

    #[test]
    fn a_scoped_caller_may_only_set_tags_it_keeps_seeing() {
        let paris = Scope::tags(["paris"]);
        assert!(may_set(&tags(&["paris", "berlin"]), &paris).is_ok());
        let refused = may_set(&tags(&["berlin"]), &paris).unwrap_err();
        assert!(refused.to_string().contains("(paris)"), "{refused}");
        assert!(may_set(&[], &paris).is_err());
        assert!(may_set(&[], &Scope::All).is_ok());
        assert!(may_set(&tags(&["berlin"]), &Scope::All).is_ok());
    }

    #[test]
    fn a_new_token_takes_the_scoped_creators_tags_unless_given() {
        let mine = Scope::tags(["lyon", "paris"]);
        assert_eq!(
            new_token_tags(None, &mine).unwrap(),
            tags(&["lyon", "paris"])
        );
        assert_eq!(
            new_token_tags(Some(tags(&["paris"])), &mine).unwrap(),
            tags(&["paris"])
        );
        assert!(new_token_tags(Some(tags(&["berlin"])), &mine).is_err());
        assert!(new_token_tags(Some(vec![]), &mine).is_err());
        assert_eq!(
            new_token_tags(None, &Scope::All).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            new_token_tags(Some(tags(&["x"])), &Scope::All).unwrap(),
            tags(&["x"])
        );
    }
}
