//! Who is calling: the verified identity behind a request.
//!
//! API Gateway's JWT authorizer verifies the bearer token and hands the
//! function its claims in the request context, every value flattened to a
//! string — an array claim such as `["admin","dem"]` arrives as
//! `"[admin dem]"`. The local runner verifies the JWT itself and injects
//! the same context, so both paths meet here. The account and the roles
//! come from these claims only, never from the request body.
//!
//! A role is granted only by its exact name: the flattening joins items
//! with a space and quotes nothing, so `["admin "]` arrives as `[admin ]`
//! and `["admin x"]` as `[admin x]`; read leniently (trimmed, split on any
//! whitespace, unknown items skipped), such near misses would grant
//! `admin`.
//!
//! Scopes (`adesync:scopes`) are read as strictly, but fail the other way:
//! a missing claim sees every token of the account, so a claim that is
//! present but unreadable must not fall back to that. It limits the caller
//! to no tag at all (it sees no token) rather than to none of the limits.

use std::collections::{BTreeSet, HashMap};

use adesync_core::ids::AccountId;
use adesync_core::scope::{self, MAX_SCOPE_TAGS, Scope};
use axum::extract::FromRequestParts;
use http::request::Parts;
use lambda_http::request::RequestContext;

use crate::ApiError;

/// Claim naming the caller's account.
pub const ACCOUNT_CLAIM: &str = "adesync:account";
/// Claim listing the caller's roles.
pub const ROLES_CLAIM: &str = "adesync:roles";
/// Claim listing the scope tags the caller is limited to (absent: none).
pub const SCOPES_CLAIM: &str = "adesync:scopes";

/// A caller's role (`docs/openapi.yaml`): writes need `admin` or `dem`, reads any role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Administrator.
    Admin,
    /// Device Enrollment Manager.
    Dem,
    /// Read-only.
    Reader,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "dem" => Some(Role::Dem),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }
}

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The JWT subject (the user).
    pub user: String,
    pub account: AccountId,
    pub roles: Vec<Role>,
    /// Which tokens of the account the caller sees (`docs/product.md` "Scope tags").
    pub scope: Scope,
}

impl Caller {
    /// Builds the caller from authorizer claims. A roles claim that is not
    /// exactly a list of known roles grants none (see [`parse_roles`]); a
    /// caller with no role can read nothing.
    pub fn from_claims(claims: &HashMap<String, String>) -> Result<Self, ApiError> {
        let account = claims
            .get(ACCOUNT_CLAIM)
            .and_then(|a| AccountId::parse(a).ok())
            .ok_or_else(|| {
                ApiError::unauthorized("The access token does not name a valid account (claim adesync:account); sign in again or ask your administrator for access.")
            })?;
        let user = claims
            .get("sub")
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "The access token has no subject (claim sub); sign in again.",
                )
            })?;
        let roles = claims
            .get(ROLES_CLAIM)
            .map(|r| parse_roles(r))
            .unwrap_or_default();
        let scope = claims
            .get(SCOPES_CLAIM)
            .map_or(Scope::All, |claim| parse_scopes(claim));
        Ok(Self {
            user,
            account,
            roles,
            scope,
        })
    }

    /// Changing a token's scope tags decides who sees it: administrators only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.roles.contains(&Role::Admin) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            "Changing a token's scope tags needs the Administrator (admin) role; ask an administrator to change them.",
        ))
    }

    /// Any role may read.
    pub fn require_read(&self) -> Result<(), ApiError> {
        if self.roles.is_empty() {
            return Err(ApiError::forbidden(
                "Your access token carries no adesync role (the claim adesync:roles must list only admin, dem or reader, spelled exactly); ask an administrator for the reader, dem or admin role.",
            ));
        }
        Ok(())
    }

    /// Writes need an Administrator or a Device Enrollment Manager.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self
            .roles
            .iter()
            .any(|r| matches!(r, Role::Admin | Role::Dem))
        {
            return Ok(());
        }
        Err(ApiError::forbidden(
            "This change needs the Administrator (admin) or Device Enrollment Manager (dem) role; ask an administrator to grant it.",
        ))
    }
}

/// Reads a roles claim in the shapes it reaches us in: a JSON array
/// (`["admin","dem"]`), API Gateway's flattened array (`[admin dem]`, items
/// separated by exactly one space), or one role (`admin`, as identity
/// providers that can only issue string claims write it).
///
/// Every item must be a role's exact name. A claim with any other item —
/// `Admin`, `administrator`, `admin `, an empty item — grants no role at
/// all rather than the items that do match: in the flattened form an item
/// with a space in it cannot be told from two items, so partial reading
/// would turn `["admin x"]` into `admin`. The claim is adesync's own, so
/// nothing else belongs in it.
pub fn parse_roles(claim: &str) -> Vec<Role> {
    let items: Vec<String> = if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        list
    } else if let Some(flattened) = claim.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
        flattened.split(' ').map(str::to_owned).collect()
    } else {
        vec![claim.to_owned()]
    };
    items
        .iter()
        .map(|item| Role::parse(item))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// The items of an array claim in the shapes it reaches us in: a JSON array,
/// API Gateway's flattened array (`[a b]`, one space between items), or
/// one string. None when a JSON array holds anything but strings.
fn claim_items(claim: &str) -> Option<Vec<String>> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        return Some(list);
    }
    if claim.starts_with('[') && serde_json::from_str::<serde_json::Value>(claim).is_ok() {
        // A JSON array (or `[]`-looking JSON) of something else: `[1]`.
        return None;
    }
    if let Some(flattened) = claim.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
        return Some(flattened.split(' ').map(str::to_owned).collect());
    }
    Some(vec![claim.to_owned()])
}

/// Reads a scopes claim: the same shapes as [`parse_roles`], every item a
/// well-formed scope tag (`adesync_core::scope::check_tag`), at most
/// [`MAX_SCOPE_TAGS`]. A claim that is present but not exactly that —
/// `["paris "]`, `[paris  lyon]`, `[1]`, `[]` — limits the caller to no tag
/// (it sees no token): falling back to "no claim" would show it all of the
/// account's tokens. Tags cannot contain spaces, so the flattened form is
/// never ambiguous.
pub fn parse_scopes(claim: &str) -> Scope {
    let nothing = Scope::Tags(BTreeSet::new());
    let Some(items) = claim_items(claim) else {
        return nothing;
    };
    if items.len() > MAX_SCOPE_TAGS
        || items
            .iter()
            .any(|tag| tag.is_empty() || scope::check_tag(tag).is_err())
    {
        return nothing;
    }
    Scope::Tags(items.into_iter().collect())
}

/// The JWT claims of a request's API Gateway (HTTP API) context, if any.
pub fn claims_of(extensions: &http::Extensions) -> Option<&HashMap<String, String>> {
    match extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| &jwt.claims),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let claims = claims_of(&parts.extensions).ok_or_else(|| {
            ApiError::unauthorized(
                "This request carries no verified identity; send `Authorization: Bearer <JWT>`.",
            )
        })?;
        Caller::from_claims(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_in_every_shape_they_arrive_in() {
        let both = vec![Role::Admin, Role::Dem];
        assert_eq!(parse_roles(r#"["admin","dem"]"#), both);
        assert_eq!(parse_roles(r#"[ "admin" , "dem" ]"#), both);
        assert_eq!(parse_roles("[admin dem]"), both);
        assert_eq!(parse_roles("[reader]"), vec![Role::Reader]);
        assert_eq!(parse_roles(r#"["reader"]"#), vec![Role::Reader]);
        assert_eq!(parse_roles("admin"), vec![Role::Admin]);
        assert_eq!(parse_roles("dem"), vec![Role::Dem]);
        assert_eq!(parse_roles("reader"), vec![Role::Reader]);
        assert_eq!(
            parse_roles("[reader admin dem]"),
            vec![Role::Reader, Role::Admin, Role::Dem]
        );
    }

    #[test]
    fn near_misses_grant_nothing_in_any_shape() {
        let near_misses = [
            "Admin",
            "ADMIN",
            "administrator",
            "admin ",
            " admin",
            "admin\t",
            "admin\n",
            "'admin'",
            "admins",
            "adm",
            "Dem",
            "Reader",
            "readers",
            "admin,dem",
            "root",
            "",
        ];
        for near_miss in near_misses {
            let json_array = serde_json::to_string(&[near_miss]).unwrap();
            // How API Gateway flattens `[near_miss]`, and next to a real role.
            let flattened = format!("[{near_miss}]");
            let flattened_with_real = format!("[{near_miss} admin]");
            let json_with_real = serde_json::to_string(&[near_miss, "admin"]).unwrap();
            for claim in [
                near_miss.to_owned(),
                json_array,
                flattened,
                flattened_with_real,
                json_with_real,
            ] {
                assert_eq!(parse_roles(&claim), vec![], "{claim:?} grants nothing");
            }
        }
        // Where API Gateway's flattening makes a near miss a real list, only
        // the unflattened shapes can refuse it: `["admin dem"]` arrives as
        // `[admin dem]`, and `["\"admin\""]` as `["admin"]`, which is also how
        // a JSON array in a string claim arrives.
        for claim in [
            "admin dem",
            r#"["admin dem"]"#,
            r#""admin""#,
            r#"["\"admin\""]"#,
            r#"["admin" admin]"#,
        ] {
            assert_eq!(parse_roles(claim), vec![], "{claim:?} grants nothing");
        }
        // Shapes that are almost a list.
        for claim in [
            "[admin  dem]",
            "[ admin]",
            "[admin ]",
            "[admin",
            "admin]",
            "[[admin]]",
            "[admin,dem]",
            "[\"admin\" \"dem\"]",
            "[1]",
            "[]",
            "[\"admin\", 1]",
            "{\"admin\": true}",
        ] {
            assert_eq!(parse_roles(claim), vec![], "{claim:?} grants nothing");
        }
    }

    #[test]
    fn scopes_are_read_in_every_shape_they_arrive_in() {
        let both = Scope::tags(["lyon", "paris"]);
        assert_eq!(parse_scopes(r#"["paris","lyon"]"#), both);
        assert_eq!(parse_scopes(r#"[ "paris" , "lyon" ]"#), both);
        assert_eq!(parse_scopes("[paris lyon]"), both);
        assert_eq!(parse_scopes("[paris]"), Scope::tags(["paris"]));
        assert_eq!(parse_scopes("paris"), Scope::tags(["paris"]));
        assert_eq!(
            parse_scopes("[eu:fr.paris site_2-b]"),
            Scope::tags(["eu:fr.paris", "site_2-b"])
        );
    }

    #[test]
    fn a_scopes_claim_that_does_not_read_sees_nothing() {
        let nothing = Scope::tags(Vec::<String>::new());
        for claim in [
            "",
            "[]",
            "[ ]",
            "[paris ]",
            "[ paris]",
            "[paris  lyon]",
            "paris lyon",
            "paris ",
            " paris",
            "[paris,lyon]",
            "paris,lyon",
            r#"["paris "]"#,
            r#"["paris lyon"]"#,
            r#"["paris", 1]"#,
            "[1]",
            r#"["paris" lyon]"#,
            r#""paris""#,
            r#"{"paris": true}"#,
            "[[paris]]",
            "[paris",
            "paris]",
            "Paris/Lyon",
            "é",
        ] {
            assert_eq!(parse_scopes(claim), nothing, "{claim:?} sees nothing");
        }
        let long = "a".repeat(65);
        assert_eq!(parse_scopes(&long), nothing);
        let many: Vec<String> = (0..=MAX_SCOPE_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            parse_scopes(&serde_json::to_string(&many).unwrap()),
            nothing
        );
        assert_eq!(parse_scopes(&format!("[{}]", many.join(" "))), nothing);
    }

    #[test]
    fn without_a_scopes_claim_the_caller_sees_the_whole_account() {
        let base = [
            ("sub", "u1"),
            (ACCOUNT_CLAIM, "acme"),
            (ROLES_CLAIM, "[admin]"),
        ];
        let caller = Caller::from_claims(&claims(&base)).unwrap();
        assert_eq!(caller.scope, Scope::All);
        let mut scoped = base.to_vec();
        scoped.push((SCOPES_CLAIM, "[paris]"));
        let caller = Caller::from_claims(&claims(&scoped)).unwrap();
        assert_eq!(caller.scope, Scope::tags(["paris"]));
        let mut broken = base.to_vec();
        broken.push((SCOPES_CLAIM, "[paris ]"));
        let caller = Caller::from_claims(&claims(&broken)).unwrap();
        assert_eq!(caller.scope, Scope::tags(Vec::<String>::new()));
    }

    #[test]
    fn only_an_admin_may_change_scope_tags() {
        for (roles, allowed) in [("[admin]", true), ("[dem]", false), ("[reader]", false)] {
            let caller = Caller::from_claims(&claims(&[
                ("sub", "u1"),
                (ACCOUNT_CLAIM, "acme"),
                (ROLES_CLAIM, roles),
            ]))
            .unwrap();
            assert_eq!(caller.require_admin().is_ok(), allowed, "{roles}");
        }
    }

    fn claims(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_reader_may_read_but_not_write() {
        let caller = Caller::from_claims(&claims(&[
            ("sub", "u1"),
            (ACCOUNT_CLAIM, "acme"),
            (ROLES_CLAIM, "[reader]"),
        ]))
        .unwrap();
        assert!(caller.require_read().is_ok());
        assert_eq!(caller.require_write().unwrap_err().status().as_u16(), 403);
    }

    #[test]
    fn a_token_without_account_is_unauthorized() {
        let err = Caller::from_claims(&claims(&[("sub", "u1")])).unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
        let err =
            Caller::from_claims(&claims(&[("sub", "u1"), (ACCOUNT_CLAIM, "a/b")])).unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
    }
}
