//! The fetch → sync walk over Apple's device cursors, as a pure state machine.
//!
//! Apple serves a token's devices through two endpoints that share one opaque cursor:
//! *fetch* (`/server/devices`) pages through a complete snapshot of the devices assigned
//! to the MDM server, and *sync* (`/devices/sync`) pages through the changes since a
//! cursor (records carry `op_type` / `op_date`). A run is a walk: ask for a page, feed
//! Apple's answer to [`Walk::next`], do what the returned [`Step`] says, repeat.
//!
//! # Layout
//! - [`Phase`] and [`Position`]: where a walk stands, and what a token stores between runs.
//! - [`Walk`]: the state of one run; [`Walk::full`] and [`Walk::delta`] start one.
//! - [`Outcome`]: Apple's answer to the last request, reduced to what the walk needs.
//! - [`Step`]: what to do next (request again, restart as a full fetch, save and stop, fail).
//!
//! # Rules (Apple's contract and what other MDMs learned; see `docs/apple.md` §6)
//! - A page with `more_to_follow` asks again at once from the new cursor.
//! - A finished fetch switches to sync from that cursor for one sync round (as nanodep
//!   does), so changes made while the snapshot was paged are not lost.
//! - `EXHAUSTED_CURSOR` on fetch: the snapshot was already delivered; sync from that cursor.
//!   Not when this run paged the snapshot from its start: then it cuts the snapshot short
//!   with no proof that it was complete, so nothing may be released for not being seen.
//!   The run ends there, without releasing, and the next one fetches afresh.
//! - `EXPIRED_CURSOR` / `INVALID_CURSOR` (either phase) and `CURSOR_REQUIRED` (sync):
//!   forget the cursor and fetch everything again. The run becomes a full sync, and this
//!   happens at most once per run so an Apple that keeps refusing cannot loop us.
//! - The *echoed cursor* (Apple answers `more_to_follow: true` with the cursor it was
//!   sent; micromdm#1016, nanodep#73) stops the round. On sync the cursor is kept:
//!   dropping it would re-fetch every device on every run. On fetch (the one place it has
//!   been reported, cured by dropping the cursor) the cursor is dropped, so the next run
//!   fetches a fresh snapshot rather than sending the echoed cursor again every 12 hours.
//! - A page budget bounds a walk even if Apple keeps handing out fresh cursors forever.

use serde::{Deserialize, Serialize};

/// Most pages one run may request before the walk gives up.
///
/// Generous on purpose (10 million devices at 1,000 per page): it exists to turn an
/// endless stream of `more_to_follow` pages into a recorded failure, not to cap fleets.
pub const DEFAULT_PAGE_BUDGET: u32 = 10_000;

/// Which Apple endpoint a walk is paging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `/server/devices`: the complete list of devices assigned to the MDM server.
    Fetch,
    /// `/devices/sync`: changes since the cursor, each with `op_type` and `op_date`.
    Sync,
}

impl Phase {
    /// What the records of a page from this phase mean.
    pub fn records(self) -> Records {
        match self {
            Phase::Fetch => Records::Snapshot,
            Phase::Sync => Records::Changes,
        }
    }
}

/// The meaning of the device records on a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Records {
    /// Fetch records: part of a snapshot of what is assigned now (normally no `op_type`).
    /// A run whose snapshot completed may sweep devices it did not see.
    Snapshot,
    /// Sync records: changes (`added` / `modified` / `deleted`) to apply by `op_date`.
    Changes,
}

/// A point in Apple's device stream: the endpoint and the cursor to send it.
///
/// This is what a token stores between runs (the cursor is at most 1,000 characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Endpoint to call.
    pub phase: Phase,
    /// Cursor to send; `None` asks fetch for the snapshot from its start.
    pub cursor: Option<String>,
}

impl Position {
    /// The start of a complete snapshot: fetch with no cursor.
    pub fn from_scratch() -> Self {
        Position {
            phase: Phase::Fetch,
            cursor: None,
        }
    }
}

/// Apple's answer to the request a walk asked for, reduced to what the walk needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// A page of devices arrived (the devices themselves do not matter here).
    Page {
        /// The cursor Apple returned with the page.
        cursor: &'a str,
        /// Apple's `more_to_follow`: ask again at once from `cursor`.
        more_to_follow: bool,
    },
    /// 400 `EXHAUSTED_CURSOR`: every device was already returned for this cursor.
    ExhaustedCursor,
    /// 400 `EXPIRED_CURSOR`: the cursor is older than Apple keeps them (7 days).
    ExpiredCursor,
    /// 400 `INVALID_CURSOR`: Apple does not recognise the cursor.
    InvalidCursor,
    /// 400 `CURSOR_REQUIRED`: sync was asked without a cursor.
    CursorRequired,
    /// Any other failure; the caller holds (and records) the error itself.
    Failed,
}

/// Why a walk threw its cursor away and started a full fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// A delta run found no stored cursor.
    NoCursor,
    /// Apple answered `EXPIRED_CURSOR`.
    Expired,
    /// Apple answered `INVALID_CURSOR`.
    Invalid,
    /// Apple answered `CURSOR_REQUIRED`.
    Required,
}

/// Something worth surfacing about a run that still finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// Apple echoed the cursor it was sent with `more_to_follow: true` on a sync; the
    /// round was stopped there and the cursor kept, so the next run asks again.
    EchoedCursor,
    /// Apple echoed the cursor it was sent with `more_to_follow: true` on a fetch; the run
    /// stopped there without releasing anything and dropped the cursor, so the next run
    /// fetches a fresh snapshot.
    EchoedFetchCursor,
    /// Apple answered `EXHAUSTED_CURSOR` to a sync; the cursor was kept.
    ExhaustedOnSync,
    /// Apple answered `EXHAUSTED_CURSOR` in the middle of this run's snapshot; the run
    /// stopped there without releasing anything, and the next run fetches afresh.
    ExhaustedMidFetch,
}

/// Why a walk stopped without finishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The Apple call failed; the caller has the error and records it.
    Apple,
    /// Apple refused the cursor again after this run had already restarted from scratch.
    RestartLimit {
        /// The second refusal.
        reason: RestartReason,
    },
    /// The run requested its whole page budget and Apple still had more to follow.
    PageBudget {
        /// Pages requested.
        pages: u32,
    },
    /// Apple answered something its contract does not allow here (an empty cursor,
    /// `EXHAUSTED_CURSOR` to a fetch without cursor, `CURSOR_REQUIRED` to a fetch).
    Contract {
        /// The phase of the request that got the answer.
        phase: Phase,
    },
}

/// How a finished run ends: what to store, and what the run may conclude.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    /// The position to store for the next run: its cursor is present unless Apple's
    /// answers made it unusable ([`Warning::EchoedFetchCursor`],
    /// [`Warning::ExhaustedMidFetch`]), and then the next run fetches from scratch.
    pub position: Position,
    /// The run paged a snapshot from scratch to its end: devices assigned to the token
    /// but not seen in this run's snapshot records are no longer assigned in Apple.
    pub full_snapshot: bool,
    /// The run was started as a delta but turned into a full fetch.
    pub became_full: bool,
    /// Something the run should report although it finished.
    pub warning: Option<Warning>,
}

/// What to do after feeding an [`Outcome`] to [`Walk::next`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Request the page [`Walk::request`] names.
    Request(Walk),
    /// The cursor was thrown away: everything counted so far in this run is void, the run
    /// is now a full sync, and the walk asks for a snapshot from scratch.
    Restart {
        /// The walk, positioned at the start of a full fetch.
        walk: Walk,
        /// Why.
        reason: RestartReason,
    },
    /// The run is over: store [`Finish::position`].
    Done(Finish),
    /// The run failed; keep the position stored before it.
    Failed(Failure),
}

/// One run's walk through Apple's device stream.
///
/// Serializable so a worker nearing its deadline can hand the walk to its continuation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk {
    request: Position,
    /// The run pages a snapshot from no cursor (started full, or restarted).
    from_scratch: bool,
    /// That snapshot reached its end.
    snapshot_complete: bool,
    /// Started as a delta run.
    started_as_delta: bool,
    restarted: bool,
    pages: u32,
    page_budget: u32,
}

impl Walk {
    /// A full run: fetch the complete snapshot from scratch, then one sync round.
    pub fn full() -> Self {
        Walk {
            request: Position::from_scratch(),
            from_scratch: true,
            snapshot_complete: false,
            started_as_delta: false,
            restarted: false,
            pages: 0,
            page_budget: DEFAULT_PAGE_BUDGET,
        }
    }

    /// A delta run from the stored position.
    ///
    /// A stored sync position syncs from its cursor; a stored fetch position resumes an
    /// interrupted snapshot from its cursor (the run cannot sweep: it did not see the
    /// start). With no cursor stored the run becomes a full fetch
    /// ([`Walk::became_full`] is true).
    pub fn delta(stored: Option<&Position>) -> Self {
        match stored {
            Some(
                position @ Position {
                    cursor: Some(_), ..
                },
            ) => Walk {
                request: position.clone(),
                from_scratch: false,
                started_as_delta: true,
                ..Walk::full()
            },
            _ => Walk {
                started_as_delta: true,
                ..Walk::full()
            },
        }
    }

    /// Replaces the page budget ([`DEFAULT_PAGE_BUDGET`] by default).
    pub fn with_page_budget(mut self, pages: u32) -> Self {
        self.page_budget = pages;
        self
    }

    /// The request to send next.
    pub fn request(&self) -> &Position {
        &self.request
    }

    /// What the records of the next page will mean.
    pub fn records(&self) -> Records {
        self.request.phase.records()
    }

    /// The run pages a snapshot from scratch: it is a full sync, whatever it was started as.
    pub fn is_full(&self) -> bool {
        self.from_scratch
    }

    /// The run was started as a delta and turned into a full sync (no cursor, or Apple
    /// refused it). The caller must treat the run as a full sync from here on.
    pub fn became_full(&self) -> bool {
        self.started_as_delta && self.from_scratch
    }

    /// Pages answered so far in this run.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Feeds Apple's answer to the request this walk named, and says what to do next.
    pub fn next(self, outcome: Outcome<'_>) -> Step {
        let phase = self.request.phase;
        match outcome {
            Outcome::Page {
                cursor,
                more_to_follow,
            } => self.page(cursor, more_to_follow),
            Outcome::ExhaustedCursor => match phase {
                // In the middle of the snapshot this run paged from its start: the
                // snapshot was cut short, and a sweep would release every device on the
                // pages not seen.
                Phase::Fetch if self.request.cursor.is_some() && self.from_scratch => {
                    self.drop_cursor(Warning::ExhaustedMidFetch)
                }
                // The snapshot behind this cursor was delivered already (normally by an
                // earlier run): the changes since then come from sync, same cursor.
                Phase::Fetch if self.request.cursor.is_some() => {
                    let cursor = self.request.cursor.clone();
                    self.fetch_finished().advance(Phase::Sync, cursor)
                }
                Phase::Fetch => Step::Failed(Failure::Contract { phase }),
                // Apple lists it for sync too: nothing new behind the cursor. Keep it
                // rather than re-fetching every device.
                Phase::Sync => self.finish(Some(Warning::ExhaustedOnSync)),
            },
            Outcome::ExpiredCursor => self.restart(RestartReason::Expired),
            Outcome::InvalidCursor => self.restart(RestartReason::Invalid),
            Outcome::CursorRequired => match phase {
                Phase::Sync => self.restart(RestartReason::Required),
                Phase::Fetch => Step::Failed(Failure::Contract { phase }),
            },
            Outcome::Failed => Step::Failed(Failure::Apple),
        }
    }

    fn page(mut self, cursor: &str, more_to_follow: bool) -> Step {
        let phase = self.request.phase;
        if cursor.is_empty() {
            return Step::Failed(Failure::Contract { phase });
        }
        self.pages = self.pages.saturating_add(1);
        let echoed = self.request.cursor.as_deref() == Some(cursor);
        if more_to_follow && echoed {
            return match phase {
                Phase::Fetch => self.drop_cursor(Warning::EchoedFetchCursor),
                Phase::Sync => self.finish(Some(Warning::EchoedCursor)),
            };
        }
        let cursor = Some(cursor.to_owned());
        match (phase, more_to_follow) {
            (_, true) => self.advance(phase, cursor),
            (Phase::Fetch, false) => self.fetch_finished().advance(Phase::Sync, cursor),
            (Phase::Sync, false) => {
                self.request.cursor = cursor;
                self.finish(None)
            }
        }
    }

    /// The snapshot this walk was paging reached its end; it is complete only if the walk
    /// paged it from the start.
    fn fetch_finished(mut self) -> Self {
        self.snapshot_complete = self.from_scratch;
        self
    }

    fn advance(mut self, phase: Phase, cursor: Option<String>) -> Step {
        if self.pages >= self.page_budget {
            return Step::Failed(Failure::PageBudget { pages: self.pages });
        }
        self.request = Position { phase, cursor };
        Step::Request(self)
    }

    fn restart(mut self, reason: RestartReason) -> Step {
        if self.restarted {
            return Step::Failed(Failure::RestartLimit { reason });
        }
        self.restarted = true;
        self.request = Position::from_scratch();
        self.from_scratch = true;
        self.snapshot_complete = false;
        Step::Restart { walk: self, reason }
    }

    /// Ends the run where it is, with no complete snapshot (so nothing is released),
    /// storing no cursor: the next run, delta or full, fetches from scratch.
    fn drop_cursor(mut self, warning: Warning) -> Step {
        self.snapshot_complete = false;
        self.request = Position::from_scratch();
        self.finish(Some(warning))
    }

    fn finish(self, warning: Option<Warning>) -> Step {
        let became_full = self.became_full();
        Step::Done(Finish {
            position: self.request,
            full_snapshot: self.snapshot_complete,
            became_full,
            warning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase, cursor: Option<&str>) -> Position {
        Position {
            phase,
            cursor: cursor.map(str::to_owned),
        }
    }

    fn page(cursor: &str, more_to_follow: bool) -> Outcome<'_> {
        Outcome::Page {
            cursor,
            more_to_follow,
        }
    }

    /// What a step comes to, flattened so one table can describe every transition.
    #[derive(Debug, PartialEq, Eq)]
    enum Expect {
        Request(Position),
        Restart(RestartReason),
        Done {
            position: Position,
            full_snapshot: bool,
            warning: Option<Warning>,
        },
        Failed(Failure),
    }

    fn flatten(step: &Step) -> Expect {
        match step {
            Step::Request(walk) => Expect::Request(walk.request().clone()),
            Step::Restart { walk, reason } => {
                assert_eq!(walk.request(), &Position::from_scratch());
                Expect::Restart(*reason)
            }
            Step::Done(finish) => Expect::Done {
                position: finish.position.clone(),
                full_snapshot: finish.full_snapshot,
                warning: finish.warning,
            },
            Step::Failed(failure) => Expect::Failed(*failure),
        }
    }

    /// Drives a walk to the position under test by feeding it real outcomes first.
    fn walk_at(start: Walk, prefix: &[Outcome<'_>]) -> Walk {
        prefix
            .iter()
            .fold(start, |walk, outcome| match walk.next(*outcome) {
                Step::Request(walk) | Step::Restart { walk, .. } => walk,
                other => panic!("prefix must keep the walk going, got {other:?}"),
            })
    }

    #[test]
    fn every_transition() {
        use Expect::*;
        let delta_sync = || Walk::delta(Some(&at(Phase::Sync, Some("s0"))));
        let delta_fetch = || Walk::delta(Some(&at(Phase::Fetch, Some("f0"))));
        let cases: Vec<(&str, Walk, Vec<Outcome<'_>>, Outcome<'_>, Expect)> = vec![
            (
                "fetch page with more asks again from the new cursor",
                Walk::full(),
                vec![],
                page("c1", true),
                Request(at(Phase::Fetch, Some("c1"))),
            ),
            (
                "finished fetch switches to sync with its cursor",
                Walk::full(),
                vec![page("c1", true)],
                page("c2", false),
                Request(at(Phase::Sync, Some("c2"))),
            ),
            (
                "sync round after a full fetch finishes with a complete snapshot",
                Walk::full(),
                vec![page("c1", false)],
                page("c2", false),
                Done {
                    position: at(Phase::Sync, Some("c2")),
                    full_snapshot: true,
                    warning: None,
                },
            ),
            (
                "sync page with more asks again",
                delta_sync(),
                vec![],
                page("s1", true),
                Request(at(Phase::Sync, Some("s1"))),
            ),
            (
                "finished delta sync is done without a snapshot",
                delta_sync(),
                vec![page("s1", true)],
                page("s2", false),
                Done {
                    position: at(Phase::Sync, Some("s2")),
                    full_snapshot: false,
                    warning: None,
                },
            ),
            (
                "sync may answer the same cursor when nothing changed",
                delta_sync(),
                vec![],
                page("s0", false),
                Done {
                    position: at(Phase::Sync, Some("s0")),
                    full_snapshot: false,
                    warning: None,
                },
            ),
            (
                "exhausted fetch cursor syncs from the same cursor",
                delta_fetch(),
                vec![],
                Outcome::ExhaustedCursor,
                Request(at(Phase::Sync, Some("f0"))),
            ),
            (
                "exhausted in the middle of this run's snapshot releases nothing and refetches",
                Walk::full(),
                vec![page("c1", true), page("c2", true)],
                Outcome::ExhaustedCursor,
                Done {
                    position: Position::from_scratch(),
                    full_snapshot: false,
                    warning: Some(Warning::ExhaustedMidFetch),
                },
            ),
            (
                "exhausted with no cursor breaks Apple's contract",
                Walk::full(),
                vec![],
                Outcome::ExhaustedCursor,
                Failed(Failure::Contract {
                    phase: Phase::Fetch,
                }),
            ),
            (
                "exhausted on sync keeps the cursor and warns",
                delta_sync(),
                vec![],
                Outcome::ExhaustedCursor,
                Done {
                    position: at(Phase::Sync, Some("s0")),
                    full_snapshot: false,
                    warning: Some(Warning::ExhaustedOnSync),
                },
            ),
            (
                "expired cursor on sync restarts from scratch",
                delta_sync(),
                vec![],
                Outcome::ExpiredCursor,
                Restart(RestartReason::Expired),
            ),
            (
                "expired cursor on fetch restarts from scratch",
                delta_fetch(),
                vec![],
                Outcome::ExpiredCursor,
                Restart(RestartReason::Expired),
            ),
            (
                "invalid cursor on sync restarts from scratch",
                delta_sync(),
                vec![],
                Outcome::InvalidCursor,
                Restart(RestartReason::Invalid),
            ),
            (
                "invalid cursor on fetch restarts from scratch",
                Walk::full(),
                vec![page("c1", true)],
                Outcome::InvalidCursor,
                Restart(RestartReason::Invalid),
            ),
            (
                "cursor required on sync restarts from scratch",
                delta_sync(),
                vec![],
                Outcome::CursorRequired,
                Restart(RestartReason::Required),
            ),
            (
                "cursor required on fetch breaks Apple's contract",
                Walk::full(),
                vec![],
                Outcome::CursorRequired,
                Failed(Failure::Contract {
                    phase: Phase::Fetch,
                }),
            ),
            (
                "a second refusal after a restart fails the run",
                delta_sync(),
                vec![Outcome::ExpiredCursor, page("c1", true)],
                Outcome::InvalidCursor,
                Failed(Failure::RestartLimit {
                    reason: RestartReason::Invalid,
                }),
            ),
            (
                "echoed cursor on sync stops and keeps the cursor",
                delta_sync(),
                vec![],
                page("s0", true),
                Done {
                    position: at(Phase::Sync, Some("s0")),
                    full_snapshot: false,
                    warning: Some(Warning::EchoedCursor),
                },
            ),
            (
                "echoed cursor on fetch stops without a snapshot and drops the cursor",
                Walk::full(),
                vec![page("c1", true)],
                page("c1", true),
                Done {
                    position: Position::from_scratch(),
                    full_snapshot: false,
                    warning: Some(Warning::EchoedFetchCursor),
                },
            ),
            (
                "echoed cursor on a resumed fetch drops the cursor too",
                delta_fetch(),
                vec![],
                page("f0", true),
                Done {
                    position: Position::from_scratch(),
                    full_snapshot: false,
                    warning: Some(Warning::EchoedFetchCursor),
                },
            ),
            (
                "echoed cursor in the sync round keeps the completed snapshot",
                Walk::full(),
                vec![page("c1", false)],
                page("c1", true),
                Done {
                    position: at(Phase::Sync, Some("c1")),
                    full_snapshot: true,
                    warning: Some(Warning::EchoedCursor),
                },
            ),
            (
                "an empty cursor breaks Apple's contract",
                delta_sync(),
                vec![],
                page("", true),
                Failed(Failure::Contract { phase: Phase::Sync }),
            ),
            (
                "other failures fail the run",
                delta_sync(),
                vec![],
                Outcome::Failed,
                Failed(Failure::Apple),
            ),
            (
                "a resumed fetch completes without a snapshot",
                delta_fetch(),
                vec![page("f1", false)],
                page("s1", false),
                Done {
                    position: at(Phase::Sync, Some("s1")),
                    full_snapshot: false,
                    warning: None,
                },
            ),
            (
                "a restarted delta completes with a snapshot",
                delta_sync(),
                vec![Outcome::ExpiredCursor, page("c1", false)],
                page("c2", false),
                Done {
                    position: at(Phase::Sync, Some("c2")),
                    full_snapshot: true,
                    warning: None,
                },
            ),
            (
                "the page budget stops a stream that never ends",
                Walk::full().with_page_budget(2),
                vec![page("c1", true)],
                page("c2", true),
                Failed(Failure::PageBudget { pages: 2 }),
            ),
        ];
        for (name, start, prefix, outcome, expected) in cases {
            let walk = walk_at(start, &prefix);
            assert_eq!(flatten(&walk.next(outcome)), expected, "{name}");
        }
    }

    #[test]
    fn full_run_starts_from_scratch() {
        let walk = Walk::full();
        assert_eq!(walk.request(), &Position::from_scratch());
        assert_eq!(walk.records(), Records::Snapshot);
        assert!(walk.is_full());
        assert!(!walk.became_full());
    }

    #[test]
    fn delta_run_starts_where_it_was_stored() {
        let sync = at(Phase::Sync, Some("s0"));
        let walk = Walk::delta(Some(&sync));
        assert_eq!(walk.request(), &sync);
        assert_eq!(walk.records(), Records::Changes);
        assert!(!walk.is_full());

        let fetch = at(Phase::Fetch, Some("f0"));
        let walk = Walk::delta(Some(&fetch));
        assert_eq!(walk.request(), &fetch);
        assert_eq!(walk.records(), Records::Snapshot);
        assert!(!walk.became_full());
    }

    #[test]
    fn delta_run_without_cursor_becomes_full() {
        for stored in [
            None,
            Some(at(Phase::Sync, None)),
            Some(at(Phase::Fetch, None)),
        ] {
            let walk = Walk::delta(stored.as_ref());
            assert_eq!(walk.request(), &Position::from_scratch(), "{stored:?}");
            assert!(walk.became_full(), "{stored:?}");
        }
    }

    #[test]
    fn restart_turns_a_delta_into_a_full_run() {
        let walk = Walk::delta(Some(&at(Phase::Sync, Some("s0"))));
        let Step::Restart { walk, .. } = walk.next(Outcome::ExpiredCursor) else {
            panic!("expected a restart");
        };
        assert!(walk.became_full());
        let Step::Request(walk) = walk.next(page("c1", false)) else {
            panic!("expected the sync round");
        };
        let Step::Done(finish) = walk.next(page("c2", false)) else {
            panic!("expected the run to finish");
        };
        assert!(finish.became_full);
        assert!(finish.full_snapshot);
    }

    mod terminates {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Answer {
            Page { more: bool },
            Echo,
            Exhausted,
            Expired,
            Invalid,
            Required,
            Failed,
        }

        fn answer() -> impl Strategy<Value = Answer> {
            prop_oneof![
                4 => any::<bool>().prop_map(|more| Answer::Page { more }),
                1 => Just(Answer::Echo),
                1 => Just(Answer::Exhausted),
                1 => Just(Answer::Expired),
                1 => Just(Answer::Invalid),
                1 => Just(Answer::Required),
                1 => Just(Answer::Failed),
            ]
        }

        proptest! {
            /// Whatever Apple answers, a walk ends within its page budget plus the few
            /// answers that are not pages (one restart, one phase switch), and never
            /// restarts twice.
            #[test]
            fn any_answers_end_the_walk(
                budget in 1u32..20,
                delta in any::<bool>(),
                answers in proptest::collection::vec(answer(), 0..200),
            ) {
                let mut walk = if delta {
                    Walk::delta(Some(&at(Phase::Sync, Some("s"))))
                } else {
                    Walk::full()
                }
                .with_page_budget(budget);
                let mut steps = 0u32;
                let mut restarts = 0u32;
                let mut answers = answers.into_iter().cycle();
                let bound = budget + 4;
                loop {
                    prop_assert!(steps <= bound, "walk exceeded {bound} steps");
                    steps += 1;
                    // An empty answer list means Apple only ever answers with new pages.
                    let answer = answers.next().unwrap_or(Answer::Page { more: true });
                    let sent = walk.request().cursor.clone().unwrap_or_default();
                    let fresh = format!("c{steps}");
                    let outcome = match &answer {
                        // Distinct per step, so only `Echo` repeats a cursor.
                        Answer::Page { more } => page(&fresh, *more),
                        Answer::Echo => page(&sent, true),
                        Answer::Exhausted => Outcome::ExhaustedCursor,
                        Answer::Expired => Outcome::ExpiredCursor,
                        Answer::Invalid => Outcome::InvalidCursor,
                        Answer::Required => Outcome::CursorRequired,
                        Answer::Failed => Outcome::Failed,
                    };
                    match walk.next(outcome) {
                        Step::Request(next) => walk = next,
                        Step::Restart { walk: next, .. } => {
                            restarts += 1;
                            prop_assert!(restarts <= 1, "restarted twice");
                            walk = next;
                        }
                        Step::Done(finish) => {
                            // No cursor only when Apple's answers made it unusable,
                            // and then nothing is released.
                            let dropped = matches!(
                                finish.warning,
                                Some(Warning::EchoedFetchCursor | Warning::ExhaustedMidFetch)
                            );
                            prop_assert_eq!(finish.position.cursor.is_none(), dropped);
                            prop_assert!(!(dropped && finish.full_snapshot));
                            break;
                        }
                        Step::Failed(_) => break,
                    }
                }
            }
        }
    }
}
