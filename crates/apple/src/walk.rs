//! Apple's answers to fetch and sync, as the outcomes `adesync_core::cursor` walks on.

use adesync_core::cursor::{Outcome, Phase, Walk};

use crate::client::{AppleSession, CallLimits};
use crate::error::AppleError;
use crate::model::DevicePage;
use crate::route::Route;

/// Reads the result of a fetch or sync call as the walk's [`Outcome`]. Cursor refusals
/// become their own outcomes; every other error is [`Outcome::Failed`] (the caller keeps
/// the error to record it).
pub fn outcome(result: &Result<DevicePage, AppleError>) -> Outcome<'_> {
    match result {
        Ok(page) => Outcome::Page {
            cursor: &page.cursor,
            more_to_follow: page.more_to_follow,
        },
        Err(AppleError::CursorExhausted) => Outcome::ExhaustedCursor,
        Err(AppleError::CursorExpired) => Outcome::ExpiredCursor,
        Err(AppleError::CursorInvalid) => Outcome::InvalidCursor,
        Err(AppleError::CursorRequired) => Outcome::CursorRequired,
        Err(_) => Outcome::Failed,
    }
}

impl AppleSession {
    /// Requests the page `walk` names: fetch or sync from its cursor. `limit` `None` asks
    /// for [`AppleSession::page_limit_for`]; `limits` bound the call's time (a walker
    /// sizes its pages to the pace and answers a timeout with a smaller page, so it
    /// passes `retry_timeouts: false`).
    pub async fn request_page(
        &self,
        walk: &Walk,
        limit: Option<u32>,
        limits: CallLimits,
    ) -> Result<DevicePage, AppleError> {
        let position = walk.request();
        match position.phase {
            Phase::Fetch => {
                self.page_within(
                    Route::FetchDevices,
                    position.cursor.as_deref(),
                    limit,
                    limits,
                )
                .await
            }
            // A sync position without a cursor gets Apple's CURSOR_REQUIRED, which the walk
            // answers by restarting from scratch (an empty cursor is not sent).
            Phase::Sync => {
                let cursor = position.cursor.as_deref().unwrap_or_default();
                self.page_within(Route::SyncDevices, Some(cursor), limit, limits)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_refusals_become_their_outcomes() {
        let cases = [
            (AppleError::CursorExhausted, Outcome::ExhaustedCursor),
            (AppleError::CursorExpired, Outcome::ExpiredCursor),
            (AppleError::CursorInvalid, Outcome::InvalidCursor),
            (AppleError::CursorRequired, Outcome::CursorRequired),
            (AppleError::Timeout, Outcome::Failed),
            (AppleError::TokenInvalid, Outcome::Failed),
        ];
        for (error, expected) in cases {
            let result = Err(error);
            assert_eq!(outcome(&result), expected);
        }
        let page: Result<DevicePage, AppleError> = Ok(DevicePage {
            cursor: "c1".to_owned(),
            fetched_until: None,
            more_to_follow: true,
            devices: Vec::new(),
            extra: Default::default(),
        });
        assert_eq!(
            outcome(&page),
            Outcome::Page {
                cursor: "c1",
                more_to_follow: true
            }
        );
    }
}
