//! Following a sync run until it ends, with a progress bar.
//!
//! The API reports a run's progress (`GET …/sync`: devices fetched from
//! Apple and imported, and the estimated time left at Apple's pace or the
//! measured one); the bar shows it as it moves. When the token is idle
//! again the run's final record comes from its history (`GET …/runs`).
//! The bar draws on stderr and only on a terminal, so scripts and logs get
//! just the summary line.

use std::time::{Duration, Instant};

use indicatif::{HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{Client, ClientError};
use crate::model::Run;

/// How to follow a run.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between two status reads.
    pub poll: Duration,
    /// Give up after this long. A run holds its lease for 15 minutes, so
    /// the default leaves room for the import after it.
    pub timeout: Duration,
    /// Devices the run is expected to bring: the bar's length until the
    /// run has fetched more.
    pub expected_devices: Option<u64>,
    /// Draw the progress bar (on stderr, when it is a terminal).
    pub show_progress: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            timeout: Duration::from_secs(20 * 60),
            expected_devices: None,
            show_progress: true,
        }
    }
}

/// Why following a run stopped before it ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "run {run_id} of token {token} has not ended after {waited:?}; `adesync sync status {token}` shows where it is"
    )]
    TimedOut {
        token: String,
        run_id: String,
        waited: Duration,
    },
    #[error("token {token} has no run {run_id} in its history")]
    UnknownRun { token: String, run_id: String },
}

/// Status reads in a row that find the token idle while its run's record
/// is not over: the run's lease lapsed (a worker gave up); report it as is.
const IDLE_READS_BEFORE_GIVING_UP: u32 = 3;

/// Follows run `run_id` of `token` until it ends; returns its final record.
pub async fn watch_run(
    client: &Client,
    token: &str,
    run_id: &str,
    options: &WatchOptions,
) -> Result<Run, WatchError> {
    let mut bar = Bar::new(options);
    let started = Instant::now();
    let mut idle_reads = 0;
    loop {
        let status = client.sync_status(token).await?;
        if let Some(run) = status.run.as_ref().filter(|r| r.run_id == run_id) {
            bar.show(run);
            if run.is_over() {
                return Ok(bar.finish(run.clone()));
            }
        }
        if status.state != "running" {
            let runs = client.runs(token, Some(20)).await?;
            match runs.into_iter().find(|r| r.run_id == run_id) {
                Some(run) if run.is_over() => return Ok(bar.finish(run)),
                Some(run) if idle_reads >= IDLE_READS_BEFORE_GIVING_UP => {
                    return Ok(bar.finish(run));
                }
                None if idle_reads >= IDLE_READS_BEFORE_GIVING_UP => {
                    bar.abandon();
                    return Err(WatchError::UnknownRun {
                        token: token.to_owned(),
                        run_id: run_id.to_owned(),
                    });
                }
                _ => idle_reads += 1,
            }
        } else {
            idle_reads = 0;
        }
        if started.elapsed() > options.timeout {
            bar.abandon();
            return Err(WatchError::TimedOut {
                token: token.to_owned(),
                run_id: run_id.to_owned(),
                waited: options.timeout,
            });
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// The progress bar and the measurements behind its rate.
struct Bar {
    bar: ProgressBar,
    expected: u64,
    /// When and at what count importing was first seen, for the rate.
    first_seen: Option<(Instant, u64)>,
}

impl Bar {
    fn new(options: &WatchOptions) -> Self {
        let expected = options.expected_devices.unwrap_or(0);
        let bar = if options.show_progress {
            ProgressBar::with_draw_target(Some(expected.max(1)), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {prefix:>10} [{bar:32}] {human_pos}/{human_len} imported · {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix("sync");
        bar.set_message("waiting for the first devices");
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            expected,
            first_seen: None,
        }
    }

    fn show(&mut self, run: &Run) {
        let now = Instant::now();
        let (since, base) = *self.first_seen.get_or_insert((now, run.imported));
        let seconds = now.duration_since(since).as_secs_f64();
        let rate = (seconds >= 0.5).then(|| run.imported.saturating_sub(base) as f64 / seconds);
        let total = self.expected.max(run.fetched).max(run.imported).max(1);
        self.bar.set_prefix(format!("{} sync", run.kind));
        self.bar.set_length(total);
        self.bar.set_position(run.imported);
        // The rate measured here, once there is one; until then the API's
        // estimate (Apple's pace of about 3,000 devices per minute).
        let left = match rate.filter(|r| *r >= 1.0) {
            Some(rate) => Duration::from_secs_f64(total.saturating_sub(run.imported) as f64 / rate),
            None => Duration::from_secs(run.estimated_seconds_left),
        };
        self.bar.set_message(format!(
            "{} fetched · {} · ETA {}",
            HumanCount(run.fetched),
            rate.map_or_else(
                || "measuring".to_owned(),
                |r| format!("{}/s", HumanCount(r.round() as u64))
            ),
            HumanDuration(left),
        ));
    }

    fn finish(&self, run: Run) -> Run {
        self.bar.set_length(run.fetched.max(run.imported).max(1));
        self.bar.set_position(run.imported);
        self.bar.set_message(run.status.clone());
        self.bar.finish();
        run
    }

    fn abandon(&self) {
        self.bar.abandon();
    }
}

/// One line about a finished run, e.g. "Full sync succeeded: 2,500
/// devices fetched, 2,500 imported in 3.2 s (46,875 devices/min; Apple
/// delivers about 3,000/min)."
pub fn summary(run: &Run) -> String {
    let mut kind = run.kind.clone();
    if let Some(first) = kind.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    let mut line = format!(
        "{kind} sync {}: {} devices fetched, {} imported",
        run.status,
        HumanCount(run.fetched),
        HumanCount(run.imported)
    );
    if let Some(took) = run.duration() {
        let seconds = took.as_secs_f64();
        line.push_str(&format!(" in {seconds:.1} s"));
        if seconds > 0.0 && run.imported > 0 {
            let per_minute = (run.imported as f64 * 60.0 / seconds).round() as u64;
            line.push_str(&format!(
                " ({} devices/min; Apple delivers about 3,000/min)",
                HumanCount(per_minute)
            ));
        }
    }
    line.push('.');
    if let Some(error) = &run.error {
        line.push_str(&format!(" Error: {error}"));
    }
    if let Some(warning) = &run.warning {
        line.push_str(&format!(" Warning: {warning}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(json: serde_json::Value) -> Run {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_summary_names_kind_outcome_counts_and_pace() {
        let done = run(serde_json::json!({
            "run_id": "r1", "kind": "full", "status": "succeeded",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": "2030-01-01T00:00:04Z",
            "fetched": 2500, "imported": 2500,
        }));
        assert_eq!(
            summary(&done),
            "Full sync succeeded: 2,500 devices fetched, 2,500 imported in 4.0 s (37,500 devices/min; Apple delivers about 3,000/min)."
        );
        let failed = run(serde_json::json!({
            "run_id": "r2", "kind": "delta", "status": "failed",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": null,
            "fetched": 0, "imported": 0, "error": "Apple rejected the token.",
        }));
        assert_eq!(
            summary(&failed),
            "Delta sync failed: 0 devices fetched, 0 imported. Error: Apple rejected the token."
        );
    }
}
