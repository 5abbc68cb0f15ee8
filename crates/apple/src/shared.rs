//! One Apple session per server token, shared by every process that talks to
//! Apple for it.
//!
//! Apple may end a server's older sessions when it issues a new one. Two
//! processes that each renew a stale session would then take turns killing
//! each other's session, and each would see a 401 on a session it had just
//! received. A [`SessionKeeper`] lets one of them ask Apple while the others
//! wait for the session it shares. Where the keeper keeps the session (a
//! DynamoDB item, sealed) is the caller's business.

use std::future::Future;
use std::pin::Pin;

use secrecy::SecretString;

/// A keeper's answer, boxed so that the keeper can be a trait object.
pub type KeeperFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the keeper answers a caller that needs a new session.
pub enum Renewal {
    /// Ask Apple for one, then [`SessionKeeper::share`] it.
    Yours,
    /// Another process already replaced the stale session: use this one.
    Theirs(SecretString),
    /// Another process is asking Apple now: ask the keeper again shortly.
    Wait,
}

/// Where the processes of one token meet to renew its session.
pub trait SessionKeeper: Send + Sync {
    /// Asks to replace `stale` (None: the caller has no session at all).
    /// A keeper that cannot tell (its store is down) answers
    /// [`Renewal::Yours`]: a shared session is an optimisation, Apple calls
    /// must not wait on it.
    fn renew<'a>(&'a self, stale: Option<&'a SecretString>) -> KeeperFuture<'a, Renewal>;

    /// Makes `fresh` the token's session for every process, ending this
    /// caller's renewal. Failures are the keeper's to log.
    fn share<'a>(&'a self, fresh: &'a SecretString) -> KeeperFuture<'a, ()>;
}
