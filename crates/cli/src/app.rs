//! The `adesync` command line: arguments, commands, what they print and
//! how they exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use adesync_core::run::RunStatus;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::client::{ApiFailure, Client, ClientError};
use crate::dev_token::{self, DevTokenError};
use crate::model::{DeviceFilter, Run, SyncKind, Token};
use crate::output::{self, details, print_json, table, text, time};
use crate::watch::{WatchError, WatchOptions, summary, watch_run};

/// Exit statuses of `adesync` (also in `adesync --help` and docs/operations.md).
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The request failed: an error answer, no answer, or a watched sync
    /// that did not succeed.
    pub const FAILURE: u8 = 1;
    /// The command line is wrong (clap also exits with 2), an input file
    /// cannot be read, or no access token was given.
    pub const USAGE: u8 = 2;
    /// A rule refused the request and nothing changed: retry later or
    /// after fixing what the message names.
    pub const REFUSED: u8 = 3;
}

const AFTER_HELP: &str = "\
Exit status:
  0  done
  1  failed: the API answered with an error (not found, invalid token file,
     Apple rejected the token, ...), could not be reached, or a watched sync
     did not succeed
  2  usage: bad arguments, an unreadable input file, or no access token
  3  refused by a rule, nothing changed: a sync cooldown (HTTP 429, with the
     time to retry), a sync already running, a limit reached, a token that
     still has devices or policies (HTTP 409); retry at the time printed or
     after fixing what the message names

Environment:
  ADESYNC_API_URL  the API's base URL (default: the local runner)
  ADESYNC_TOKEN    bearer token (JWT) from your identity provider; for the
                   local runner: export ADESYNC_TOKEN=$(adesync dev-token)

Reference: docs/operations.md (what each status and error means),
docs/openapi.yaml (the HTTP API).";

/// adesync: Apple Automated Device Enrollment tokens, syncs, devices and
/// enrollment policies, from the command line.
#[derive(Debug, Parser)]
#[command(name = "adesync", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Base URL of the adesync API (the local runner, or your API Gateway URL).
    #[arg(
        long,
        env = "ADESYNC_API_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub api_url: String,
    /// Bearer token (JWT) to call the API with.
    #[arg(long, env = "ADESYNC_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables (errors too, on stdout).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download the account's public key certificate (PEM) to upload to the
    /// MDM server in Apple Business.
    PublicKey {
        /// Write it to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Enrollment program tokens: link, list, renew and delete.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Start a sync or see how the token's syncs stand.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Recent sync runs of a token, newest first.
    Runs {
        token_id: String,
        /// How many runs (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A token's devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// A token's enrollment policies.
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Assign devices to an enrollment policy (per-serial results).
    Assign {
        token_id: String,
        policy_id: String,
        /// Serial numbers to assign.
        serials: Vec<String>,
        /// Read more serial numbers from this file, one per line.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print a development access token that the local runner accepts
    /// (HS256 with ADESYNC_DEV_JWT_SECRET). Never valid on AWS.
    DevToken(DevTokenArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Link an MDM server: upload its token file (.p7m from Apple Business);
    /// its first full sync starts at once.
    Create {
        /// A name for people (e.g. "Paris office").
        #[arg(long)]
        name: String,
        /// The Apple ID that downloaded the token file; renewals need the same one.
        #[arg(long)]
        apple_id: String,
        /// The token file (.p7m) downloaded from Apple Business.
        #[arg(long)]
        file: PathBuf,
        /// Follow the first full sync with a progress bar until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// List the account's tokens.
    List,
    /// Show a token: status, expiry, devices, last syncs.
    Show { token_id: String },
    /// Renew a token with a newly downloaded token file. Downloading it in
    /// Apple Business invalidates the one in use: renew right away.
    Renew {
        token_id: String,
        /// The Apple ID that created the token.
        #[arg(long)]
        apple_id: String,
        /// The new token file (.p7m).
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a token that has no devices and no enrollment policies left.
    Delete { token_id: String },
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Request a manual sync (delta unless --full). Manual syncs run at most
    /// every 15 minutes, full syncs at most every 7 days, one at a time.
    Start {
        token_id: String,
        /// The complete device list instead of the changes since the last sync.
        #[arg(long)]
        full: bool,
        /// Follow the sync with a progress bar until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// The token's sync state: the running sync, last and next syncs, warnings.
    Status {
        token_id: String,
        /// Follow the running sync, if any, until it ends.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List devices (one page unless --all).
    List {
        token_id: String,
        /// Only devices in this state.
        #[arg(long, value_parser = ["active", "removed_from_apple"])]
        state: Option<String>,
        /// Only devices assigned to this enrollment policy.
        #[arg(long = "policy")]
        policy_id: Option<String>,
        /// Every page, following the cursor.
        #[arg(long)]
        all: bool,
        /// Devices per page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after this page (the `next_cursor` printed before).
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
    },
    /// Show one device.
    Show { token_id: String, serial: String },
    /// Remove a device from management. It reappears on the next full sync
    /// unless it is unassigned in Apple Business first.
    Delete { token_id: String, serial: String },
}

#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// Create an enrollment policy.
    Create {
        token_id: String,
        /// Shown on the device at Setup Assistant.
        #[arg(long)]
        name: String,
        /// The MDM server's enrollment URL (https).
        #[arg(long)]
        url: String,
        /// Devices enroll with user affinity (the user needs a license).
        #[arg(long)]
        user_affinity: bool,
        /// More settings, as a JSON object merged into the request.
        #[arg(long, value_parser = json_object)]
        settings: Option<Map<String, Value>>,
    },
    /// List the token's policies.
    List { token_id: String },
    /// Show one policy.
    Show { token_id: String, policy_id: String },
    /// Change a policy's settings.
    Update {
        token_id: String,
        policy_id: String,
        #[arg(long)]
        name: Option<String>,
        /// Turn user affinity on or off.
        #[arg(long)]
        user_affinity: Option<bool>,
        /// More changes, as a JSON object merged into the request.
        #[arg(long, value_parser = json_object)]
        settings: Option<Map<String, Value>>,
    },
    /// Delete a policy no device uses.
    Delete { token_id: String, policy_id: String },
    /// Make a policy the token's default: newly synced devices get it.
    Default { token_id: String, policy_id: String },
}

#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// The account (tenant) the token acts for.
    #[arg(long, default_value = "demo")]
    pub account: String,
    /// Roles: admin, dem (Device Enrollment Manager), reader.
    #[arg(long, value_delimiter = ',', default_value = "admin")]
    pub roles: Vec<String>,
    /// Scope tags (`adesync:scopes`): the token sees only tokens tagged
    /// with one of them. Without it, every token of the account.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// The user (JWT subject).
    #[arg(long, default_value = "dev-user")]
    pub user: String,
    /// Hours until it expires.
    #[arg(long, default_value_t = 12)]
    pub hours: u64,
    /// The local runner's signing secret: the one `adesync-local serve`
    /// printed, or the one it was started with.
    #[arg(long, env = "ADESYNC_DEV_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

fn json_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object, e.g. '{\"await_device_configured\": true}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    DevToken(#[from] DevTokenError),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CommandError {
    /// The API's error answer behind this, if any.
    pub fn api_failure(&self) -> Option<&ApiFailure> {
        match self {
            CommandError::Client(ClientError::Api(failure))
            | CommandError::Watch(WatchError::Client(ClientError::Api(failure))) => Some(failure),
            _ => None,
        }
    }

    /// The exit status for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => exit::USAGE,
            _ if self.api_failure().is_some_and(ApiFailure::is_refusal) => exit::REFUSED,
            _ => exit::FAILURE,
        }
    }
}

/// Parses the command line, runs the command and exits with its status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("adesync: cannot start: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            report(&error, json);
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints an error: the API's message, its code and status, and when to
/// retry; with `--json`, the API's error body on stdout as well.
pub fn report(error: &CommandError, json: bool) {
    let Some(failure) = error.api_failure() else {
        eprintln!("adesync: {error}");
        return;
    };
    if json {
        print_json(&failure.body);
    }
    let label = if failure.is_refusal() {
        "refused"
    } else {
        "error"
    };
    eprintln!(
        "adesync: {label} ({}, HTTP {}): {}",
        failure.code, failure.status, failure.message
    );
    for condition in failure.body["conditions"].as_array().into_iter().flatten() {
        eprintln!(
            "  - {}: {}",
            condition["condition"].as_str().unwrap_or("?"),
            condition["count"]
        );
    }
    if let Some(wait) = failure.retry_after_seconds {
        let at = failure
            .retry_at()
            .map(|t| format!(" (at {t})"))
            .unwrap_or_default();
        eprintln!("  retry in {}{at}", output::seconds(wait));
    }
}

/// Runs one command; `Ok` carries the exit status (a watched sync that
/// failed is not an error of the command, but it is not a success either).
pub async fn run(cli: Cli) -> Result<u8, CommandError> {
    let json = cli.json;
    if let Command::DevToken(args) = &cli.command {
        return dev_token_command(args);
    }
    let Some(token) = cli.token.filter(|t| !t.trim().is_empty()) else {
        return Err(CommandError::Usage(
            "no access token: pass --token or set ADESYNC_TOKEN (for the local runner: export ADESYNC_TOKEN=$(adesync dev-token))".into(),
        ));
    };
    let client = Client::new(&cli.api_url, Some(SecretString::from(token)))?;
    match cli.command {
        Command::PublicKey { out } => public_key(&client, out.as_deref()).await,
        Command::Tokens(command) => tokens(&client, command, json).await,
        Command::Sync(command) => sync(&client, command, json).await,
        Command::Runs { token_id, limit } => {
            let runs = client.runs(&token_id, Some(limit)).await?;
            if json {
                print_json(&json!({ "runs": runs }));
            } else {
                let mut t = table([
                    "run",
                    "kind",
                    "trigger",
                    "status",
                    "started",
                    "finished",
                    "expected",
                    "fetched",
                    "imported",
                    "pages",
                    "rate/min",
                    "left",
                    "lease expires",
                    "error",
                ]);
                for run in &runs {
                    t.add_row([
                        run.run_id.clone(),
                        run.kind.clone(),
                        text(run.trigger.as_deref()),
                        run.status.clone(),
                        time(Some(run.started_at)),
                        time(run.finished_at),
                        count(run.expected_devices),
                        run.fetched.to_string(),
                        run.imported.to_string(),
                        run.pages.to_string(),
                        count(run.devices_per_minute),
                        time_left(run),
                        time(run.lease_expires_at.filter(|_| !run.is_over())),
                        text(run.error.as_deref()),
                    ]);
                }
                println!("{t}");
            }
            Ok(exit::OK)
        }
        Command::Devices(command) => devices(&client, command, json).await,
        Command::Policies(command) => policies(&client, command, json).await,
        Command::Assign {
            token_id,
            policy_id,
            serials,
            file,
        } => {
            assign(
                &client,
                &token_id,
                &policy_id,
                serials,
                file.as_deref(),
                json,
            )
            .await
        }
        // Answered above: it needs no access token and no API.
        Command::DevToken(_) => Ok(exit::OK),
    }
}

fn dev_token_command(args: &DevTokenArgs) -> Result<u8, CommandError> {
    let roles: Vec<&str> = args.roles.iter().map(String::as_str).collect();
    let scopes: Option<Vec<&str>> = args
        .scopes
        .as_ref()
        .map(|tags| tags.iter().map(String::as_str).collect());
    let jwt = dev_token::mint_scoped(
        &args.secret,
        &args.user,
        &args.account,
        &roles,
        scopes.as_deref(),
        Duration::from_secs(args.hours.saturating_mul(3600)),
        chrono::Utc::now(),
    )?;
    println!("{jwt}");
    Ok(exit::OK)
}

fn read_input(path: &Path, what: &str) -> Result<Vec<u8>, CommandError> {
    std::fs::read(path)
        .map_err(|e| CommandError::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

async fn public_key(client: &Client, out: Option<&Path>) -> Result<u8, CommandError> {
    let pem = client.public_key().await?;
    match out {
        None => print!("{pem}"),
        Some(path) => {
            std::fs::write(path, &pem).map_err(|source| CommandError::Write {
                path: path.to_owned(),
                source,
            })?;
            eprintln!(
                "Wrote {}. Upload it to the MDM server in Apple Business, then download the server's token file.",
                path.display()
            );
        }
    }
    Ok(exit::OK)
}

fn token_details(token: &Token) -> comfy_table::Table {
    let expires = format!(
        "{} ({} days left{})",
        time(Some(token.expires_at)),
        token.days_left,
        if token.expiring_soon {
            ", expiring soon: renew it"
        } else {
            ""
        }
    );
    let mut rows = vec![
        ("id", token.id.clone()),
        ("name", token.name.clone()),
        ("apple id", token.apple_id.clone()),
        ("mdm server", text(token.server_name.as_deref())),
        ("organisation", text(token.org_name.as_deref())),
        ("status", token.status.clone()),
    ];
    if let Some(message) = &token.status_message {
        rows.push(("", message.clone()));
    }
    rows.extend([
        ("expires", expires),
        ("devices", token.device_count.to_string()),
        ("policies", token.policy_count.to_string()),
        ("default policy", text(token.default_policy_id.as_deref())),
        ("last full sync", time(token.last_full_sync_at)),
        ("last delta sync", time(token.last_delta_sync_at)),
        ("last manual sync", time(token.last_manual_sync_at)),
        (
            "sync",
            if token.sync_running {
                "running"
            } else {
                "idle"
            }
            .to_owned(),
        ),
    ]);
    details(&rows)
}

async fn tokens(client: &Client, command: TokensCommand, json: bool) -> Result<u8, CommandError> {
    match command {
        TokensCommand::Create {
            name,
            apple_id,
            file,
            watch,
        } => {
            let bytes = read_input(&file, "the token file")?;
            let token = client.create_token(&name, &apple_id, &bytes).await?;
            if json {
                print_json(&token);
            } else {
                println!("{}", token_details(&token));
            }
            let first_run = token
                .first_sync
                .as_ref()
                .and_then(|f| f.run_id.clone().filter(|_| f.queued));
            match (&first_run, &token.first_sync) {
                (Some(run_id), _) => eprintln!("First full sync queued: run {run_id}."),
                (None, Some(first)) => {
                    eprintln!("{}", first.message.as_deref().unwrap_or_default());
                }
                (None, None) => {}
            }
            match first_run.filter(|_| watch) {
                Some(run_id) => follow(client, &token.id, &run_id, json).await,
                None => Ok(exit::OK),
            }
        }
        TokensCommand::List => {
            let tokens = client.tokens().await?;
            if json {
                print_json(&json!({ "tokens": tokens }));
                return Ok(exit::OK);
            }
            let mut t = table([
                "id",
                "name",
                "mdm server",
                "status",
                "devices",
                "expires",
                "days left",
                "last sync",
            ]);
            for token in &tokens {
                let last = [
                    token.last_full_sync_at,
                    token.last_delta_sync_at,
                    token.last_manual_sync_at,
                ]
                .into_iter()
                .flatten()
                .max();
                t.add_row([
                    token.id.clone(),
                    token.name.clone(),
                    text(token.server_name.as_deref()),
                    token.status.clone(),
                    token.device_count.to_string(),
                    time(Some(token.expires_at)),
                    format!(
                        "{}{}",
                        token.days_left,
                        if token.expiring_soon { " (renew)" } else { "" }
                    ),
                    time(last),
                ]);
            }
            println!("{t}");
            Ok(exit::OK)
        }
        TokensCommand::Show { token_id } => {
            let token = client.token(&token_id).await?;
            if json {
                print_json(&token);
            } else {
                println!("{}", token_details(&token));
            }
            Ok(exit::OK)
        }
        TokensCommand::Renew {
            token_id,
            apple_id,
            file,
        } => {
            let bytes = read_input(&file, "the token file")?;
            let token = client.renew_token(&token_id, &apple_id, &bytes).await?;
            if json {
                print_json(&token);
            } else {
                println!("{}", token_details(&token));
                eprintln!("Token renewed: same id, devices and policies.");
            }
            Ok(exit::OK)
        }
        TokensCommand::Delete { token_id } => {
            client.delete_token(&token_id).await?;
            if json {
                print_json(&json!({ "deleted": token_id }));
            } else {
                println!("Token {token_id} deleted.");
            }
            Ok(exit::OK)
        }
    }
}

/// A count the API may not know yet, for a table.
fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A run's time left for a table: "-" once it has ended, "unknown" while
/// the API cannot tell (never "0 s" for a run still going).
fn time_left(run: &Run) -> String {
    match run.seconds_left() {
        _ if run.is_over() => "-".to_owned(),
        Some(left) => format!("about {}", output::seconds(left)),
        None => "unknown".to_owned(),
    }
}

/// The rows of `sync status` about a run's pace, after its progress.
fn run_rows(run: &Run) -> Vec<(&'static str, String)> {
    let mut rows = vec![(
        "expected",
        run.expected_devices.map_or_else(
            || "unknown".to_owned(),
            |n| format!("{n} devices (the token's count when the run started)"),
        ),
    )];
    match (run.devices_per_minute, run.is_over()) {
        (Some(rate), _) => rows.push(("rate", format!("{rate} devices/min"))),
        (None, false) => rows.push(("rate", "not measured yet".to_owned())),
        (None, true) => {}
    }
    if run.is_over() {
        if run.ended(RunStatus::Abandoned) && run.error.is_none() {
            rows.push(("note", crate::watch::ABANDONED.trim().to_owned()));
        }
        return rows;
    }
    rows.push(("time left", time_left(run)));
    if let Some(at) = run.lease_expires_at {
        rows.push((
            "lease expires",
            format!("{} (abandoned then unless it progresses)", time(Some(at))),
        ));
    }
    rows
}

/// Follows a run to its end and prints its summary; the status says
/// whether it succeeded.
async fn follow(
    client: &Client,
    token: &str,
    run_id: &str,
    json: bool,
) -> Result<u8, CommandError> {
    let options = WatchOptions {
        show_progress: !json,
        ..WatchOptions::default()
    };
    let run = watch_run(client, token, run_id, &options).await?;
    finished(&run, json)
}

fn finished(run: &Run, json: bool) -> Result<u8, CommandError> {
    if json {
        print_json(run);
    } else {
        println!("{}", summary(run));
    }
    Ok(if run.ended(RunStatus::Succeeded) {
        exit::OK
    } else {
        exit::FAILURE
    })
}

async fn sync(client: &Client, command: SyncCommand, json: bool) -> Result<u8, CommandError> {
    match command {
        SyncCommand::Start {
            token_id,
            full,
            watch,
        } => {
            let kind = if full {
                SyncKind::Full
            } else {
                SyncKind::Delta
            };
            let started = client.start_sync(&token_id, kind).await?;
            if json && !watch {
                print_json(&started);
            }
            if !json {
                eprintln!(
                    "{} sync started: run {} (about {}).",
                    if full { "Full" } else { "Delta" },
                    started.run_id,
                    output::seconds(started.estimated_seconds)
                );
                for warning in &started.warnings {
                    eprintln!("Warning: {warning}");
                }
            }
            if watch {
                follow(client, &token_id, &started.run_id, json).await
            } else {
                Ok(exit::OK)
            }
        }
        SyncCommand::Status { token_id, watch } => {
            let status = client.sync_status(&token_id).await?;
            if json && !watch {
                print_json(&status);
                return Ok(exit::OK);
            }
            if !json {
                let mut rows = vec![("state", status.state.clone())];
                if let Some(run) = &status.run {
                    rows.extend([
                        (
                            "run",
                            format!("{} ({} sync, {})", run.run_id, run.kind, run.status),
                        ),
                        (
                            "progress",
                            format!(
                                "{} fetched, {} imported, {} pages",
                                run.fetched, run.imported, run.pages
                            ),
                        ),
                    ]);
                    rows.extend(run_rows(run));
                }
                rows.extend([
                    ("devices", status.device_count.to_string()),
                    ("last full sync", time(status.last_full_sync_at)),
                    ("last delta sync", time(status.last_delta_sync_at)),
                    ("last manual sync", time(status.last_manual_sync_at)),
                    ("last outcome", text(status.last_outcome.as_deref())),
                    ("last error", text(status.last_error.as_deref())),
                    ("next manual sync", time(status.next_manual_sync_at)),
                    ("next full sync", time(status.next_full_sync_at)),
                    (
                        "next sync",
                        if status.next_sync_is_full {
                            "full"
                        } else {
                            "delta"
                        }
                        .to_owned(),
                    ),
                ]);
                for warning in &status.warnings {
                    rows.push(("warning", warning.clone()));
                }
                println!("{}", details(&rows));
            }
            match status.run.filter(|r| watch && !r.is_over()) {
                Some(run) => follow(client, &token_id, &run.run_id, json).await,
                None => Ok(exit::OK),
            }
        }
    }
}

async fn devices(client: &Client, command: DevicesCommand, json: bool) -> Result<u8, CommandError> {
    match command {
        DevicesCommand::List {
            token_id,
            state,
            policy_id,
            all,
            limit,
            cursor,
        } => {
            let filter = DeviceFilter { state, policy_id };
            let (devices, next) = if all {
                (client.all_devices(&token_id, &filter).await?, None)
            } else {
                let page = client
                    .devices_page(&token_id, &filter, cursor.as_deref(), Some(limit))
                    .await?;
                (page.devices, page.next_cursor)
            };
            if json {
                print_json(&json!({ "devices": devices, "next_cursor": next }));
                return Ok(exit::OK);
            }
            let mut t = table([
                "serial", "model", "family", "os", "state", "policy", "profile",
            ]);
            for device in &devices {
                t.add_row([
                    device.serial_number.clone(),
                    text(device.model.as_deref()),
                    text(device.device_family.as_deref()),
                    text(device.os.as_deref()),
                    device.state.clone(),
                    text(device.policy_id.as_deref()),
                    text(device.profile_status.as_deref()),
                ]);
            }
            println!("{t}");
            if let Some(next) = next {
                eprintln!("More devices: add --cursor {next}, or --all for every page.");
            }
            Ok(exit::OK)
        }
        DevicesCommand::Show { token_id, serial } => {
            let device = client.device(&token_id, &serial).await?;
            if json {
                print_json(&device);
                return Ok(exit::OK);
            }
            let mut rows = vec![
                ("serial", device.serial_number.clone()),
                ("model", text(device.model.as_deref())),
                ("description", text(device.description.as_deref())),
                ("family", text(device.device_family.as_deref())),
                ("os", text(device.os.as_deref())),
                ("state", device.state.clone()),
                ("profile", text(device.profile_status.as_deref())),
                ("policy", text(device.policy_id.as_deref())),
            ];
            if device.removed_at.is_some() {
                rows.extend([
                    ("removed from apple", time(device.removed_at)),
                    ("deleted after", time(device.deletes_at)),
                ]);
                if device.released_by_replacement {
                    rows.push(("released because", "Apple replaced the device".to_owned()));
                }
            }
            for (name, value) in &device.extra {
                if let Some(value) = value.as_str() {
                    rows.push((name.as_str(), value.to_owned()));
                }
            }
            println!("{}", details(&rows));
            Ok(exit::OK)
        }
        DevicesCommand::Delete { token_id, serial } => {
            let deleted = client.delete_device(&token_id, &serial).await?;
            if json {
                print_json(&deleted);
            } else {
                println!("Device {} deleted.", deleted.serial_number);
                eprintln!("Warning: {}", deleted.warning);
            }
            Ok(exit::OK)
        }
    }
}

fn policy_body(
    name: Option<String>,
    user_affinity: Option<bool>,
    settings: Option<Map<String, Value>>,
) -> Value {
    let mut body = settings.unwrap_or_default();
    if let Some(name) = name {
        body.insert("name".into(), json!(name));
    }
    if let Some(affinity) = user_affinity {
        body.insert("user_affinity".into(), json!(affinity));
    }
    Value::Object(body)
}

fn print_policy(policy: &crate::model::Policy, json: bool) {
    if json {
        print_json(policy);
        return;
    }
    let mut rows = vec![
        ("id", policy.policy_id.clone()),
        ("name", text(policy.name.as_deref())),
        ("default", policy.is_default.to_string()),
        ("devices", policy.device_count.to_string()),
    ];
    for (name, value) in &policy.extra {
        rows.push((name.as_str(), value.to_string()));
    }
    println!("{}", details(&rows));
}

async fn policies(
    client: &Client,
    command: PoliciesCommand,
    json: bool,
) -> Result<u8, CommandError> {
    match command {
        PoliciesCommand::Create {
            token_id,
            name,
            url,
            user_affinity,
            settings,
        } => {
            let mut body = policy_body(Some(name), Some(user_affinity), settings);
            body["url"] = json!(url);
            let policy = client.create_policy(&token_id, &body).await?;
            print_policy(&policy, json);
        }
        PoliciesCommand::List { token_id } => {
            let page = client.policies(&token_id).await?;
            if json {
                print_json(&page);
            } else {
                let mut t = table(["id", "name", "default", "devices"]);
                for policy in &page.policies {
                    t.add_row([
                        policy.policy_id.clone(),
                        text(policy.name.as_deref()),
                        if policy.is_default { "yes" } else { "" }.to_owned(),
                        policy.device_count.to_string(),
                    ]);
                }
                println!("{t}");
            }
        }
        PoliciesCommand::Show {
            token_id,
            policy_id,
        } => {
            let policy = client.policy(&token_id, &policy_id).await?;
            print_policy(&policy, json);
        }
        PoliciesCommand::Update {
            token_id,
            policy_id,
            name,
            user_affinity,
            settings,
        } => {
            let body = policy_body(name, user_affinity, settings);
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(CommandError::Usage(
                    "nothing to change: give --name, --user-affinity or --settings".into(),
                ));
            }
            let policy = client.update_policy(&token_id, &policy_id, &body).await?;
            print_policy(&policy, json);
        }
        PoliciesCommand::Delete {
            token_id,
            policy_id,
        } => {
            client.delete_policy(&token_id, &policy_id).await?;
            if json {
                print_json(&json!({ "deleted": policy_id }));
            } else {
                println!("Policy {policy_id} deleted.");
            }
        }
        PoliciesCommand::Default {
            token_id,
            policy_id,
        } => {
            let answer = client.set_default_policy(&token_id, &policy_id).await?;
            if json {
                print_json(&answer);
            } else {
                println!("Policy {policy_id} is now the default of token {token_id}.");
            }
        }
    }
    Ok(exit::OK)
}

async fn assign(
    client: &Client,
    token_id: &str,
    policy_id: &str,
    mut serials: Vec<String>,
    file: Option<&Path>,
    json: bool,
) -> Result<u8, CommandError> {
    if let Some(file) = file {
        let bytes = read_input(file, "the serial number file")?;
        serials.extend(
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    if serials.is_empty() {
        return Err(CommandError::Usage(
            "no serial numbers: list them after the policy id or give --file".into(),
        ));
    }
    let assignment = client.assign(token_id, policy_id, &serials).await?;
    if json {
        print_json(&assignment);
    } else {
        let mut t = table(["serial", "result", "retry after"]);
        for result in &assignment.results {
            t.add_row([
                result.serial_number.clone(),
                result.result.clone(),
                result
                    .retry_after_seconds
                    .map_or_else(|| "-".to_owned(), output::seconds),
            ]);
        }
        println!("{t}");
        if let Some(warning) = &assignment.warning {
            eprintln!("Warning: {warning}");
        }
    }
    let undone: Vec<_> = assignment.results.iter().filter(|r| !r.is_done()).collect();
    Ok(if undone.is_empty() {
        exit::OK
    } else if undone.iter().all(|r| r.may_retry()) {
        eprintln!(
            "{} serial numbers were not assigned yet; send them again after the time shown.",
            undone.len()
        );
        exit::REFUSED
    } else {
        eprintln!(
            "{} serial numbers cannot be assigned (not_accessible: not assigned to this token's MDM server in Apple Business).",
            undone.iter().filter(|r| !r.may_retry()).count()
        );
        exit::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_statuses_and_hides_secrets() {
        let mut command = Cli::command();
        let help = command.render_help().to_string();
        assert!(help.contains("3  refused by a rule"), "{help}");
        assert!(help.contains("ADESYNC_TOKEN"), "{help}");
        let token = command
            .get_arguments()
            .find(|a| a.get_id() == "token")
            .expect("--token");
        assert!(
            token.is_hide_env_values_set(),
            "--help must not print the token"
        );
        let dev = command
            .find_subcommand("dev-token")
            .and_then(|c| c.get_arguments().find(|a| a.get_id() == "secret"))
            .expect("dev-token --secret");
        assert!(
            dev.is_hide_env_values_set(),
            "--help must not print the secret"
        );
    }

    fn run(json: Value) -> Run {
        serde_json::from_value(json).expect("a run")
    }

    fn rows(run: &Run) -> Vec<String> {
        run_rows(run)
            .into_iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect()
    }

    #[test]
    fn status_shows_pace_and_lease_of_a_run_going() {
        let going = run(json!({
            "run_id": "r1", "kind": "full", "status": "running",
            "started_at": "2030-01-01T00:00:00Z", "pages": 46,
            "fetched": 46000, "imported": 45000, "expected_devices": 200000,
            "devices_per_minute": 3012, "estimated_seconds_left": 3100,
            "lease_expires_at": "2030-01-01T00:30:00Z",
        }));
        assert_eq!(
            rows(&going),
            [
                "expected: 200000 devices (the token's count when the run started)",
                "rate: 3012 devices/min",
                "time left: about 51 min 40 s",
                "lease expires: 2030-01-01T00:30:00Z (abandoned then unless it progresses)",
            ]
        );
    }

    #[test]
    fn status_says_unknown_rather_than_zero() {
        let first = run(json!({
            "run_id": "r2", "kind": "full", "status": "running",
            "started_at": "2030-01-01T00:00:00Z", "pages": 5,
            "fetched": 4500, "imported": 4000, "expected_devices": null,
            "devices_per_minute": null, "estimated_seconds_left": null,
            "lease_expires_at": null,
        }));
        assert_eq!(
            rows(&first),
            [
                "expected: unknown",
                "rate: not measured yet",
                "time left: unknown",
            ]
        );
        assert_eq!(time_left(&first), "unknown");
        let older = run(json!({
            "run_id": "r3", "kind": "delta", "status": "running",
            "started_at": "2030-01-01T00:00:00Z", "estimated_seconds_left": 0,
        }));
        assert_eq!(time_left(&older), "unknown");
    }

    #[test]
    fn status_explains_an_abandoned_run() {
        let abandoned = run(json!({
            "run_id": "r4", "kind": "full", "status": "abandoned",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": "2030-01-01T00:40:00Z",
            "fetched": 60000, "imported": 60000, "expected_devices": 200000,
            "devices_per_minute": 1500, "estimated_seconds_left": null,
            "lease_expires_at": "2030-01-01T00:40:00Z",
        }));
        assert_eq!(time_left(&abandoned), "-");
        assert_eq!(
            rows(&abandoned),
            [
                "expected: 200000 devices (the token's count when the run started)",
                "rate: 1500 devices/min",
                "note: It made no progress for 15 minutes (its lease) and was given up; start a new sync to try again.",
            ]
        );
    }

    #[test]
    fn refusals_cooldowns_and_usage_exit_differently() {
        let refusal = CommandError::Client(ClientError::Api(ApiFailure {
            status: 429,
            code: "manual_sync_cooldown".into(),
            message: "Wait.".into(),
            retry_after_seconds: Some(10),
            body: Value::Null,
        }));
        assert_eq!(refusal.exit_code(), exit::REFUSED);
        let missing = CommandError::Client(ClientError::Api(ApiFailure {
            status: 404,
            code: "not_found".into(),
            message: "No token.".into(),
            retry_after_seconds: None,
            body: Value::Null,
        }));
        assert_eq!(missing.exit_code(), exit::FAILURE);
        assert_eq!(CommandError::Usage("x".into()).exit_code(), exit::USAGE);
    }
}
