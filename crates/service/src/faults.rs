//! Crash points for fault tests.
//!
//! A test arms a point; the next time the worker or the importer passes it,
//! the step stops there with an error and no further side effect — as if
//! the process had been killed at that line. SQS then redelivers the
//! message, and the test checks that nothing was lost or duplicated. A
//! stall point instead hangs the step until its runtime kills it at the
//! function's timeout, as Lambda kills a stuck invocation.
//! Nothing outside the process can arm a point: Lambda binaries build
//! `Faults::default()` and never touch it again.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where a step can be made to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// The worker received a page from Apple and sent nothing yet.
    WorkerAfterFetch,
    /// The worker sent part of a page's batches to SQS.
    WorkerAfterPartialSend,
    /// The worker sent all of a page's batches but did not save its cursor.
    WorkerBeforeSave,
    /// The importer wrote part of a batch's devices.
    ImporterMidBatch,
    /// The importer wrote a batch's devices but did not mark the batch.
    ImporterBeforeMark,
    /// The importer swept a part of a closing run and queued the next
    /// part's marker, but its own message was not acknowledged.
    ImporterAfterNextPart,
    /// Not a crash: every publish of domain events is refused, as by a bus
    /// that is down. The step goes on; the events wait in the outbox.
    BusRefuses,
    /// The worker saved a page and then hangs (a stall point: see
    /// [`Faults::stall`]).
    WorkerStallsAfterSave,
}

/// The armed crash points of one process.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<HashMap<CrashPoint, u32>>,
}

/// The error a crash point returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("injected crash at {0:?}")]
pub struct Crashed(pub CrashPoint);

impl Faults {
    /// Makes the next `times` passes through `point` crash.
    pub fn arm(&self, point: CrashPoint, times: u32) {
        if let Ok(mut armed) = self.armed.lock() {
            armed.insert(point, times);
        }
    }

    /// How many armed crashes of `point` are left.
    pub fn remaining(&self, point: CrashPoint) -> u32 {
        self.armed
            .lock()
            .map(|armed| armed.get(&point).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Hangs forever if `point` is armed: the invocation ends only when its
    /// runtime kills it at its deadline.
    pub async fn stall(&self, point: CrashPoint) {
        if self.check(point).is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Crashes if `point` is armed.
    pub fn check(&self, point: CrashPoint) -> Result<(), Crashed> {
        let Ok(mut armed) = self.armed.lock() else {
            return Ok(());
        };
        match armed.get_mut(&point) {
            Some(left) if *left > 0 => {
                *left -= 1;
                tracing::warn!(?point, "injected crash");
                Err(Crashed(point))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_crashes_as_often_as_armed() {
        let faults = Faults::default();
        assert!(faults.check(CrashPoint::WorkerBeforeSave).is_ok());
        faults.arm(CrashPoint::WorkerBeforeSave, 2);
        assert!(faults.check(CrashPoint::WorkerAfterFetch).is_ok());
        assert_eq!(
            faults.check(CrashPoint::WorkerBeforeSave),
            Err(Crashed(CrashPoint::WorkerBeforeSave))
        );
        assert!(faults.check(CrashPoint::WorkerBeforeSave).is_err());
        assert!(faults.check(CrashPoint::WorkerBeforeSave).is_ok());
        assert_eq!(faults.remaining(CrashPoint::WorkerBeforeSave), 0);
    }
}
