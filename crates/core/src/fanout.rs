//! How a scheduled pass over every token is cut into bounded pieces.
//!
//! A pass (every 12 hours a delta of every token; every hour the full syncs
//! due) reads the tokens table in `segments` parallel scan segments, one
//! page of at most `page` tokens per invocation, each page handing the rest
//! of its segment on to the next through the sync-jobs queue. Nothing waits
//! on one invocation's timeout however large the fleet, and a page that
//! fails is retried alone.
//!
//! Starts are paced: every sync started takes a worker and a call to Apple,
//! and its 15-minute lease runs from the claim, so starting syncs faster
//! than the workers take them would let leases lapse in the queue. A page
//! that started `n` syncs delays its continuation so that the whole pass
//! starts at most `starts_per_second`; pages that started nothing (tokens
//! not due) go on at once. Within a page, each token's first step is
//! queued with a delay by its position, so Apple sees that rate rather
//! than a page-sized burst in one second.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// SQS's longest per-message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Which pass an EventBridge schedule asks for (its `Input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    /// Delta sync of every token.
    Delta,
    /// Full sync of tokens whose 7 days have passed (or that owe one).
    Full,
    /// Retries of profile assignments (enrollment policies).
    Assignments,
}

/// The shape of a pass: set by the scheduler from its settings and carried
/// by every page's message, so the pages of one pass agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassPlan {
    /// Parallel scan segments (DynamoDB `TotalSegments`).
    pub segments: u32,
    /// Tokens read per invocation.
    pub page: u32,
    /// Syncs the whole pass starts per second, at most (on average).
    pub starts_per_second: u32,
}

impl Default for PassPlan {
    fn default() -> Self {
        Self {
            segments: 4,
            page: 100,
            starts_per_second: 20,
        }
    }
}

impl PassPlan {
    /// Values out of range are brought back into it: at least one segment
    /// (DynamoDB allows up to 1,000,000), a page of 1 to 1,000 tokens, at
    /// least one start a second.
    pub fn bounded(self) -> Self {
        Self {
            segments: self.segments.clamp(1, 1_000_000),
            page: self.page.clamp(1, 1_000),
            starts_per_second: self.starts_per_second.max(1),
        }
    }

    /// How long segment `segment`'s first page waits: the segments start
    /// one page's worth of pacing apart, so their bursts interleave rather
    /// than land on Apple in the same second.
    pub fn first_page_delay(&self, segment: u32) -> Duration {
        let plan = self.bounded();
        let per_page = f64::from(plan.page) / f64::from(plan.starts_per_second);
        let spacing = per_page / f64::from(plan.segments);
        Duration::from_secs_f64(spacing * f64::from(segment)).min(MAX_DELAY)
    }

    /// How long a segment's next page waits once this one, which started
    /// `started` syncs, has taken `spent`: the page's share of the rate
    /// counts from its beginning, so the time spent claiming is not added
    /// to every page's pacing.
    pub fn next_page_wait(&self, started: usize, spent: Duration) -> Duration {
        self.next_page_delay(started).saturating_sub(spent)
    }

    /// The time a page that started `started` syncs stands for: each
    /// segment keeps to its share of the pass's rate.
    pub fn next_page_delay(&self, started: usize) -> Duration {
        let plan = self.bounded();
        let share = f64::from(plan.starts_per_second) / f64::from(plan.segments);
        Duration::from_secs_f64((started as f64 / share).min(MAX_DELAY.as_secs_f64()))
    }

    /// How long the sync of a page's `position`-th token waits before its
    /// first step: a page's starts are spread over the time the segment's
    /// share of the rate gives the page, not sent to Apple in one burst.
    pub fn start_offset(&self, position: usize) -> Duration {
        let plan = self.bounded();
        let share = f64::from(plan.starts_per_second) / f64::from(plan.segments);
        Duration::from_secs_f64((position as f64 / share).min(MAX_DELAY.as_secs_f64()))
    }

    /// Seconds a pass that starts a sync of each of `tokens` takes, at least
    /// (its pacing; reading and claiming add a little).
    pub fn pass_seconds(&self, tokens: u64) -> u64 {
        tokens.div_ceil(u64::from(self.bounded().starts_per_second))
    }
}

/// Where a segment's scan goes on from: the key of the last item it read,
/// as stored. Kept raw, not parsed into ids: the scan must be able to step
/// past an item whose key is not a valid id (one bad item never stops a
/// pass), and the position only ever goes back to DynamoDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPosition {
    pub account_id: String,
    pub token_id: String,
}

/// One page of a scheduled pass (see this module): read up to
/// `plan.page` tokens of scan segment `segment` after `after`, start what
/// the sweep asks of each, and queue the segment's next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepJob {
    /// Always `"sweep"`: tells this job from the others.
    pub job: SweepTag,
    pub sweep: Sweep,
    pub plan: PassPlan,
    pub segment: u32,
    /// 0 for a segment's first page, then 1, 2, …
    #[serde(default)]
    pub page: u32,
    /// None for a segment's first page.
    #[serde(default)]
    pub after: Option<ScanPosition>,
}

/// The tag of a [`SweepJob`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepTag {
    #[default]
    Sweep,
}

impl SweepJob {
    /// The first page of `segment`.
    pub fn first(sweep: Sweep, plan: PassPlan, segment: u32) -> Self {
        Self {
            job: SweepTag::Sweep,
            sweep,
            plan,
            segment,
            page: 0,
            after: None,
        }
    }

    /// The page after this one, which ended at `after`.
    pub fn next(&self, after: ScanPosition) -> Self {
        Self {
            page: self.page + 1,
            after: Some(after),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_keeps_to_its_rate_whatever_the_segments() {
        for segments in [1, 4, 16] {
            let plan = PassPlan {
                segments,
                page: 100,
                starts_per_second: 20,
            };
            // Each segment starts 100 a page at 20/segments a second: the
            // segments together start 20 a second.
            let per_page = plan.next_page_delay(100).as_secs_f64();
            let pass_rate = f64::from(segments) * 100.0 / per_page;
            assert!((pass_rate - 20.0).abs() < 1e-9, "{segments}: {pass_rate}");
        }
        // A page that started nothing goes on at once.
        assert_eq!(PassPlan::default().next_page_delay(0), Duration::ZERO);
    }

    #[test]
    fn a_slow_page_waits_less_and_one_slower_than_its_share_goes_on_at_once() {
        let plan = PassPlan::default();
        // 100 starts are 20 s of one segment's share.
        assert_eq!(
            plan.next_page_wait(100, Duration::from_secs(3)),
            Duration::from_secs(17)
        );
        assert_eq!(
            plan.next_page_wait(100, Duration::from_secs(25)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_page_spreads_its_starts_over_its_share_of_the_rate() {
        let plan = PassPlan::default();
        // 20/s over 4 segments: a segment starts 5 a second.
        assert_eq!(plan.start_offset(0), Duration::ZERO);
        assert_eq!(plan.start_offset(5), Duration::from_secs(1));
        // The page's last start comes before the next page begins.
        let last = plan.start_offset(plan.page as usize - 1);
        assert!(last < plan.next_page_delay(plan.page as usize), "{last:?}");
        assert_eq!(plan.start_offset(usize::MAX), MAX_DELAY);
    }

    #[test]
    fn segments_start_staggered_within_one_page_of_pacing() {
        let plan = PassPlan {
            segments: 4,
            page: 100,
            starts_per_second: 20,
        };
        let delays: Vec<f64> = (0..4)
            .map(|s| plan.first_page_delay(s).as_secs_f64())
            .collect();
        assert_eq!(delays, vec![0.0, 1.25, 2.5, 3.75]);
        // One page at one segment's share (5/s) takes 20 s: the last
        // segment starts well inside it.
        assert!(delays[3] < plan.next_page_delay(100).as_secs_f64());
    }

    #[test]
    fn delays_never_exceed_what_sqs_allows() {
        let slow = PassPlan {
            segments: 1_000,
            page: 1_000,
            starts_per_second: 1,
        };
        assert_eq!(slow.next_page_delay(1_000), MAX_DELAY);
        assert_eq!(slow.first_page_delay(999), MAX_DELAY);
    }

    #[test]
    fn out_of_range_plans_are_bounded_not_divided_by_zero() {
        let zero = PassPlan {
            segments: 0,
            page: 0,
            starts_per_second: 0,
        };
        assert_eq!(
            zero.bounded(),
            PassPlan {
                segments: 1,
                page: 1,
                starts_per_second: 1
            }
        );
        assert_eq!(zero.next_page_delay(3), Duration::from_secs(3));
        assert_eq!(zero.pass_seconds(10), 10);
    }

    #[test]
    fn a_pass_of_100000_tokens_at_20_a_second_fits_12_hours() {
        let seconds = PassPlan::default().pass_seconds(100_000);
        assert_eq!(seconds, 5_000);
        assert!(seconds < 12 * 3600);
    }
}
