//! `adesync-local reliability`: the fault matrix of issue 9, run and
//! written down.
//!
//! The matrix below names, for every row of the issue, the tests that prove
//! it. The command runs exactly those tests against one local AWS (one
//! `cargo test` per test target, each name filtered with `--exact`), counts
//! the cases every property test really tried, fuzzes the HTTP API from
//! docs/openapi.yaml with schemathesis, and writes docs/reliability.md from
//! what happened. A row whose test fails — or does not run, say because it
//! was renamed — fails the command: the document can only say "ok" for a
//! test that ran and passed in that run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use adesync_local::emulators::LocalAws;
use adesync_local::tools::{self, Workspace};
use anyhow::{Context, Result, bail};

/// Where a test lives: a package and one of its test targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub package: &'static str,
    /// `None`: the library's unit tests; `Some(name)`: `tests/<name>.rs`.
    pub test: Option<&'static str>,
    /// Where its sources are, relative to the checkout (for the check that
    /// every named test exists).
    pub sources: &'static str,
}

impl Target {
    /// The `cargo test` invocation that runs this target. Always with
    /// `--workspace`, so features resolve as in the one build of every
    /// test (`cargo test -p` would resolve them per package and rebuild);
    /// test file names are unique in the workspace, and the libraries'
    /// unit tests run as one group, each name filtered with `--exact`.
    fn selection(&self) -> Selection {
        match self.test {
            Some(test) => Selection::Test(test),
            None => Selection::Libs,
        }
    }

    fn label(&self) -> String {
        match self.test {
            Some(test) => format!("{} --test {test}", self.package),
            None => format!("{} --lib", self.package),
        }
    }
}

/// One `cargo test` invocation of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Selection {
    Test(&'static str),
    Libs,
}

impl Selection {
    fn cargo_args(&self) -> Vec<&'static str> {
        match self {
            Selection::Test(test) => vec!["--workspace", "--test", test],
            Selection::Libs => vec!["--workspace", "--lib"],
        }
    }

    fn label(&self) -> String {
        match self {
            Selection::Test(test) => format!("--test {test}"),
            Selection::Libs => "--lib".to_owned(),
        }
    }
}

const E2E: &str = "tests/tests";

const APPLE_FAULTS: Target = e2e("apple_faults");
const FAULTS: Target = e2e("faults");
const CLAIMS: Target = e2e("claims");
const RACES: Target = e2e("races");
const TOKENS: Target = e2e("tokens");
const POLICIES: Target = e2e("policies");
const SECURITY: Target = e2e("security");
const EVENTS: Target = e2e("events");
const SYNC: Target = e2e("sync");
const ENROLLMENT: Target = e2e("enrollment");
const LONG_RUNS: Target = e2e("long_runs");
const TOKENFILE_ROBUSTNESS: Target = Target {
    package: "adesync-tokenfile",
    test: Some("robustness"),
    sources: "crates/tokenfile/tests",
};
const TOKENFILE_REFUSALS: Target = Target {
    package: "adesync-tokenfile",
    test: Some("refusals"),
    sources: "crates/tokenfile/tests",
};
const APPLE_HOSTILE: Target = Target {
    package: "adesync-apple",
    test: Some("hostile"),
    sources: "crates/apple/tests",
};
const APPLE_SIMULATOR: Target = Target {
    package: "adesync-apple",
    test: Some("simulator"),
    sources: "crates/apple/tests",
};
const APPLE_LOGS: Target = Target {
    package: "adesync-apple",
    test: Some("logs"),
    sources: "crates/apple/tests",
};
const APPLE_CLIENT: Target = Target {
    package: "adesync-apple",
    test: None,
    sources: "crates/apple/src",
};
const CORE: Target = Target {
    package: "adesync-core",
    test: None,
    sources: "crates/core/src",
};
const SECRETS: Target = Target {
    package: "adesync-secrets",
    test: None,
    sources: "crates/secrets/src",
};
const LOCAL_LIB: Target = Target {
    package: "adesync-local",
    test: None,
    sources: "infra/local/src",
};
const RUNTIME: Target = Target {
    package: "adesync-runtime",
    test: None,
    sources: "crates/runtime/src",
};

const fn e2e(test: &'static str) -> Target {
    Target {
        package: "adesync-tests",
        test: Some(test),
        sources: E2E,
    }
}

/// One test: its target and its full libtest name (`module::path::name`).
#[derive(Debug, Clone, Copy)]
pub struct TestRef {
    pub target: Target,
    pub name: &'static str,
}

const fn t(target: Target, name: &'static str) -> TestRef {
    TestRef { target, name }
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub group: &'static str,
    pub row: &'static str,
    pub tests: &'static [TestRef],
}

const fn row(group: &'static str, row: &'static str, tests: &'static [TestRef]) -> Row {
    Row { group, row, tests }
}

const APPLE: &str = "Apple";
const OURS: &str = "Our side";
const CONCURRENCY: &str = "Concurrency";
const BAD_INPUT: &str = "Bad input";
const SECURITY_GROUP: &str = "Security";

/// The fault matrix of issue 9: every row and the tests that prove it. The
/// end-to-end rows each assert, afterwards, that every device is present
/// once with its newest state, the counters match, nothing removed came
/// back, and the token's status and run history say what happened.
pub const MATRIX: &[Row] = &[
    row(
        APPLE,
        "401 mid-run",
        &[t(
            APPLE_FAULTS,
            "a_401_during_a_run_reauthenticates_once_and_the_run_continues",
        )],
    ),
    row(
        APPLE,
        "403 T_C_NOT_SIGNED",
        &[t(
            APPLE_FAULTS,
            "terms_not_signed_marks_the_token_keeps_the_devices_and_clears_on_the_next_success",
        )],
    ),
    row(
        APPLE,
        "403 FORBIDDEN after re-download",
        &[t(
            APPLE_FAULTS,
            "forbidden_after_a_redownload_marks_the_token_invalid_and_keeps_the_devices",
        )],
    ),
    row(
        APPLE,
        "429 with Retry-After",
        &[t(APPLE_FAULTS, "a_429_with_retry_after_is_honoured")],
    ),
    row(
        APPLE,
        "500/503 bursts",
        &[
            t(APPLE_FAULTS, "bursts_of_server_errors_are_retried"),
            t(
                SYNC,
                "a_delta_failing_with_server_errors_makes_the_next_sync_full",
            ),
        ],
    ),
    row(
        APPLE,
        "Responses slower than the client timeout",
        &[t(
            APPLE_FAULTS,
            "a_response_slower_than_the_client_timeout_is_retried",
        )],
    ),
    row(
        APPLE,
        "EXPIRED_CURSOR",
        &[t(
            APPLE_FAULTS,
            "an_expired_cursor_turns_the_delta_into_a_full_sync_that_sweeps",
        )],
    ),
    row(
        APPLE,
        "INVALID_CURSOR",
        &[t(
            APPLE_FAULTS,
            "an_invalid_cursor_turns_the_delta_into_a_full_sync",
        )],
    ),
    row(
        APPLE,
        "EXHAUSTED_CURSOR",
        &[t(
            APPLE_FAULTS,
            "an_exhausted_cursor_on_sync_keeps_the_cursor_and_says_so",
        )],
    ),
    row(
        APPLE,
        "EXHAUSTED_CURSOR in the middle of a full fetch → nothing released, the next sync fetches afresh",
        &[t(
            APPLE_FAULTS,
            "an_exhausted_cursor_in_the_middle_of_a_fetch_releases_nothing",
        )],
    ),
    row(
        APPLE,
        "The same cursor echoed with more_to_follow",
        &[
            t(
                APPLE_FAULTS,
                "the_same_cursor_echoed_with_more_to_follow_stops_the_run_without_looping",
            ),
            t(CORE, "cursor::tests::terminates::any_answers_end_the_walk"),
        ],
    ),
    row(
        APPLE,
        "One device's optional field unreadable → the field left out, the page imports, the run says so",
        &[
            t(
                APPLE_FAULTS,
                "an_unreadable_optional_field_is_left_out_and_the_page_still_imports",
            ),
            t(
                APPLE_CLIENT,
                "model::tests::an_unreadable_optional_time_drops_that_field_not_the_page",
            ),
        ],
    ),
    row(
        APPLE,
        "401/403 without a reason (empty or HTML body) → retried; the token marked invalid only after 3 failed runs in a row",
        &[
            t(
                APPLE_FAULTS,
                "refusals_without_a_reason_are_retried_and_mark_the_token_only_when_they_persist",
            ),
            t(
                APPLE_CLIENT,
                "error::tests::refusals_without_a_reason_are_retried_and_say_nothing_of_the_token",
            ),
        ],
    ),
    row(
        APPLE,
        "An assignment answer without profile_uuid → each device recorded assigned",
        &[t(
            POLICIES,
            "an_assignment_answer_without_profile_uuid_still_records_each_device",
        )],
    ),
    row(
        APPLE,
        "A fetch cursor echoed in the middle of a snapshot → dropped, the next sync fetches afresh",
        &[t(
            APPLE_FAULTS,
            "an_echoed_cursor_in_the_middle_of_a_fetch_is_dropped_and_the_next_sync_fetches_afresh",
        )],
    ),
    row(
        APPLE,
        "Apple ends older sessions on each /session; two functions find the session stale at once → one renewal, shared",
        &[
            t(
                APPLE_FAULTS,
                "functions_that_find_the_session_stale_at_once_share_one_renewal",
            ),
            t(CLAIMS, "one_renewal_of_a_tokens_apple_session_at_a_time"),
        ],
    ),
    row(
        APPLE,
        "A device released because Apple replaced it → removed, released_by_replacement shown",
        &[
            t(
                APPLE_FAULTS,
                "a_device_released_by_replacement_is_removed_and_says_so",
            ),
            t(
                CORE,
                "device::tests::a_release_by_replacement_is_remembered_until_the_device_returns",
            ),
        ],
    ),
    row(
        APPLE,
        "Apple's documented bodies and error bodies: the client reads each; the simulator answers in the same shapes",
        &[
            t(
                APPLE_SIMULATOR,
                "conformance::the_client_reads_every_documented_body_and_models_every_field",
            ),
            t(
                APPLE_SIMULATOR,
                "conformance::the_client_reads_every_documented_error_body",
            ),
            t(
                APPLE_SIMULATOR,
                "conformance::the_simulator_answers_in_apples_documented_shapes",
            ),
        ],
    ),
    row(
        OURS,
        "Worker killed at each step",
        &[
            t(FAULTS, "the_worker_killed_after_a_fetch_loses_nothing"),
            t(
                FAULTS,
                "the_worker_killed_after_part_of_a_pages_batches_loses_nothing",
            ),
            t(
                FAULTS,
                "the_worker_killed_after_sending_batches_before_saving_its_cursor_loses_nothing",
            ),
        ],
    ),
    row(
        OURS,
        "A run longer than its 15-minute lease at Apple's pace; a worker killed at its timeout mid-fetch; a page too slow for its wait",
        &[
            t(
                LONG_RUNS,
                "a_first_full_sync_longer_than_the_lease_completes_at_apples_pace_and_tells_the_truth",
            ),
            t(
                LONG_RUNS,
                "a_worker_killed_mid_fetch_is_redelivered_and_a_slow_page_is_asked_smaller",
            ),
            t(
                CLAIMS,
                "a_marked_batch_renews_the_lease_and_a_lapsed_run_is_settled_once",
            ),
        ],
    ),
    row(
        OURS,
        "A run stuck for 15 minutes: recorded abandoned when noticed, the owed full sync follows",
        &[
            t(
                LONG_RUNS,
                "a_stuck_run_is_recorded_abandoned_by_the_next_scheduler_pass_and_a_full_sync_follows",
            ),
            t(
                LONG_RUNS,
                "the_status_read_records_a_stuck_run_abandoned_at_once",
            ),
        ],
    ),
    row(
        OURS,
        "A scheduled pass page by page: every token reached, malformed items logged and skipped",
        &[t(
            SYNC,
            "a_pass_reaches_every_token_page_by_page_past_malformed_items",
        )],
    ),
    row(
        OURS,
        "Importer killed mid-batch, before marking, between parts of a close",
        &[
            t(FAULTS, "the_importer_killed_mid_batch_loses_nothing"),
            t(
                FAULTS,
                "the_importer_killed_before_marking_a_batch_counts_it_once",
            ),
            t(
                FAULTS,
                "the_importer_killed_between_parts_of_a_runs_close_counts_every_device_once",
            ),
        ],
    ),
    row(
        OURS,
        "A token deleted while its batch is applied",
        &[t(
            FAULTS,
            "a_batch_applied_after_its_token_was_deleted_leaves_no_device",
        )],
    ),
    row(
        OURS,
        "Every batch delivered twice; batches reversed",
        &[
            t(
                FAULTS,
                "duplicate_and_reordered_batches_leave_the_newest_state",
            ),
            t(
                CORE,
                "device::tests::properties::any_order_with_duplicates_converges",
            ),
            t(CORE, "device::tests::properties::any_batching_converges"),
        ],
    ),
    row(
        OURS,
        "Poison batch → dead-letter queue",
        &[
            t(
                FAULTS,
                "a_poison_batch_goes_to_the_dead_letter_queue_and_the_run_reports_it",
            ),
            t(EVENTS, "consumers_report_only_the_poison_record_of_a_batch"),
        ],
    ),
    row(
        OURS,
        "DynamoDB throttling injected",
        &[t(
            FAULTS,
            "dynamodb_throttling_is_retried_and_loses_nothing",
        )],
    ),
    row(
        OURS,
        "A lease that expires while its worker still runs",
        &[
            t(
                FAULTS,
                "a_worker_whose_lease_lapsed_cannot_overwrite_the_run_that_took_over",
            ),
            t(
                CLAIMS,
                "one_sync_at_a_time_and_an_abandoned_lease_lets_the_next_one_in",
            ),
        ],
    ),
    row(
        CONCURRENCY,
        "100 parallel manual sync requests → exactly one 202",
        &[t(
            CLAIMS,
            "a_hundred_parallel_manual_syncs_start_exactly_one_run",
        )],
    ),
    row(
        CONCURRENCY,
        "A sync job delivered twice at once → one walker",
        &[
            t(
                LONG_RUNS,
                "a_duplicate_delivery_of_a_sync_job_cannot_advance_the_run",
            ),
            t(
                CLAIMS,
                "only_the_walker_holding_the_slot_saves_a_page_and_renews_the_lease",
            ),
        ],
    ),
    row(
        CONCURRENCY,
        "An assignment job delivered twice at once → one profile defined, each device assigned once",
        &[
            t(
                POLICIES,
                "two_assignment_jobs_at_once_define_one_profile_and_assign_each_device_once",
            ),
            t(
                CLAIMS,
                "one_assigner_per_token_until_its_deadline_or_release",
            ),
        ],
    ),
    row(
        CONCURRENCY,
        "Token create at the 2,000 limit",
        &[t(
            TOKENS,
            "at_most_2000_tokens_even_when_five_are_created_at_once",
        )],
    ),
    row(
        CONCURRENCY,
        "Policy create at the 1,000 limit",
        &[t(
            POLICIES,
            "a_token_holds_at_most_1000_policies_even_under_concurrent_creates",
        )],
    ),
    row(
        CONCURRENCY,
        "Renew racing delete",
        &[t(
            RACES,
            "renewal_racing_deletion_leaves_either_a_renewed_token_or_none",
        )],
    ),
    row(
        CONCURRENCY,
        "Delete racing an import",
        &[t(RACES, "deletion_racing_an_import_never_orphans_a_device")],
    ),
    row(
        BAD_INPUT,
        "The .p7m token file parser: property tests, never a panic",
        &[
            t(TOKENFILE_ROBUSTNESS, "random_bytes_are_refused"),
            t(TOKENFILE_ROBUSTNESS, "random_ber_is_refused"),
            t(
                TOKENFILE_ROBUSTNESS,
                "random_text_behind_headers_is_refused",
            ),
            t(TOKENFILE_ROBUSTNESS, "truncated_files_are_refused"),
            t(TOKENFILE_ROBUSTNESS, "bit_flips_never_panic"),
            t(
                TOKENFILE_ROBUSTNESS,
                "flips_in_the_cms_structure_are_refused_or_harmless",
            ),
            t(
                SECRETS,
                "sealed::tests::from_bytes_never_panics_and_round_trips_what_it_accepts",
            ),
            t(
                SECRETS,
                "sealed::tests::framed_bytes_never_panic_and_round_trip_what_is_accepted",
            ),
        ],
    ),
    row(
        BAD_INPUT,
        "The Apple response parser: any status, any bytes, never a panic or a hang",
        &[t(APPLE_HOSTILE, "no_answer_makes_a_call_panic_or_hang")],
    ),
    row(BAD_INPUT, API_FUZZ_ROW, &[]),
    row(
        SECURITY_GROUP,
        "Another account's objects: 404 on every route",
        &[
            t(
                SECURITY,
                "another_accounts_objects_are_not_found_on_every_route",
            ),
            t(
                ENROLLMENT,
                "enrollment_finds_the_device_only_in_the_callers_account",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "Roles: 403 on every write",
        &[t(SECURITY, "readers_may_read_but_every_write_is_forbidden")],
    ),
    row(
        SECURITY_GROUP,
        "No secret in logs, errors or answers (every end-to-end test also checks its logs when it ends)",
        &[
            t(
                TOKENS,
                "a_token_is_created_renewed_and_deleted_without_a_secret_in_any_answer",
            ),
            t(APPLE_LOGS, "secrets_stay_out_of_logs_and_errors"),
            t(TOKENFILE_REFUSALS, "nothing_shown_contains_a_secret"),
            t(
                RUNTIME,
                "http::tests::internal_errors_do_not_leak_their_cause",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "Body size limits",
        &[
            t(SECURITY, "bad_bodies_are_refused_with_nothing_stored"),
            t(
                SECURITY,
                "an_oversized_body_is_the_contracts_413_on_every_route_and_changes_nothing",
            ),
            t(
                RUNTIME,
                "http::tests::every_rejection_answers_in_the_contracts_shape",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "Panics answered 500 without details",
        &[
            t(
                RUNTIME,
                "http::tests::a_panicking_handler_answers_500_without_details",
            ),
            t(
                RUNTIME,
                "sqs::tests::only_failed_and_panicking_records_are_reported",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "IAM: every AWS call a function makes is granted by template.yaml (role and KMS key policy, by purpose); see the IAM section",
        &[
            t(
                LOCAL_LIB,
                "iam::tests::a_call_outside_the_role_or_the_key_policy_is_denied",
            ),
            t(
                LOCAL_LIB,
                "iam::tests::requests_read_as_the_iam_actions_they_need",
            ),
            t(LOCAL_LIB, "iam::tests::the_projects_template_expands"),
        ],
    ),
    row(
        SECURITY_GROUP,
        "Token files that do not open get one answer (no padding oracle) and store nothing",
        &[
            t(
                SECURITY,
                "token_files_that_do_not_open_get_one_answer_and_store_nothing",
            ),
            t(
                TOKENFILE_REFUSALS,
                "a_file_for_another_key_is_undecryptable",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "Near-miss roles (Admin, administrator, admin␠) grant nothing, through the runner and API Gateway events",
        &[
            t(SECURITY, "near_miss_roles_grant_nothing_on_every_route"),
            t(
                EVENTS,
                "api_gateway_events_with_near_miss_roles_are_forbidden_on_every_function",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "The SCEP challenge: only to an admin or a DEM, shown once, stored as its SHA-256",
        &[
            t(
                ENROLLMENT,
                "only_an_admin_or_a_dem_receives_a_scep_challenge",
            ),
            t(
                ENROLLMENT,
                "a_scep_challenge_is_shown_once_and_only_its_sha256_is_stored",
            ),
            t(
                ENROLLMENT,
                "downloads_at_the_same_moment_each_get_a_challenge_and_the_last_holds",
            ),
        ],
    ),
    row(
        SECURITY_GROUP,
        "Local runner: issuer and audience checked, loopback only, /_dev only from this machine",
        &[
            t(
                SECURITY,
                "no_token_bad_token_or_expired_token_is_401_everywhere",
            ),
            t(
                LOCAL_LIB,
                "runner::tests::the_control_routes_answer_only_this_machine",
            ),
            t(
                LOCAL_LIB,
                "runner::tests::only_loopback_addresses_unless_told_otherwise",
            ),
        ],
    ),
];

/// The row the schemathesis step proves (it names no cargo test).
const API_FUZZ_ROW: &str = "The HTTP API fuzzed from docs/openapi.yaml (schemathesis): never a 5xx, answers as documented, never a write on a 4xx";

/// Targets whose tests are property tests: run with proptest's trace on so
/// every case tried is counted (`PROPTEST_VERBOSE=2` prints "Test case
/// passed" per case; hand-rolled loops print `cases tried: N`).
fn is_fuzz_target(target: &Target) -> bool {
    [TOKENFILE_ROBUSTNESS, APPLE_HOSTILE, CORE, SECRETS].contains(target)
}

fn is_fuzz_selection(selection: Selection) -> bool {
    MATRIX
        .iter()
        .flat_map(|row| row.tests)
        .any(|test| test.target.selection() == selection && is_fuzz_target(&test.target))
}

/// What libtest said about one test.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// `ok`, `FAILED` or `ignored`.
    pub result: String,
    pub seconds: Option<f64>,
    /// Property-test cases that ran and passed.
    pub cases: Option<u64>,
}

/// Reads libtest's text output (one test thread, so each test's
/// `test NAME ... ` comes right before its output and result).
#[derive(Debug, Default)]
pub struct LibtestParser {
    current: Option<(String, Instant)>,
    pub outcomes: BTreeMap<String, Outcome>,
    cases: BTreeMap<String, u64>,
}

impl LibtestParser {
    /// A test announced itself but its line is not complete yet: its clock
    /// starts now (the line ends only with its result).
    fn started(&mut self, partial: &str) {
        if let Some(name) = Self::announced(partial)
            && self.current.as_ref().is_none_or(|(n, _)| n != name)
        {
            self.current = Some((name.to_owned(), Instant::now()));
        }
    }

    fn announced(line: &str) -> Option<&str> {
        let rest = line.strip_prefix("test ")?;
        let (name, _) = rest.split_once(" ... ")?;
        (!name.contains(' ')).then_some(name)
    }

    /// One complete line of output.
    pub fn line(&mut self, line: &str) {
        let mut rest = line;
        if let Some(name) = Self::announced(line) {
            self.started(line);
            rest = &line["test ".len() + name.len() + " ... ".len()..];
        }
        let rest = rest.trim_end();
        let Some((name, since)) = self.current.clone() else {
            return;
        };
        if rest == "proptest: Test case passed" {
            *self.cases.entry(name).or_default() += 1;
        } else if let Some(n) = rest.strip_prefix("cases tried: ") {
            if let Ok(n) = n.trim().parse::<u64>() {
                *self.cases.entry(name).or_default() += n;
            }
        } else if let Some(result) = ["ok", "FAILED", "ignored"]
            .into_iter()
            .find(|r| rest == *r || rest.starts_with(&format!("{r}, ")))
        {
            self.outcomes.insert(
                name.clone(),
                Outcome {
                    result: result.to_owned(),
                    seconds: Some(since.elapsed().as_secs_f64()),
                    cases: self.cases.get(&name).copied(),
                },
            );
            self.current = None;
        }
    }
}

/// Runs one selection's matrix tests; returns each test's outcome.
fn run_selection(
    root: &Path,
    env: &[(&'static str, String)],
    selection: Selection,
    names: &BTreeSet<&'static str>,
) -> Result<(BTreeMap<String, Outcome>, Duration)> {
    let fuzz = is_fuzz_selection(selection);
    let mut command = tools::cargo();
    command
        .arg("test")
        .args(selection.cargo_args())
        .arg("--")
        .arg("--exact")
        // One at a time: each test's time is its own, and its output sits
        // between its name and its result.
        .arg("--test-threads=1")
        .args(names.iter())
        .current_dir(root)
        .stdin(Stdio::null());
    if fuzz {
        command.arg("--nocapture").env("PROPTEST_VERBOSE", "2");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    // stdout and stderr into one pipe, so proptest's lines (stderr) stay in
    // order with libtest's (stdout).
    let (mut reader, writer) = std::io::pipe()?;
    command.stdout(writer.try_clone()?).stderr(writer);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start cargo test {}", selection.label()))?;
    drop(command);
    let mut parser = LibtestParser::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut shown_failure = false;
    loop {
        let read = reader.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            parser.line(&line);
            // Proptest's trace is for counting; everything else is worth
            // showing (compiler messages, failures).
            if !line.starts_with("proptest: ")
                && !line.contains("... proptest: ")
                && (!fuzz || !line.starts_with("cases tried"))
            {
                if line.contains("FAILED") || line.starts_with("failures:") {
                    shown_failure = true;
                }
                eprint!("    {line}");
            }
        }
        if !pending.is_empty() {
            parser.started(&String::from_utf8_lossy(&pending));
        }
    }
    if !pending.is_empty() {
        parser.line(&String::from_utf8_lossy(&pending));
    }
    let status = child.wait()?;
    if !status.success() && !shown_failure && parser.outcomes.is_empty() {
        bail!(
            "cargo test {} exited with {status} before running a test",
            selection.label()
        );
    }
    Ok((parser.outcomes, started.elapsed()))
}

/// What every test of the matrix gave.
#[derive(Debug, Default)]
pub struct Results {
    pub outcomes: BTreeMap<(Target, &'static str), Outcome>,
    pub targets: Vec<(String, Duration)>,
}

impl Results {
    fn outcome(&self, test: &TestRef) -> Option<&Outcome> {
        self.outcomes.get(&(test.target, test.name))
    }

    /// A row passes when every one of its tests ran and passed.
    fn row_passed(&self, row: &Row) -> bool {
        row.tests
            .iter()
            .all(|test| self.outcome(test).is_some_and(|o| o.result == "ok"))
    }
}

/// Runs every test of the matrix, one `cargo test` per selection.
pub fn run_matrix(root: &Path, env: &[(&'static str, String)]) -> Result<Results> {
    let mut by_selection: BTreeMap<Selection, BTreeSet<&'static str>> = BTreeMap::new();
    for test in MATRIX.iter().flat_map(|row| row.tests) {
        by_selection
            .entry(test.target.selection())
            .or_default()
            .insert(test.name);
    }
    let mut results = Results::default();
    for (selection, names) in &by_selection {
        eprintln!(
            "==> cargo test {} ({} tests of the matrix)",
            selection.label(),
            names.len()
        );
        let (outcomes, took) = run_selection(root, env, *selection, names)?;
        eprintln!("    {} in {took:.1?}", selection.label());
        for test in MATRIX.iter().flat_map(|row| row.tests) {
            if test.target.selection() == *selection
                && let Some(outcome) = outcomes.get(test.name)
            {
                results
                    .outcomes
                    .insert((test.target, test.name), outcome.clone());
            }
        }
        results.targets.push((selection.label(), took));
    }
    Ok(results)
}

/// Every test named in the matrix that has no `fn <name>(` in its
/// target's sources (a renamed or deleted test).
pub fn missing_tests(root: &Path) -> Result<Vec<String>> {
    let mut sources: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut missing = Vec::new();
    for test in MATRIX.iter().flat_map(|row| row.tests) {
        let text = match sources.get(test.target.sources) {
            Some(text) => text,
            None => {
                let mut text = String::new();
                read_rust_sources(&root.join(test.target.sources), &mut text)?;
                sources.entry(test.target.sources).or_insert(text)
            }
        };
        let fn_name = test.name.rsplit("::").next().unwrap_or(test.name);
        if !text.contains(&format!("fn {fn_name}(")) {
            missing.push(format!("{} ({})", test.name, test.target.label()));
        }
    }
    Ok(missing)
}

fn read_rust_sources(dir: &Path, into: &mut String) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            read_rust_sources(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path)?);
            into.push('\n');
        }
    }
    Ok(())
}

/// The figures of the schemathesis runs.
#[derive(Debug, Clone, Default)]
pub struct ApiFuzz {
    /// One entry per run: what it checked and how it went.
    pub runs: Vec<ApiFuzzRun>,
    /// Whether the tables were byte-for-byte the same after the run of
    /// only-invalid requests (None: that run did not happen).
    pub unchanged_after_negative: Option<bool>,
    /// Why the step could not run, if it could not.
    pub error: Option<String>,
    /// The AWS calls the functions made while fuzzed: error paths the
    /// tests may not reach, held against the template's IAM too.
    pub aws_calls: Vec<adesync_local::iam::AwsCall>,
}

#[derive(Debug, Clone, Default)]
pub struct ApiFuzzRun {
    pub name: String,
    pub mode: String,
    pub checks: String,
    pub operations: usize,
    pub cases: u64,
    pub seconds: f64,
    pub passed: bool,
    /// The failures schemathesis reported, shortened.
    pub failures: Vec<String>,
}

impl ApiFuzz {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && !self.runs.is_empty()
            && self.runs.iter().all(|r| r.passed)
            && self.unchanged_after_negative == Some(true)
    }
}

/// Facts about this run for the document's head.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub total: Duration,
    pub build: Duration,
}

/// docs/reliability.md, from the results.
/// The IAM check over every AWS call the matrix's tests made.
#[derive(Debug, Clone, Default)]
pub struct IamCheck {
    /// The section's text (`adesync_local::iam::render`).
    pub section: String,
    /// Calls template.yaml would deny.
    pub denied: usize,
}

pub fn render(info: &RunInfo, results: &Results, api: &ApiFuzz, iam: &IamCheck) -> String {
    let mut doc = String::new();
    let rows_passed = MATRIX
        .iter()
        .filter(|row| {
            if row.tests.is_empty() {
                api.passed()
            } else {
                results.row_passed(row)
            }
        })
        .count();
    let _ = writeln!(doc, "# Reliability: the fault matrix\n");
    let _ = writeln!(
        doc,
        "Generated by `cargo run -p adesync-local -- reliability` from the test run below; do not edit by hand. \
         Every row names the tests that prove it; a row is **ok** only when each of its tests ran and passed in this run. \
         The end-to-end rows run against the local AWS (DynamoDB Local, moto), the Apple simulator with fault injection and every function; \
         each asserts afterwards that every device is present exactly once with its newest state, the counters match, \
         no removed device came back, and the token's status and run history say what happened.\n"
    );
    let _ = writeln!(doc, "| | |\n| --- | --- |");
    let _ = writeln!(doc, "| Date (UTC) | {} |", info.date);
    let _ = writeln!(doc, "| Commit | {} |", info.commit);
    let _ = writeln!(doc, "| Machine | {} |", info.machine);
    let _ = writeln!(
        doc,
        "| Total time | {} (building the tests: {}) |",
        secs(info.total.as_secs_f64()),
        secs(info.build.as_secs_f64())
    );
    let _ = writeln!(doc, "| Rows | {rows_passed} of {} ok |\n", MATRIX.len());

    let _ = writeln!(doc, "## The matrix\n");
    let _ = writeln!(doc, "| Group | Row | Test | Result | Time |");
    let _ = writeln!(doc, "| --- | --- | --- | --- | --- |");
    for row in MATRIX {
        if row.tests.is_empty() {
            let result = if api.passed() { "ok" } else { "**FAILED**" };
            let took: f64 = api.runs.iter().map(|r| r.seconds).sum();
            let _ = writeln!(
                doc,
                "| {} | {} | schemathesis, see [below](#http-api-fuzzing) | {result} | {} |",
                row.group,
                row.row,
                secs(took)
            );
            continue;
        }
        for (i, test) in row.tests.iter().enumerate() {
            let (group, what) = if i == 0 {
                (row.group, row.row)
            } else {
                ("", "")
            };
            let (result, took) = match results.outcome(test) {
                Some(o) if o.result == "ok" => ("ok".to_owned(), o.seconds),
                Some(o) => (format!("**{}**", o.result), o.seconds),
                None => ("**did not run**".to_owned(), None),
            };
            let _ = writeln!(
                doc,
                "| {group} | {what} | `{}` `{}` | {result} | {} |",
                target_short(&test.target),
                test.name,
                took.map(secs).unwrap_or_default()
            );
        }
    }

    let _ = writeln!(doc, "\n## Property tests and fuzzing\n");
    let _ = writeln!(
        doc,
        "Cases tried are counted from the run itself: proptest's trace (`PROPTEST_VERBOSE=2`) prints one line per case that passed, \
         and the hand-rolled loop of the Apple client test prints `cases tried: N`.\n"
    );
    let _ = writeln!(doc, "| Target | Test | Cases tried | Time | Result |");
    let _ = writeln!(doc, "| --- | --- | ---: | ---: | --- |");
    let mut fuzz_cases = 0;
    let mut fuzz_secs = 0.0;
    let mut seen = BTreeSet::new();
    for test in MATRIX.iter().flat_map(|row| row.tests) {
        if !is_fuzz_target(&test.target) || !seen.insert((test.target, test.name)) {
            continue;
        }
        let outcome = results.outcome(test);
        let cases = outcome.and_then(|o| o.cases).unwrap_or(0);
        let took = outcome.and_then(|o| o.seconds).unwrap_or(0.0);
        fuzz_cases += cases;
        fuzz_secs += took;
        let _ = writeln!(
            doc,
            "| `{}` | `{}` | {} | {} | {} |",
            target_short(&test.target),
            test.name,
            thousands(cases),
            secs(took),
            outcome.map(|o| o.result.as_str()).unwrap_or("did not run")
        );
    }
    let _ = writeln!(
        doc,
        "| **all** | | **{}** | **{}** | |",
        thousands(fuzz_cases),
        secs(fuzz_secs)
    );

    let _ = writeln!(doc, "\n## HTTP API fuzzing\n");
    let _ = writeln!(
        doc,
        "[schemathesis](https://schemathesis.readthedocs.io) (pinned in infra/local/requirements.txt) generates requests from \
         docs/openapi.yaml against the local service on a free port, as an administrator of an account that holds a token \
         created through the real flow, synced devices and an enrollment policy (their ids are passed in, so requests reach real objects). \
         The second run sends only requests that break the document; the DynamoDB tables are scanned before and after it \
         and must be identical (no write on a 4xx).\n"
    );
    if let Some(error) = &api.error {
        let _ = writeln!(doc, "**Could not run:** {error}\n");
    }
    let _ = writeln!(
        doc,
        "| Run | Mode | Checks | Operations | Cases tried | Time | Result |"
    );
    let _ = writeln!(doc, "| --- | --- | --- | ---: | ---: | ---: | --- |");
    for run in &api.runs {
        let _ = writeln!(
            doc,
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.name,
            run.mode,
            run.checks,
            run.operations,
            thousands(run.cases),
            secs(run.seconds),
            if run.passed { "ok" } else { "**FAILED**" }
        );
    }
    let unchanged = match api.unchanged_after_negative {
        Some(true) => "identical (ok)",
        Some(false) => "**changed (FAILED)**",
        None => "not compared",
    };
    let _ = writeln!(
        doc,
        "\nTables before and after the invalid-only run: {unchanged}.\n"
    );
    for run in &api.runs {
        for failure in &run.failures {
            let _ = writeln!(doc, "- {}: {failure}", run.name);
        }
    }

    let _ = writeln!(doc, "\n## IAM: every AWS call against template.yaml\n");
    let _ = writeln!(
        doc,
        "The local AWS enforces no IAM, so each function's SDK clients record every request as the IAM action it needs \
         (a transaction as its item actions, a batch as its single action), on which resource, and for KMS under which \
         `adesync:purpose`. Every end-to-end test fails on a call its function's role (SAM policy templates expanded, \
         inline statements, the key policy's conditions) would deny. The table merges the calls of the matrix's tests above \
         and of the API fuzzing, and lists, per grant, the actions no call used. Check any test run yourself: \
         `ADESYNC_IAM_RECORD_DIR=DIR cargo test -p adesync-tests`, then `cargo run -p adesync-local -- iam DIR`.\n"
    );
    doc.push_str(&iam.section);

    let _ = writeln!(doc, "\n## Time per cargo test run\n");
    let _ = writeln!(doc, "| `cargo test --workspace` | Time |\n| --- | ---: |");
    for (selection, took) in &results.targets {
        let _ = writeln!(doc, "| `{selection}` | {} |", secs(took.as_secs_f64()));
    }
    let _ = writeln!(
        doc,
        "\nReproduce: `cargo run -p adesync-local -- reliability` (installs the local AWS and schemathesis into .local/ on first use). \
         It exits non-zero when any row fails or a named test did not run. \
         `reliability --api-only` runs only the HTTP API fuzzing, in a few minutes, and prints its figures and the table comparison \
         without writing this document; every request and answer of each run is kept in `.local/reliability/schemathesis-<mode>.vcr.yaml`."
    );
    doc
}

fn target_short(target: &Target) -> String {
    match target.test {
        Some(test) => format!("{}/{test}", target.package),
        None => format!("{} (lib)", target.package),
    }
}

fn secs(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{}m {:02.0}s", (seconds / 60.0).floor(), seconds % 60.0)
    } else {
        format!("{seconds:.1}s")
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether every row passed (each test ran and passed, and the API fuzzing).
pub fn all_passed(results: &Results, api: &ApiFuzz, iam: &IamCheck) -> bool {
    iam.denied == 0
        && MATRIX.iter().all(|row| {
            if row.tests.is_empty() {
                api.passed()
            } else {
                results.row_passed(row)
            }
        })
}

pub mod api_fuzz;

/// `adesync-local reliability`: checks the matrix against the sources, runs
/// every test it names against one local AWS, fuzzes the API, writes
/// docs/reliability.md and fails unless every row passed.
pub async fn command() -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let root = workspace.root().to_path_buf();
    let total = Instant::now();

    let missing = missing_tests(&root)?;
    if !missing.is_empty() {
        bail!(
            "the matrix names tests that are not in the sources (renamed? update infra/local/src/reliability.rs): {}",
            missing.join(", ")
        );
    }
    eprintln!("==> installing the local AWS tools and schemathesis (skipped when up to date)");
    let tools = tools::ensure(&workspace)?;

    // Built once, as every selection then runs (`--workspace`), so the
    // test times hold no compiling; only the targets the matrix runs.
    let mut build_args = vec!["test", "--no-run", "--workspace"];
    for selection in selections() {
        build_args.extend(selection.cargo_args().into_iter().skip(1));
    }
    eprintln!(
        "==> building the matrix's tests (cargo {})",
        build_args.join(" ")
    );
    let started = Instant::now();
    let status = tools::cargo()
        .args(&build_args)
        .current_dir(&root)
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("building the tests failed ({status})");
    }
    let build = started.elapsed();

    eprintln!("==> starting the local AWS for this run");
    let aws = LocalAws::start(&workspace).await?;
    let env = aws.endpoints.env_vars();
    // Every test service writes its functions' AWS calls here.
    let iam_dir = root.join(".local/reliability/iam-calls");
    let _ = std::fs::remove_dir_all(&iam_dir);
    let mut env = env;
    env.push((
        adesync_local::iam::RECORD_DIR,
        iam_dir.to_string_lossy().into_owned(),
    ));
    let results = tokio::task::block_in_place(|| run_matrix(&root, &env))?;
    let api = api_fuzz::run(&workspace, aws.endpoints.clone(), &tools).await;
    drop(aws);
    let mut calls = adesync_local::iam::read_recorded(&iam_dir)?;
    calls.extend(api.aws_calls.iter().cloned());
    let iam = iam_check(&workspace, calls)?;

    let info = RunInfo {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string(),
        commit: commit(&root),
        machine: machine(),
        total: total.elapsed(),
        build,
    };
    let doc = render(&info, &results, &api, &iam);
    let path = root.join("docs/reliability.md");
    std::fs::write(&path, &doc).with_context(|| format!("cannot write {}", path.display()))?;
    let passed = all_passed(&results, &api, &iam);
    eprintln!(
        "==> wrote {} in {:.0?}: {}",
        path.display(),
        total.elapsed(),
        if passed {
            "every row passed"
        } else {
            "SOME ROWS FAILED (see the document)"
        }
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `adesync-local reliability --api-only`: only the schemathesis runs,
/// on a local AWS of their own, so a fuzzing finding can be chased in
/// minutes rather than after the whole matrix. docs/reliability.md stays as
/// it is: it only ever says what one complete run found.
pub async fn api_only() -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let total = Instant::now();
    eprintln!("==> installing the local AWS tools and schemathesis (skipped when up to date)");
    let tools = tools::ensure(&workspace)?;
    eprintln!("==> starting the local AWS for this run");
    let aws = LocalAws::start(&workspace).await?;
    let api = api_fuzz::run(&workspace, aws.endpoints.clone(), &tools).await;
    drop(aws);
    print!("{}", api_summary(&api));
    let iam = iam_check(&workspace, api.aws_calls.clone())?;
    print!("{}", iam.section);
    let passed = api.passed() && iam.denied == 0;
    eprintln!(
        "==> API fuzzing in {:.0?}: {}",
        total.elapsed(),
        if passed { "passed" } else { "FAILED" }
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The API fuzzing's figures as plain lines, for `--api-only`.
fn api_summary(api: &ApiFuzz) -> String {
    let mut out = String::new();
    if let Some(error) = &api.error {
        let _ = writeln!(out, "could not run: {error}");
    }
    for run in &api.runs {
        let _ = writeln!(
            out,
            "{} [--mode {}; {}]: {} operations, {} cases, {}: {}",
            run.name,
            run.mode,
            run.checks,
            run.operations,
            thousands(run.cases),
            secs(run.seconds),
            if run.passed { "ok" } else { "FAILED" }
        );
        for failure in &run.failures {
            let _ = writeln!(out, "  - {failure}");
        }
    }
    let _ = writeln!(
        out,
        "tables before and after the invalid-only run: {}",
        match api.unchanged_after_negative {
            Some(true) => "identical",
            Some(false) => "CHANGED",
            None => "not compared",
        }
    );
    out
}

fn iam_check(workspace: &Workspace, calls: Vec<adesync_local::iam::AwsCall>) -> Result<IamCheck> {
    let template = std::fs::read_to_string(workspace.template_path())?;
    let grants = adesync_local::iam::Grants::parse(&template)?;
    let calls: Vec<_> = calls
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(IamCheck {
        section: adesync_local::iam::render(&grants, &calls),
        denied: grants.denied(&calls).len(),
    })
}

/// Every `cargo test` selection of the matrix, once.
fn selections() -> BTreeSet<Selection> {
    MATRIX
        .iter()
        .flat_map(|row| row.tests)
        .map(|test| test.target.selection())
        .collect()
}

fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => {
            format!(
                "`{head}` plus uncommitted changes to {} files of the work tree",
                changes.lines().count()
            )
        }
        _ => format!("`{head}`"),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!(", {:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!(
        "{} {}, {cpu}, {cores} cores{memory}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_test_the_matrix_names_exists() {
        let missing = missing_tests(&root()).unwrap();
        assert!(
            missing.is_empty(),
            "the matrix names tests that are not in the sources (renamed? update infra/local/src/reliability.rs): {missing:?}"
        );
    }

    #[test]
    fn a_stale_name_is_found_missing() {
        // The check above must be able to fail: a name that is nowhere.
        let text = {
            let mut text = String::new();
            read_rust_sources(&root().join(E2E), &mut text).unwrap();
            text
        };
        assert!(!text.contains("fn no_such_test_anywhere_in_the_matrix("));
        assert!(text.contains("fn a_429_with_retry_after_is_honoured("));
    }

    #[test]
    fn every_row_of_the_issue_has_a_test_or_the_api_fuzzing() {
        assert_eq!(
            MATRIX.len(),
            48,
            "the 29 rows of issue 9, a token deleted while its batch is applied, the 3 rows of runs longer than a lease (issue 14), 2 of many tokens (issue 15), 8 of Apple's harder edges (issue 16), and 5 of least privilege and the security gaps (issue 19)"
        );
        let empty: Vec<_> = MATRIX.iter().filter(|r| r.tests.is_empty()).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].row, API_FUZZ_ROW);
    }

    #[test]
    fn libtest_output_is_read_with_times_and_cases() {
        let mut parser = LibtestParser::default();
        for line in [
            "running 3 tests\n",
            "test a ... proptest: Next test input: [1, 2]\n",
            "proptest: Test case passed\n",
            "proptest: Next test input: [3]\n",
            "proptest: Test case passed\n",
            "ok\n",
            "test b ... FAILED\n",
            "test c ... cases tried: 300\n",
            "ok\n",
            "test d ... ignored, slow\n",
            "test result: FAILED. 2 passed; 1 failed; 1 ignored\n",
        ] {
            parser.line(line);
        }
        let o = &parser.outcomes;
        assert_eq!(o["a"].result, "ok");
        assert_eq!(o["a"].cases, Some(2));
        assert_eq!(o["b"].result, "FAILED");
        assert_eq!(o["b"].cases, None);
        assert_eq!(o["c"].cases, Some(300));
        assert_eq!(o["d"].result, "ignored");
        assert!(!o.contains_key("result:"));
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn a_row_with_a_test_that_did_not_run_fails() {
        let mut results = Results::default();
        let row = &MATRIX[0];
        assert!(!results.row_passed(row));
        results.outcomes.insert(
            (row.tests[0].target, row.tests[0].name),
            Outcome {
                result: "ok".into(),
                ..Outcome::default()
            },
        );
        assert!(results.row_passed(row));
        assert!(!all_passed(
            &results,
            &ApiFuzz::default(),
            &IamCheck::default()
        ));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(secs(75.2), "1m 15s");
        assert_eq!(secs(3.25), "3.2s");
    }
}
