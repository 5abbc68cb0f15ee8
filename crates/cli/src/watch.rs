//! Following a sync run until it ends, with a progress bar.
//!
//! The API reports a run's progress (`GET …/sync`: pages and devices
//! fetched from Apple, devices imported, the rate achieved and the time
//! left, or `null` while it cannot tell); the bar shows it as it moves.
//! When the token is idle again the run's final record comes from its
//! history (`GET …/runs`). The bar draws on stderr and only on a terminal,
//! so scripts and logs get just the summary line.
//!
//! A run goes at Apple's pace (about 3,000 devices a minute: over an hour
//! for a large token), so the watch gives up only on a run that stopped
//! moving, not on one that is long.

use std::time::{Duration, Instant};

use adesync_core::run::RunStatus;
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{Client, ClientError};
use crate::model::Run;
use crate::output;

/// How to follow a run.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between two status reads while the run moves.
    pub poll: Duration,
    /// The longest time between two status reads: reads slow down towards
    /// it while nothing moves, so an hour-long run costs a few thousand
    /// requests rather than one every `poll`.
    pub max_poll: Duration,
    /// Give up when the run's counters (fetched, imported, pages) have not
    /// moved for this long. The API abandons a run after 15 minutes
    /// without progress (its lease), so the default outlasts it by a
    /// minute: the watch sees the run end as `abandoned` rather than
    /// giving up on a run the API still counts on.
    pub no_progress_timeout: Duration,
    /// Give up after this long whatever the run does; `None` (the
    /// default) follows a moving run for as long as it takes.
    pub overall_timeout: Option<Duration>,
    /// Devices the run is expected to bring: the bar's length until the
    /// run has fetched more. The API's `expected_devices` of a full sync
    /// comes first.
    pub expected_devices: Option<u64>,
    /// Draw the progress bar (on stderr, when it is a terminal).
    pub show_progress: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            max_poll: Duration::from_secs(5),
            no_progress_timeout: Duration::from_secs(16 * 60),
            overall_timeout: None,
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
        "run {run_id} of token {token} has made no progress for {}; `adesync sync status {token}` shows where it is",
        output::seconds(.idle.as_secs())
    )]
    TimedOut {
        token: String,
        run_id: String,
        /// How long its counters stood still.
        idle: Duration,
    },
    #[error(
        "run {run_id} of token {token} has not ended after {} (the watch's limit); it may still be going: `adesync sync status {token}` shows where it is",
        output::seconds(.waited.as_secs())
    )]
    OverallTimeout {
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
///
/// An API that does not answer, or answers 5xx or 429, is asked again
/// (slower and slower, up to `max_poll`): a blip in an hour-long watch
/// should not lose it. Such reads are not progress, so an API down for
/// `no_progress_timeout` ends the watch with its last error.
pub async fn watch_run(
    client: &Client,
    token: &str,
    run_id: &str,
    options: &WatchOptions,
) -> Result<Run, WatchError> {
    let mut bar = Bar::new(options);
    let started = Instant::now();
    let mut stall = Stall::new(started);
    let mut idle_reads = 0;
    let mut wait = options.poll;
    loop {
        let mut failure = None;
        match read(client, token, run_id, &mut idle_reads).await {
            Ok(Reading::Over(run)) => return Ok(bar.finish(run)),
            Ok(Reading::Going(run)) => {
                if let Some(run) = run {
                    bar.show(&run);
                    if stall.observe(&run, Instant::now()) {
                        wait = options.poll;
                    }
                }
            }
            Ok(Reading::Missing) => {
                bar.abandon();
                return Err(WatchError::UnknownRun {
                    token: token.to_owned(),
                    run_id: run_id.to_owned(),
                });
            }
            Err(error) if is_transient(&error) => {
                bar.unreachable(&error);
                failure = Some(error);
            }
            Err(error) => {
                bar.abandon();
                return Err(error.into());
            }
        }
        let idle = stall.idle(Instant::now());
        if idle > options.no_progress_timeout {
            bar.abandon();
            return Err(match failure {
                Some(error) => error.into(),
                None => WatchError::TimedOut {
                    token: token.to_owned(),
                    run_id: run_id.to_owned(),
                    idle,
                },
            });
        }
        if let Some(cap) = options.overall_timeout
            && started.elapsed() > cap
        {
            bar.abandon();
            return Err(WatchError::OverallTimeout {
                token: token.to_owned(),
                run_id: run_id.to_owned(),
                waited: cap,
            });
        }
        tokio::time::sleep(wait).await;
        wait = wait
            .saturating_mul(2)
            .min(options.max_poll.max(options.poll));
    }
}

/// What one round of reads says about the run.
enum Reading {
    /// It ended (or its record is all there will be): the final record.
    Over(Run),
    /// It is going; its record, when the reads showed it.
    Going(Option<Run>),
    /// The token is idle and its history has no such run.
    Missing,
}

async fn read(
    client: &Client,
    token: &str,
    run_id: &str,
    idle_reads: &mut u32,
) -> Result<Reading, ClientError> {
    let status = client.sync_status(token).await?;
    let current = status.run.filter(|r| r.run_id == run_id);
    if let Some(run) = current.as_ref().filter(|r| r.is_over()) {
        return Ok(Reading::Over(run.clone()));
    }
    if status.state == "running" {
        *idle_reads = 0;
        return Ok(Reading::Going(current));
    }
    let runs = client.runs(token, Some(20)).await?;
    Ok(match runs.into_iter().find(|r| r.run_id == run_id) {
        Some(run) if run.is_over() => Reading::Over(run),
        Some(run) if *idle_reads >= IDLE_READS_BEFORE_GIVING_UP => Reading::Over(run),
        None if *idle_reads >= IDLE_READS_BEFORE_GIVING_UP => Reading::Missing,
        found => {
            *idle_reads += 1;
            Reading::Going(found.or(current))
        }
    })
}

/// No answer, or one saying "not now": worth asking again.
fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } => true,
        ClientError::Api(failure) => failure.status >= 500 || failure.status == 429,
        ClientError::Unexpected { .. } | ClientError::InvalidUrl(_) => false,
    }
}

/// When the run last moved, judged by its counters.
#[derive(Debug)]
struct Stall {
    counters: Option<(u64, u64, u64)>,
    since: Instant,
}

impl Stall {
    fn new(now: Instant) -> Self {
        Self {
            counters: None,
            since: now,
        }
    }

    /// Records a reading of the run; true when it moved since the last one
    /// (the first reading counts: the watch cannot know how long the run
    /// stood still before it).
    fn observe(&mut self, run: &Run, now: Instant) -> bool {
        let counters = (run.fetched, run.imported, run.pages);
        if self.counters == Some(counters) {
            return false;
        }
        self.counters = Some(counters);
        self.since = now;
        true
    }

    /// How long the run has not moved.
    fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }
}

/// The run's total as far as it is known: the devices fetched once
/// fetching has ended; before, the expected count (growing with the
/// fetched one when the token has gained devices); `None` without one.
///
/// The API's `expected_devices` counts the token's devices, which is what a
/// full sync brings but not what a delta does (only the changes), so it
/// only sizes full syncs; the caller's `expected` sizes any run.
pub fn known_total(run: &Run, expected: Option<u64>) -> Option<u64> {
    let fetched = run.fetched.max(run.imported);
    if run.fetch_finished_at.is_some() || run.ended(RunStatus::Importing) || run.is_over() {
        return Some(fetched);
    }
    expected_total(run, expected)
}

/// What the run was expected to bring, never below what it fetched.
fn expected_total(run: &Run, expected: Option<u64>) -> Option<u64> {
    run.expected_devices
        .filter(|_| run.kind == "full")
        .or(expected)
        .map(|expected| expected.max(run.fetched).max(run.imported))
}

/// "3,000 devices/min": the API's measure, else `measured` (devices a
/// minute seen by this watch), else that there is none yet.
pub fn rate_text(run: &Run, measured: Option<u64>) -> String {
    match run.devices_per_minute.or(measured.filter(|m| *m > 0)) {
        Some(rate) => format!("{} devices/min", HumanCount(rate)),
        None => "rate not measured yet".to_owned(),
    }
}

/// "ETA 51 min 40 s", or "ETA unknown" while the API cannot tell.
pub fn eta_text(run: &Run) -> String {
    run.seconds_left().map_or_else(
        || "ETA unknown".to_owned(),
        |left| format!("ETA {}", output::seconds(left)),
    )
}

/// The text after the bar: fetched devices, pages, rate, time left.
pub fn progress_message(run: &Run, total_known: bool, measured: Option<u64>) -> String {
    let mut parts = vec![
        format!("{} fetched", HumanCount(run.fetched)),
        format!(
            "{} page{}",
            HumanCount(run.pages),
            if run.pages == 1 { "" } else { "s" }
        ),
        rate_text(run, measured),
    ];
    if !total_known {
        parts.push("total not known yet".to_owned());
    }
    parts.push(eta_text(run));
    parts.join(" · ")
}

const BAR_TEMPLATE: &str =
    "{spinner} {prefix:>10} [{bar:32}] {human_pos}/{human_len} imported · {msg}";
const SPINNER_TEMPLATE: &str = "{spinner} {prefix:>10} {human_pos} imported · {msg}";

/// The progress bar and the measurements behind its rate.
struct Bar {
    bar: ProgressBar,
    expected: Option<u64>,
    /// When and at what count importing was first seen, for the rate.
    first_seen: Option<(Instant, u64)>,
    /// Whether the bar currently has a length to draw against.
    sized: Option<bool>,
}

impl Bar {
    fn new(options: &WatchOptions) -> Self {
        let target = if options.show_progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self::with_target(options, target)
    }

    fn with_target(options: &WatchOptions, target: ProgressDrawTarget) -> Self {
        // Set up hidden, so the terminal never shows a half-made bar.
        let mut this = Self {
            bar: ProgressBar::hidden(),
            expected: options.expected_devices,
            first_seen: None,
            sized: None,
        };
        this.size(options.expected_devices);
        this.bar.set_prefix("sync");
        this.bar.set_message("waiting for the first devices");
        this.bar.set_draw_target(target);
        this.bar.enable_steady_tick(Duration::from_millis(120));
        this
    }

    /// Draws against `total`, or as a spinner without one.
    fn size(&mut self, total: Option<u64>) {
        let sized = total.is_some();
        if self.sized != Some(sized) {
            let template = if sized {
                BAR_TEMPLATE
            } else {
                SPINNER_TEMPLATE
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                self.bar.set_style(style.progress_chars("=> "));
            }
            self.sized = Some(sized);
        }
        match total {
            Some(total) => self.bar.set_length(total.max(1)),
            None => self.bar.unset_length(),
        }
    }

    fn show(&mut self, run: &Run) {
        let now = Instant::now();
        let (since, base) = *self.first_seen.get_or_insert((now, run.imported));
        let seconds = now.duration_since(since).as_secs_f64();
        let measured = (seconds >= 0.5)
            .then(|| (run.imported.saturating_sub(base) as f64 * 60.0 / seconds).round() as u64);
        let total = known_total(run, self.expected);
        self.bar.set_prefix(format!("{} sync", run.kind));
        self.size(total);
        self.bar.set_position(run.imported);
        self.bar
            .set_message(progress_message(run, total.is_some(), measured));
    }

    fn unreachable(&self, error: &ClientError) {
        self.bar
            .set_message(format!("no answer from the API, asking again: {error}"));
    }

    fn finish(&mut self, run: Run) -> Run {
        let fetched = run.fetched.max(run.imported);
        let succeeded = run.ended(RunStatus::Succeeded);
        // A run that did not succeed stopped short of what it was to bring:
        // the bar shows how short.
        let total = if succeeded {
            fetched
        } else {
            expected_total(&run, self.expected).unwrap_or(fetched)
        };
        self.bar.set_message(run.status.clone());
        self.size(Some(total));
        self.bar.set_position(run.imported);
        if succeeded {
            self.bar.finish();
        } else {
            // Not `finish`, which fills the bar whatever was imported.
            self.bar.abandon();
        }
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
        // Tenths of a second matter to a local run, not to an hour at Apple's pace.
        if seconds < 60.0 {
            line.push_str(&format!(" in {seconds:.1} s"));
        } else {
            line.push_str(&format!(" in {}", output::seconds(took.as_secs())));
        }
        if seconds > 0.0 && run.imported > 0 {
            let per_minute = (run.imported as f64 * 60.0 / seconds).round() as u64;
            line.push_str(&format!(
                " ({} devices/min; Apple delivers about 3,000/min)",
                HumanCount(per_minute)
            ));
        }
    }
    line.push('.');
    if run.ended(RunStatus::Abandoned) && run.error.is_none() {
        line.push_str(ABANDONED);
    }
    if let Some(error) = &run.error {
        line.push_str(&format!(" Error: {error}"));
    }
    if let Some(warning) = &run.warning {
        line.push_str(&format!(" Warning: {warning}"));
    }
    line
}

/// Why an `abandoned` run ended, for when the API gives no error with it.
pub const ABANDONED: &str = " It made no progress for 15 minutes (its lease) and was given up; start a new sync to try again.";

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    fn run(json: serde_json::Value) -> Run {
        serde_json::from_value(json).unwrap()
    }

    /// A full sync of a token that had 200,000 devices, 46,000 in.
    fn known() -> Run {
        run(serde_json::json!({
            "run_id": "r1", "kind": "full", "status": "running",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": null,
            "pages": 46, "fetched": 46000, "imported": 45000,
            "expected_devices": 200000, "devices_per_minute": 3012,
            "estimated_seconds_left": 3100, "lease_expires_at": "2030-01-01T00:30:00Z",
        }))
    }

    /// The first sync of a new token: nothing known but the counts.
    fn unknown() -> Run {
        run(serde_json::json!({
            "run_id": "r2", "kind": "full", "status": "running",
            "started_at": "2030-01-01T00:00:00Z",
            "pages": 5, "fetched": 4500, "imported": 4000,
            "expected_devices": null, "devices_per_minute": null,
            "estimated_seconds_left": null,
        }))
    }

    fn with(mut run: Run, changes: serde_json::Value) -> Run {
        let mut value = serde_json::to_value(&run).unwrap();
        for (key, change) in changes.as_object().unwrap() {
            value[key] = change.clone();
        }
        run = serde_json::from_value(value).unwrap();
        run
    }

    #[test]
    fn the_bar_is_as_long_as_the_best_known_total() {
        assert_eq!(known_total(&known(), None), Some(200_000));
        assert_eq!(
            known_total(&known(), Some(10)),
            Some(200_000),
            "the API's count of the token comes first"
        );
        let grown = with(known(), serde_json::json!({"fetched": 200_500}));
        assert_eq!(known_total(&grown, None), Some(200_500));
        assert_eq!(known_total(&unknown(), None), None);
        assert_eq!(known_total(&unknown(), Some(2500)), Some(4500));
        assert_eq!(known_total(&unknown(), Some(9000)), Some(9000));
        let fetched = with(unknown(), serde_json::json!({"status": "importing"}));
        assert_eq!(
            known_total(&fetched, None),
            Some(4500),
            "fetching has ended"
        );
        let delta = with(known(), serde_json::json!({"kind": "delta", "fetched": 40}));
        assert_eq!(
            known_total(&delta, None),
            None,
            "a delta brings changes, not the token's devices"
        );
    }

    #[test]
    fn the_message_shows_the_apis_eta_rate_and_pages() {
        assert_eq!(
            progress_message(&known(), true, Some(9999)),
            "46,000 fetched · 46 pages · 3,012 devices/min · ETA 51 min 40 s"
        );
        let one_page = with(
            known(),
            serde_json::json!({"pages": 1, "devices_per_minute": null}),
        );
        assert_eq!(
            progress_message(&one_page, true, Some(2950)),
            "46,000 fetched · 1 page · 2,950 devices/min · ETA 51 min 40 s"
        );
    }

    #[test]
    fn an_unknown_total_or_time_left_is_said_not_made_up() {
        assert_eq!(
            progress_message(&unknown(), false, None),
            "4,500 fetched · 5 pages · rate not measured yet · total not known yet · ETA unknown"
        );
        assert_eq!(
            progress_message(&unknown(), false, Some(0)),
            "4,500 fetched · 5 pages · rate not measured yet · total not known yet · ETA unknown",
            "no import seen yet is no rate"
        );
        let zero = with(known(), serde_json::json!({"estimated_seconds_left": 0}));
        assert_eq!(eta_text(&zero), "ETA unknown");
        assert_eq!(
            eta_text(&with(
                known(),
                serde_json::json!({"estimated_seconds_left": 42})
            )),
            "ETA 42 s"
        );
    }

    #[test]
    fn only_counters_that_move_restart_the_no_progress_clock() {
        let t0 = Instant::now();
        let mut stall = Stall::new(t0);
        let minute = Duration::from_secs(60);
        assert!(stall.observe(&known(), t0 + minute));
        assert!(!stall.observe(&known(), t0 + 10 * minute));
        // Another ETA or rate is not progress.
        let same = with(
            known(),
            serde_json::json!({"estimated_seconds_left": 10, "devices_per_minute": 1}),
        );
        assert!(!stall.observe(&same, t0 + 15 * minute));
        assert_eq!(stall.idle(t0 + 17 * minute), 16 * minute);
        for moved in [
            serde_json::json!({"pages": 47}),
            serde_json::json!({"fetched": 47000}),
            serde_json::json!({"imported": 46000}),
        ] {
            let later = t0 + 18 * minute;
            assert!(stall.observe(&with(known(), moved), later));
            assert_eq!(stall.idle(later + minute), minute);
        }
    }

    #[test]
    fn the_default_watch_outlasts_the_lease_and_has_no_overall_cap() {
        let options = WatchOptions::default();
        assert!(options.no_progress_timeout > Duration::from_secs(15 * 60));
        assert_eq!(options.overall_timeout, None);
        let error = WatchError::TimedOut {
            token: "t1".into(),
            run_id: "r1".into(),
            idle: options.no_progress_timeout,
        };
        assert_eq!(
            error.to_string(),
            "run r1 of token t1 has made no progress for 16 min 0 s; `adesync sync status t1` shows where it is"
        );
    }

    #[test]
    fn transient_failures_are_asked_again_and_others_are_not() {
        let failure = |status| {
            ClientError::Api(crate::client::ApiFailure {
                status,
                code: "x".into(),
                message: "x".into(),
                retry_after_seconds: None,
                body: serde_json::Value::Null,
            })
        };
        assert!(is_transient(&failure(503)));
        assert!(is_transient(&failure(429)));
        assert!(!is_transient(&failure(401)));
        assert!(!is_transient(&failure(404)));
        assert!(is_transient(&ClientError::Unreachable {
            url: "u".into(),
            reason: "r".into()
        }));
    }

    /// A terminal that keeps what is drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            200
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.write_str("\n")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The last line `run` leaves on a terminal.
    fn drawn(run: &Run, options: &WatchOptions) -> String {
        let screen = Screen::default();
        let mut bar = Bar::with_target(
            options,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.show(run);
        // Draws at once, whatever the refresh rate allowed before.
        bar.abandon();
        last_line(&screen)
    }

    /// The last line `bar` left on `screen`.
    fn last_line(screen: &Screen) -> String {
        let text = screen.0.lock().unwrap().clone();
        text.lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    #[test]
    fn a_run_that_ends_short_keeps_its_expected_length() {
        let options = WatchOptions::default();
        let ended = |status: &str| {
            let screen = Screen::default();
            let mut bar = Bar::with_target(
                &options,
                ProgressDrawTarget::term_like(Box::new(screen.clone())),
            );
            bar.show(&known());
            bar.finish(with(
                known(),
                serde_json::json!({"status": status, "fetched": 60000, "imported": 60000}),
            ));
            last_line(&screen)
        };
        let line = ended("abandoned");
        assert!(
            line.ends_with("60,000/200,000 imported · abandoned"),
            "{line}"
        );
        let line = ended("succeeded");
        assert!(
            line.ends_with("60,000/60,000 imported · succeeded"),
            "{line}"
        );
    }

    #[test]
    fn the_bar_draws_a_bar_or_a_spinner() {
        let options = WatchOptions::default();
        let line = drawn(&known(), &options);
        assert!(
            line.contains("full sync [")
                && line.ends_with(
                    "45,000/200,000 imported · 46,000 fetched · 46 pages · 3,012 devices/min · ETA 51 min 40 s"
                ),
            "{line}"
        );
        let line = drawn(&unknown(), &options);
        assert!(
            !line.contains('[')
                && line.ends_with(
                    "full sync 4,000 imported · 4,500 fetched · 5 pages · rate not measured yet · total not known yet · ETA unknown"
                ),
            "{line}"
        );
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

    #[test]
    fn an_abandoned_run_is_reported_as_such() {
        let abandoned = run(serde_json::json!({
            "run_id": "r3", "kind": "full", "status": "abandoned",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": "2030-01-01T00:40:00Z",
            "fetched": 60000, "imported": 60000, "estimated_seconds_left": null,
        }));
        assert!(abandoned.is_over());
        assert_eq!(
            summary(&abandoned),
            "Full sync abandoned: 60,000 devices fetched, 60,000 imported in 40 min 0 s (1,500 devices/min; Apple delivers about 3,000/min). It made no progress for 15 minutes (its lease) and was given up; start a new sync to try again."
        );
    }
}
