//! Development access tokens for the local runner.
//!
//! On AWS, API Gateway's JWT authorizer verifies tokens of the
//! organisation's identity provider. The local runner (`adesync-local
//! serve`) stands in for it and accepts HS256 tokens signed with the run's
//! secret (`ADESYNC_DEV_JWT_SECRET`, or a random one it prints), issued by
//! [`LOCAL_ISSUER`] for [`LOCAL_AUDIENCE`]; this module mints them, for
//! `adesync dev-token`, for `adesync-local` and for the tests — one
//! implementation, so the claims the runner reads and the claims minted
//! never drift. There is no default secret: a well-known one would let
//! anyone who reaches a runner act as any account.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The issuer (`iss`) of development tokens; the local runner accepts no
/// other, as API Gateway's authorizer accepts only the template's
/// `JwtIssuer`.
pub const LOCAL_ISSUER: &str = "adesync-local";

/// The audience (`aud`) of development tokens; the local runner accepts no
/// other, as API Gateway's authorizer accepts only the template's
/// `JwtAudience`.
pub const LOCAL_AUDIENCE: &str = "adesync";

/// The claims the API reads (`docs/openapi.yaml`, the `bearer` security scheme).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevClaims {
    /// The user.
    pub sub: String,
    /// The account every request of this token acts for.
    #[serde(rename = "adesync:account")]
    pub account: String,
    /// `admin`, `dem` and/or `reader`.
    #[serde(rename = "adesync:roles")]
    pub roles: Vec<String>,
    /// The scope tags the caller is limited to; absent: the whole account.
    #[serde(
        rename = "adesync:scopes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scopes: Option<Vec<String>>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Who issued it: [`LOCAL_ISSUER`].
    pub iss: String,
    /// Whom it is for: [`LOCAL_AUDIENCE`].
    pub aud: String,
}

/// A token could not be signed (only an unusable key does that).
#[derive(Debug, thiserror::Error)]
#[error("the development token could not be signed: {0}")]
pub struct DevTokenError(#[from] jsonwebtoken::errors::Error);

/// Mints an HS256 JWT for `account` with `roles`, valid for `ttl` from `now`.
pub fn mint(
    secret: &str,
    user: &str,
    account: &str,
    roles: &[&str],
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<String, DevTokenError> {
    mint_scoped(secret, user, account, roles, None, ttl, now)
}

/// [`mint`] with an `adesync:scopes` claim when `scopes` is given: the
/// caller then sees only tokens tagged with one of them.
pub fn mint_scoped(
    secret: &str,
    user: &str,
    account: &str,
    roles: &[&str],
    scopes: Option<&[&str]>,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<String, DevTokenError> {
    let issued = now.timestamp();
    let claims = DevClaims {
        sub: user.to_owned(),
        account: account.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scopes: scopes.map(|tags| tags.iter().map(|t| (*t).to_owned()).collect()),
        iat: issued,
        iss: LOCAL_ISSUER.to_owned(),
        aud: LOCAL_AUDIENCE.to_owned(),
        exp: issued.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_with_the_secret_and_carry_the_claims() {
        let now = Utc::now();
        let jwt = mint(
            "s3cret",
            "ann",
            "acme",
            &["admin", "dem"],
            Duration::from_secs(60),
            now,
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[LOCAL_ISSUER]);
        validation.set_audience(&[LOCAL_AUDIENCE]);
        let decoded = jsonwebtoken::decode::<DevClaims>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(decoded.sub, "ann");
        assert_eq!(decoded.account, "acme");
        assert_eq!(decoded.roles, ["admin", "dem"]);
        assert_eq!(decoded.scopes, None, "no scopes claim unless asked");
        assert_eq!(decoded.exp - decoded.iat, 60);
        let wrong = jsonwebtoken::decode::<DevClaims>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_secret(b"other"),
            &validation,
        );
        assert!(wrong.is_err());
        let scoped = mint_scoped(
            "s3cret",
            "ann",
            "acme",
            &["reader"],
            Some(&["paris", "lyon"]),
            Duration::from_secs(60),
            now,
        )
        .unwrap();
        let decoded = jsonwebtoken::decode::<DevClaims>(
            &scoped,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(decoded.scopes, Some(vec!["paris".into(), "lyon".into()]));
    }
}
