//! Time is a dependency.
//!
//! Every rule about minutes and days (cooldowns, leases, TTLs) reads `now`
//! from a [`Clock`] handed in by the caller. Lambdas use [`SystemClock`];
//! the local runner and the tests use [`OffsetClock`], which they move
//! forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The machine's clock moved forward by an adjustable offset.
///
/// Advancing keeps real time flowing underneath, so leases and timeouts that
/// are measured in seconds still behave naturally while a test skips days.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_millis: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward (or backward, for a negative duration).
    pub fn advance(&self, by: Duration) {
        self.offset_millis
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    /// How far this clock is ahead of the machine's clock.
    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_millis.load(Ordering::SeqCst))
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

/// A clock that stands still until moved: for pure unit tests at exact boundaries.
#[derive(Debug)]
pub struct FixedClock {
    millis: AtomicI64,
}

impl FixedClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            millis: AtomicI64::new(now.timestamp_millis()),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.millis.load(Ordering::SeqCst))
            .unwrap_or(DateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_moves_forward_without_sleeping() {
        let clock = OffsetClock::new();
        let before = clock.now();
        clock.advance(Duration::days(7));
        let after = clock.now();
        assert!(after - before >= Duration::days(7));
        assert!(after - before < Duration::days(7) + Duration::seconds(5));
    }

    #[test]
    fn fixed_clock_stands_still() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let clock = FixedClock::at(t);
        assert_eq!(clock.now(), t);
        clock.advance(Duration::minutes(15));
        assert_eq!(clock.now(), t + Duration::minutes(15));
    }
}
