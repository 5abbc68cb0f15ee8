//! The token's one Apple session, shared by every function that talks to
//! Apple for it: sealed on the token item, renewed by one caller at a time
//! (the claim is `adesync_store::sessions`). See `adesync_apple::shared` for
//! why: Apple may end a server's older sessions when it issues a new one.

use std::sync::Arc;

use adesync_apple::{KeeperFuture, Renewal, SessionKeeper};
use adesync_core::clock::SharedClock;
use adesync_core::ids::{AccountId, TokenId};
use adesync_secrets::Vault;
use adesync_store::Tokens;
use adesync_store::sessions::SessionRenewal;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::tokens::{CredentialsError, apple_session_context, open_session};

/// How long a renewal's claim lasts (clock time): Apple's `/session` answer
/// with the client's retries fits well within it. A caller that dies while
/// renewing holds the others back this long at most.
pub const RENEWAL_CLAIM: chrono::Duration = chrono::Duration::seconds(30);

/// Names a session without revealing it: the first 16 bytes of its SHA-256,
/// in hex. Session tokens are long random strings, so the digest cannot be
/// turned back into one.
pub fn fingerprint(session: &SecretString) -> String {
    hex::encode(&Sha256::digest(session.expose_secret().as_bytes())[..16])
}

/// One process's end of a token's shared session.
pub struct SharedSession {
    tokens: Tokens,
    vault: Vault,
    clock: SharedClock,
    account: AccountId,
    token: TokenId,
    /// This process's name in a renewal claim.
    me: String,
}

impl SharedSession {
    pub fn new(
        tokens: &Tokens,
        vault: &Vault,
        clock: SharedClock,
        account: &AccountId,
        token: &TokenId,
    ) -> Arc<Self> {
        Arc::new(Self {
            tokens: tokens.clone(),
            vault: vault.clone(),
            clock,
            account: account.clone(),
            token: token.clone(),
            me: crate::holder_id(),
        })
    }

    /// Seals `session` and makes it the token's, unless another caller is
    /// renewing right now (its session replaces ours anyway). False when
    /// skipped or the token no longer exists.
    pub async fn keep(&self, session: &SecretString) -> Result<bool, CredentialsError> {
        let sealed = self
            .vault
            .seal(
                session.expose_secret().as_bytes(),
                &apple_session_context(&self.account, &self.token),
            )
            .await?;
        Ok(self
            .tokens
            .share_session(
                &self.account,
                &self.token,
                &sealed.to_bytes(),
                &fingerprint(session),
                &self.me,
                self.clock.now(),
            )
            .await?)
    }
}

impl SessionKeeper for SharedSession {
    fn renew<'a>(&'a self, stale: Option<&'a SecretString>) -> KeeperFuture<'a, Renewal> {
        Box::pin(async move {
            let now = self.clock.now();
            let stale = stale.map(fingerprint);
            let claim = self
                .tokens
                .claim_session_renewal(
                    &self.account,
                    &self.token,
                    stale.as_deref(),
                    &self.me,
                    now + RENEWAL_CLAIM,
                    now,
                )
                .await;
            match claim {
                Ok(SessionRenewal::Granted | SessionRenewal::TokenGone) => Renewal::Yours,
                Ok(SessionRenewal::Busy { .. }) => Renewal::Wait,
                Ok(SessionRenewal::Replaced { sealed }) => {
                    match open_session(&self.vault, &self.account, &self.token, &sealed).await {
                        Some(session) => Renewal::Theirs(session),
                        None => Renewal::Yours,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not claim the renewal of Apple's session; renewing alone");
                    Renewal::Yours
                }
            }
        })
    }

    fn share<'a>(&'a self, fresh: &'a SecretString) -> KeeperFuture<'a, ()> {
        Box::pin(async move {
            match self.keep(fresh).await {
                Ok(true) => {
                    tracing::debug!("shared Apple's session with the token's other callers")
                }
                Ok(false) => {
                    tracing::debug!("another caller is renewing Apple's session; ours is not kept")
                }
                // Only an optimisation: the next caller renews again.
                Err(error) => {
                    tracing::warn!(%error, "could not keep Apple's session for the next caller")
                }
            }
        })
    }
}
