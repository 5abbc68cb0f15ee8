//! How many devices to ask Apple for per page, and how long to wait for them.
//!
//! Apple delivers about 3,000 devices a minute, so a page of 5,000 (the
//! maximum `/account` advertises) takes about 100 seconds: past any sensible
//! request timeout, and longer than a worker step can afford. Pages are
//! therefore sized by time: as many devices as Apple delivers in
//! [`PAGE_TARGET`] at the pace it has shown, and the wait for an answer is
//! derived from that expectation. A page that times out is asked again at
//! half the size, down to Apple's documented default of [`MIN_PAGE`]
//! devices; only a page of that size timing out fails the run. Quick
//! answers let the size grow back, at most doubling per page.
//!
//! [`PageSize`] is saved with the walk after every page (and after every
//! halving, before the smaller page is asked): a worker that resumes a
//! position asks exactly the page the previous worker asked, so the batches
//! it sends for that position are the same.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::sync::APPLE_DEVICES_PER_MINUTE;

/// How long one page should take at the pace Apple has shown.
pub const PAGE_TARGET: Duration = Duration::seconds(20);
/// Apple's documented default page size: the smallest page asked.
pub const MIN_PAGE: u32 = 100;
/// The shortest wait for a page: even a tiny page may meet a slow moment.
pub const MIN_PAGE_TIMEOUT: Duration = Duration::seconds(30);
/// The longest wait for a page; also what a worker step keeps in hand for
/// one (see the worker's deadline margin).
pub const MAX_PAGE_TIMEOUT: Duration = Duration::seconds(60);
/// A page may take this many times its expected duration before it counts
/// as timed out (and is asked again at half the size).
const TIMEOUT_FACTOR: i64 = 2;

/// The page size of a walk and the pace it is based on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PageSize {
    /// Devices asked per page.
    pub limit: u32,
    /// Devices per second Apple delivered on recent full pages; Apple's
    /// usual pace until one is measured.
    pub devices_per_second: f64,
}

impl Default for PageSize {
    fn default() -> Self {
        let devices_per_second = APPLE_DEVICES_PER_MINUTE as f64 / 60.0;
        Self {
            limit: limit_for(devices_per_second, u32::MAX),
            devices_per_second,
        }
    }
}

/// The devices Apple delivers in [`PAGE_TARGET`] at `devices_per_second`,
/// in hundreds, between [`MIN_PAGE`] and `maximum`.
fn limit_for(devices_per_second: f64, maximum: u32) -> u32 {
    let target = devices_per_second * PAGE_TARGET.num_seconds() as f64;
    let hundreds = (target / 100.0)
        .floor()
        .max(1.0)
        .min(f64::from(u32::MAX / 100));
    let limit = (hundreds as u32).saturating_mul(100);
    limit.min(maximum).max(MIN_PAGE.min(maximum.max(1)))
}

impl PageSize {
    /// The page to ask, within the `maximum` Apple advertises.
    pub fn limit(&self, maximum: u32) -> u32 {
        self.limit.min(maximum).max(MIN_PAGE.min(maximum.max(1)))
    }

    /// How long to wait for a page of [`PageSize::limit`] devices, at most
    /// `cap` (the client's configured request timeout).
    pub fn timeout(&self, maximum: u32, cap: Duration) -> Duration {
        let expected_ms =
            f64::from(self.limit(maximum)) * 1000.0 / self.devices_per_second.max(0.001);
        let wait = Duration::milliseconds((expected_ms as i64).saturating_mul(TIMEOUT_FACTOR));
        wait.max(MIN_PAGE_TIMEOUT).min(MAX_PAGE_TIMEOUT).min(cap)
    }

    /// After a page of `devices` devices answered in `took`: the pace is
    /// updated from full pages only (a short last page says nothing of the
    /// pace), and the size follows it, at most doubling.
    pub fn answered(&self, devices: usize, took: Duration, maximum: u32) -> PageSize {
        let asked = self.limit(maximum);
        let took_seconds = took.num_milliseconds().max(1) as f64 / 1000.0;
        if (devices as u64) < u64::from(asked) {
            return *self;
        }
        let seen = devices as f64 / took_seconds;
        // Half the old pace, half the new: one odd page moves it, not jerks it.
        let devices_per_second = (self.devices_per_second + seen) / 2.0;
        let limit = limit_for(devices_per_second, maximum).min(asked.saturating_mul(2));
        PageSize {
            limit,
            devices_per_second,
        }
    }

    /// After a page timed out: half the size and a pace that fits it, or
    /// None when the page was already the smallest (the run fails).
    pub fn timed_out(&self, maximum: u32, waited: Duration) -> Option<PageSize> {
        let asked = self.limit(maximum);
        if asked <= MIN_PAGE {
            return None;
        }
        let limit = (asked / 2 / 100 * 100).max(MIN_PAGE);
        // Apple delivered fewer than `asked` devices in `waited`.
        let waited_seconds = waited.num_milliseconds().max(1) as f64 / 1000.0;
        let devices_per_second = self
            .devices_per_second
            .min(f64::from(asked) / waited_seconds);
        Some(PageSize {
            limit,
            devices_per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_apples_pace_a_page_is_twenty_seconds_of_devices() {
        let size = PageSize::default();
        // 3,000 per minute is 50 per second: 1,000 devices in 20 s.
        assert_eq!(size.limit(5_000), 1_000);
        assert_eq!(size.limit(500), 500, "never above the advertised maximum");
        // Expected 20 s: twice that.
        assert_eq!(
            size.timeout(5_000, Duration::seconds(60)),
            Duration::seconds(40)
        );
        assert_eq!(
            size.timeout(5_000, Duration::seconds(2)),
            Duration::seconds(2)
        );
    }

    #[test]
    fn a_timeout_halves_the_page_down_to_apples_default() {
        let mut size = PageSize::default();
        let mut asked = vec![size.limit(5_000)];
        while let Some(smaller) = size.timed_out(5_000, Duration::seconds(60)) {
            size = smaller;
            asked.push(size.limit(5_000));
        }
        assert_eq!(asked, [1_000, 500, 200, 100]);
        assert_eq!(size.timed_out(5_000, Duration::seconds(60)), None);
    }

    #[test]
    fn quick_full_pages_grow_the_page_at_most_twofold_and_short_pages_change_nothing() {
        let small = PageSize {
            limit: 100,
            devices_per_second: 5.0,
        };
        // 100 devices in 0.1 s: a pace of 1,000/s, but the page only doubles.
        let grown = small.answered(100, Duration::milliseconds(100), 5_000);
        assert_eq!(grown.limit, 200);
        assert!(grown.devices_per_second > 400.0);
        // A short last page says nothing of the pace.
        assert_eq!(small.answered(40, Duration::milliseconds(10), 5_000), small);
        // Grown all the way: the advertised maximum.
        let mut size = grown;
        for _ in 0..10 {
            size = size.answered(
                size.limit(5_000) as usize,
                Duration::milliseconds(100),
                5_000,
            );
        }
        assert_eq!(size.limit(5_000), 5_000);
    }

    #[test]
    fn a_slower_apple_gets_smaller_pages_that_still_take_twenty_seconds() {
        let size = PageSize::default();
        // 1,000 devices took 60 s: 16.7/s; averaged with 50/s → 33.3/s.
        let slower = size.answered(1_000, Duration::seconds(60), 5_000);
        assert_eq!(slower.limit, 600);
        let slowest = slower.answered(600, Duration::seconds(60), 5_000);
        assert_eq!(slowest.limit, 400);
        assert!(slowest.timeout(5_000, Duration::seconds(60)) <= MAX_PAGE_TIMEOUT);
    }

    #[test]
    fn the_wait_fits_the_page() {
        let size = PageSize {
            limit: 100,
            devices_per_second: 50.0,
        };
        // 2 s expected: the floor of 30 s applies.
        assert_eq!(size.timeout(5_000, Duration::seconds(60)), MIN_PAGE_TIMEOUT);
        let timed_out = PageSize::default()
            .timed_out(5_000, Duration::seconds(40))
            .unwrap();
        // 1,000 not delivered in 40 s: at most 25/s; 500 at that pace is
        // 20 s expected, 40 s allowed.
        assert_eq!(timed_out.devices_per_second, 25.0);
        assert_eq!(timed_out.limit(5_000), 500);
        assert_eq!(
            timed_out.timeout(5_000, Duration::seconds(60)),
            Duration::seconds(40)
        );
        // Slower still: the wait is capped.
        let slow = PageSize {
            limit: 1_000,
            devices_per_second: 5.0,
        };
        assert_eq!(
            slow.timeout(5_000, Duration::seconds(600)),
            MAX_PAGE_TIMEOUT
        );
    }
}
