//! Time is a dependency.
//!
//! Every rule about minutes and days (cooldowns, leases, TTLs) reads `now`
//! from a [`Clock`] handed in by the caller, and everything that waits
//! (deadlines, retries, paced answers) converts its wait into real time with
//! [`Clock::real`]. Lambdas use [`SystemClock`]; the local runner and the
//! tests use [`LocalClock`], which they move forward and speed up instead of
//! sleeping: at speed 60 a 15-minute lease lapses in 15 real seconds, and a
//! 300-second Lambda deadline comes after 5.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// Fastest a [`LocalClock`] may run: beyond it a millisecond of real
/// scheduling noise is more than ten seconds of the clock.
pub const MAX_SPEED: f64 = 10_000.0;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// Seconds of this clock per real second: 1 except in a sped-up local run.
    fn speed(&self) -> f64 {
        1.0
    }

    /// The real time that `span` of this clock takes (never negative).
    fn real(&self, span: Duration) -> std::time::Duration {
        let seconds = span.num_milliseconds().max(0) as f64 / 1000.0 / self.speed().max(1.0);
        std::time::Duration::from_secs_f64(seconds)
    }

    /// The span of this clock that `real` real time takes.
    fn span(&self, real: std::time::Duration) -> Duration {
        Duration::milliseconds((real.as_secs_f64() * 1000.0 * self.speed()) as i64)
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// When an invocation must have returned, on the clock it runs on: Lambda
/// kills a function at its deadline, and the local runner does the same at
/// the template's timeout of its (possibly sped-up) clock.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: DateTime<Utc>,
    clock: SharedClock,
}

impl Deadline {
    pub fn new(clock: SharedClock, at: DateTime<Utc>) -> Self {
        Self { at, clock }
    }

    /// A deadline `timeout` from the clock's now.
    pub fn after(clock: SharedClock, timeout: Duration) -> Self {
        let at = clock.now() + timeout;
        Self { at, clock }
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// Whether `margin` still fits before the deadline.
    pub fn leaves(&self, margin: Duration) -> bool {
        self.clock.now() + margin <= self.at
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The local runner's clock: the machine's clock moved forward by an
/// adjustable offset and running at an adjustable speed.
///
/// Real time keeps flowing underneath (times `speed`), so leases and
/// timeouts still pass on their own while a test skips days. Changing the
/// speed re-anchors at the current instant, so the clock never jumps.
#[derive(Debug)]
pub struct LocalClock {
    anchor: Mutex<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Real time at the anchor.
    real: DateTime<Utc>,
    /// This clock's time at the anchor.
    clock: DateTime<Utc>,
    speed: f64,
}

impl Anchor {
    fn at(&self, real_now: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed = (real_now - self.real)
            .num_microseconds()
            .unwrap_or(i64::MAX / 2) as f64;
        self.clock + Duration::microseconds((elapsed * self.speed) as i64)
    }
}

/// A speed that is not a number ≥ 1 and ≤ [`MAX_SPEED`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("the clock's speed must be a number from 1 to {MAX_SPEED}, not {0}")]
pub struct InvalidSpeed(pub f64);

impl Default for LocalClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalClock {
    pub fn new() -> Self {
        let now = Utc::now();
        Self {
            anchor: Mutex::new(Anchor {
                real: now,
                clock: now,
                speed: 1.0,
            }),
        }
    }

    fn anchor(&self) -> std::sync::MutexGuard<'_, Anchor> {
        self.anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock forward (or backward, for a negative duration).
    pub fn advance(&self, by: Duration) {
        self.anchor().clock += by;
    }

    /// Makes the clock run `speed` times faster than real time from now on.
    pub fn set_speed(&self, speed: f64) -> Result<(), InvalidSpeed> {
        if !(1.0..=MAX_SPEED).contains(&speed) {
            return Err(InvalidSpeed(speed));
        }
        let mut anchor = self.anchor();
        let real = Utc::now();
        *anchor = Anchor {
            real,
            clock: anchor.at(real),
            speed,
        };
        Ok(())
    }

    /// How far this clock is ahead of the machine's clock.
    pub fn offset(&self) -> Duration {
        let real = Utc::now();
        self.anchor().at(real) - real
    }
}

impl Clock for LocalClock {
    fn now(&self) -> DateTime<Utc> {
        self.anchor().at(Utc::now())
    }

    fn speed(&self) -> f64 {
        self.anchor().speed
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
    fn local_clock_moves_forward_without_sleeping() {
        let clock = LocalClock::new();
        let before = clock.now();
        clock.advance(Duration::days(7));
        let after = clock.now();
        assert!(after - before >= Duration::days(7));
        assert!(after - before < Duration::days(7) + Duration::seconds(5));
    }

    #[test]
    fn a_sped_up_clock_runs_faster_and_never_jumps() {
        let clock = LocalClock::new();
        let real_before = Utc::now();
        clock.set_speed(1_000.0).unwrap();
        let before = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let after = clock.now();
        let real_elapsed = Utc::now() - real_before;
        // 20 ms of real time is at least 20 s of this clock, and at most
        // 1,000 times what really passed.
        assert!(
            after - before >= Duration::seconds(20),
            "{:?}",
            after - before
        );
        assert!(after - before <= real_elapsed * 1_000);
        // Back to real time: the clock keeps what it gained.
        clock.set_speed(1.0).unwrap();
        assert!(clock.now() >= after);
        assert!(clock.offset() >= Duration::seconds(19));
    }

    #[test]
    fn speeds_below_one_or_absurd_are_refused() {
        let clock = LocalClock::new();
        for speed in [0.0, 0.5, -1.0, f64::NAN, f64::INFINITY, MAX_SPEED + 1.0] {
            assert!(clock.set_speed(speed).is_err(), "{speed}");
        }
        assert_eq!(clock.speed(), 1.0);
    }

    #[test]
    fn waits_are_converted_to_real_time_by_the_speed() {
        let clock = FixedClock::at(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        assert_eq!(
            clock.real(Duration::seconds(90)),
            std::time::Duration::from_secs(90)
        );
        let fast = LocalClock::new();
        fast.set_speed(60.0).unwrap();
        assert_eq!(
            fast.real(Duration::minutes(15)),
            std::time::Duration::from_secs(15)
        );
        assert_eq!(
            fast.span(std::time::Duration::from_secs(2)),
            Duration::minutes(2)
        );
        assert_eq!(fast.real(Duration::seconds(-5)), std::time::Duration::ZERO);
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
