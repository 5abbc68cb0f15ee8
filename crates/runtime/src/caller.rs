//! Who is calling: the verified identity behind a request.
//!
//! API Gateway's JWT authorizer verifies the bearer token and hands the
//! function its claims in the request context, every value flattened to a
//! string — an array claim such as `["admin","dem"]` arrives as
//! `"[admin dem]"`. The local runner verifies the JWT itself and injects
//! the same context, so both paths meet here. The account and the roles
//! come from these claims only, never from the request body.

use std::collections::HashMap;

use adesync_core::ids::AccountId;
use axum::extract::FromRequestParts;
use http::request::Parts;
use lambda_http::request::RequestContext;

use crate::ApiError;

/// Claim naming the caller's account.
pub const ACCOUNT_CLAIM: &str = "adesync:account";
/// Claim listing the caller's roles.
pub const ROLES_CLAIM: &str = "adesync:roles";

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
}

impl Caller {
    /// Builds the caller from authorizer claims. Unknown roles are ignored;
    /// a caller with no known role can read nothing.
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
        Ok(Self {
            user,
            account,
            roles,
        })
    }

    /// Any role may read.
    pub fn require_read(&self) -> Result<(), ApiError> {
        if self.roles.is_empty() {
            return Err(ApiError::forbidden(
                "Your access token carries no adesync role; ask an administrator for the reader, dem or admin role.",
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

/// Reads a roles claim in any of the shapes it reaches us in: a JSON array
/// (`["admin","dem"]`), API Gateway's flattened array (`[admin dem]`), or a
/// space- or comma-separated list.
pub fn parse_roles(claim: &str) -> Vec<Role> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        return list.iter().filter_map(|r| Role::parse(r)).collect();
    }
    claim
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|r| r.trim().trim_matches('"'))
        .filter_map(Role::parse)
        .collect()
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
        assert_eq!(parse_roles("[admin dem]"), both);
        assert_eq!(parse_roles("admin,dem"), both);
        assert_eq!(parse_roles("admin dem superuser"), both);
        assert_eq!(parse_roles("[reader]"), vec![Role::Reader]);
        assert!(parse_roles("").is_empty());
        assert!(parse_roles("[root]").is_empty());
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
