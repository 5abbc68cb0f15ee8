//! The simulator clock: real time, optionally sped up and moved forward, so a local run can live
//! through days of Apple's behaviour (cursor age, session and token expiry) in minutes.
//!
//! Simulator time is an anchor instant plus the real time elapsed since the anchor times the
//! speed. Real elapsed time is read from the monotonic clock, so simulator time never runs
//! backwards when the system clock is corrected; speed changes and advances re-anchor at the
//! current simulator instant, so time never jumps except by an explicit advance.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// Real time itself.
pub const MIN_SPEED: f64 = 1.0;
/// A day of simulator time in under nine real seconds: more than a local run needs, and low
/// enough that simulator time stays exact to the millisecond over years of running.
pub const MAX_SPEED: f64 = 10_000.0;

/// A refused clock change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClockError {
    #[error("speed must be a number from {MIN_SPEED} to {MAX_SPEED}, got {0}")]
    InvalidSpeed(f64),
    #[error("clock offset out of range")]
    OutOfRange,
}

/// Checks a clock speed: at least real time, at most [`MAX_SPEED`].
pub fn check_speed(speed: f64) -> Result<f64, ClockError> {
    if (MIN_SPEED..=MAX_SPEED).contains(&speed) {
        Ok(speed)
    } else {
        Err(ClockError::InvalidSpeed(speed))
    }
}

#[derive(Debug, Clone)]
pub struct SimClock {
    anchor_real: Instant,
    anchor_sim: DateTime<Utc>,
    speed: f64,
}

impl SimClock {
    /// Starts at the current real time, running at `speed`.
    pub fn new(speed: f64) -> Result<Self, ClockError> {
        Self::starting_at(Instant::now(), Utc::now(), speed)
    }

    /// A clock showing `start` at the real instant `real`; tests pass made-up instants so they
    /// need not sleep.
    pub fn starting_at(
        real: Instant,
        start: DateTime<Utc>,
        speed: f64,
    ) -> Result<Self, ClockError> {
        Ok(Self {
            anchor_real: real,
            anchor_sim: start,
            speed: check_speed(speed)?,
        })
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now_at(Instant::now())
    }

    /// Simulator time at the real instant `real` (instants before the anchor read as the
    /// anchor).
    pub fn now_at(&self, real: Instant) -> DateTime<Utc> {
        let elapsed = real.saturating_duration_since(self.anchor_real);
        // Only reachable after centuries at top speed; a clock stuck at the end of time is a
        // better answer than a panic on every request.
        Duration::try_from_secs_f64(elapsed.as_secs_f64() * self.speed)
            .ok()
            .and_then(|scaled| TimeDelta::from_std(scaled).ok())
            .and_then(|scaled| self.anchor_sim.checked_add_signed(scaled))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Simulator now minus real now, in whole seconds (rounded, so a clock at real speed that
    /// was advanced by N seconds reads exactly N).
    pub fn offset_seconds(&self) -> i64 {
        self.offset_seconds_at(Instant::now(), Utc::now())
    }

    /// [`Self::offset_seconds`] at the real instant `real`, which the system clock shows as
    /// `real_utc`.
    pub fn offset_seconds_at(&self, real: Instant, real_utc: DateTime<Utc>) -> i64 {
        let offset = self.now_at(real).signed_duration_since(real_utc);
        (offset.num_milliseconds() as f64 / 1000.0).round() as i64
    }

    /// Moves simulator time by `seconds` (negative moves it back); nothing changes on error.
    pub fn advance_at(&mut self, real: Instant, seconds: i64) -> Result<(), ClockError> {
        let step = TimeDelta::try_seconds(seconds).ok_or(ClockError::OutOfRange)?;
        let moved = self
            .now_at(real)
            .checked_add_signed(step)
            .ok_or(ClockError::OutOfRange)?;
        self.anchor_real = real;
        self.anchor_sim = moved;
        Ok(())
    }

    /// Runs the clock at `speed` from now on, continuing from the current simulator instant.
    pub fn set_speed_at(&mut self, real: Instant, speed: f64) -> Result<(), ClockError> {
        let speed = check_speed(speed)?;
        self.anchor_sim = self.now_at(real);
        self.anchor_real = real;
        self.speed = speed;
        Ok(())
    }

    /// How long to really wait for `simulated` to pass on this clock at its current speed.
    pub fn real_duration(&self, simulated: Duration) -> Duration {
        // The speed is checked to be finite and at least 1, so this never panics.
        simulated.div_f64(self.speed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .expect("a valid date")
            .with_timezone(&Utc)
    }

    fn at(base: Instant, seconds: f64) -> Instant {
        base + Duration::from_secs_f64(seconds)
    }

    fn secs(seconds: i64) -> TimeDelta {
        TimeDelta::seconds(seconds)
    }

    #[test]
    fn real_speed_follows_real_time() {
        let base = Instant::now();
        let clock = SimClock::starting_at(base, start(), 1.0).unwrap();
        assert_eq!(clock.now_at(base), start());
        assert_eq!(clock.now_at(at(base, 90.0)), start() + secs(90));
        assert_eq!(
            clock.offset_seconds_at(at(base, 90.0), start() + secs(90)),
            0
        );
    }

    #[test]
    fn speed_multiplies_elapsed_real_time() {
        let base = Instant::now();
        let clock = SimClock::starting_at(base, start(), 20.0).unwrap();
        assert_eq!(clock.now_at(at(base, 0.3)), start() + secs(6));
        let clock = SimClock::starting_at(base, start(), 1.5).unwrap();
        assert_eq!(clock.now_at(at(base, 10.0)), start() + secs(15));
        // 10 real seconds later the simulator is 5 seconds ahead of the system clock.
        assert_eq!(
            clock.offset_seconds_at(at(base, 10.0), start() + secs(10)),
            5
        );
    }

    #[test]
    fn instants_before_the_anchor_read_as_the_anchor() {
        let base = Instant::now();
        let clock = SimClock::starting_at(at(base, 5.0), start(), 3.0).unwrap();
        assert_eq!(clock.now_at(base), start());
    }

    #[test]
    fn changing_speed_continues_from_the_current_instant() {
        let base = Instant::now();
        let mut clock = SimClock::starting_at(base, start(), 2.0).unwrap();
        // 10 real s at ×2 = 20 s, then ×10.
        clock.set_speed_at(at(base, 10.0), 10.0).unwrap();
        assert_eq!(clock.speed(), 10.0);
        assert_eq!(clock.now_at(at(base, 10.0)), start() + secs(20));
        assert_eq!(clock.now_at(at(base, 13.0)), start() + secs(50));
        // Back to real time: no jump back.
        clock.set_speed_at(at(base, 13.0), 1.0).unwrap();
        assert_eq!(clock.now_at(at(base, 14.0)), start() + secs(51));
    }

    #[test]
    fn advancing_moves_the_anchor_and_keeps_the_speed() {
        let base = Instant::now();
        let mut clock = SimClock::starting_at(base, start(), 4.0).unwrap();
        clock.advance_at(at(base, 2.0), 3600).unwrap();
        // 2 s ×4 = 8 s, plus the hour.
        assert_eq!(clock.now_at(at(base, 2.0)), start() + secs(3608));
        assert_eq!(clock.now_at(at(base, 3.0)), start() + secs(3612));
        assert_eq!(
            clock.offset_seconds_at(at(base, 3.0), start() + secs(3)),
            3609
        );
    }

    #[test]
    fn offset_rounds_to_the_nearest_second() {
        let base = Instant::now();
        let mut clock = SimClock::starting_at(base, start(), 1.0).unwrap();
        clock.advance_at(base, 86_400).unwrap();
        // The system clock read a moment after the monotonic one.
        let real_utc = start() + TimeDelta::microseconds(40);
        assert_eq!(clock.offset_seconds_at(base, real_utc), 86_400);
        clock.advance_at(base, -2 * 86_400).unwrap();
        assert_eq!(clock.offset_seconds_at(base, real_utc), -86_400);
    }

    #[test]
    fn speeds_outside_one_to_ten_thousand_are_refused() {
        for speed in [0.0, 0.5, 0.999, -1.0, 10_000.5, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(check_speed(speed), Err(ClockError::InvalidSpeed(_))),
                "{speed}"
            );
        }
        for speed in [1.0, 1.5, 10_000.0] {
            assert_eq!(check_speed(speed), Ok(speed));
        }
        let base = Instant::now();
        let mut clock = SimClock::starting_at(base, start(), 2.0).unwrap();
        assert!(clock.set_speed_at(at(base, 1.0), 0.5).is_err());
        assert_eq!(clock.speed(), 2.0);
        assert_eq!(clock.now_at(at(base, 1.0)), start() + secs(2));
    }

    #[test]
    fn advancing_out_of_range_changes_nothing() {
        let base = Instant::now();
        let mut clock = SimClock::starting_at(base, start(), 1.0).unwrap();
        assert_eq!(
            clock.advance_at(base, i64::MAX),
            Err(ClockError::OutOfRange)
        );
        assert_eq!(
            clock.advance_at(base, 400_000 * 365 * 86_400),
            Err(ClockError::OutOfRange)
        );
        assert_eq!(clock.now_at(base), start());
    }

    #[test]
    fn waits_shrink_with_the_speed() {
        let base = Instant::now();
        let clock = SimClock::starting_at(base, start(), 20.0).unwrap();
        assert_eq!(
            clock.real_duration(Duration::from_secs(6)),
            Duration::from_millis(300)
        );
        let clock = SimClock::starting_at(base, start(), 1.0).unwrap();
        assert_eq!(
            clock.real_duration(Duration::from_millis(250)),
            Duration::from_millis(250)
        );
    }
}
