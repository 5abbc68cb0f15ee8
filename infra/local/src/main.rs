//! `adesync-local`: run adesync on this machine, or run every test.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use adesync_cli::model::{DeviceFilter, Run};
use adesync_local::demo::DemoClient;
use adesync_local::emulators::LocalAws;
use adesync_local::runner::{RunnerOptions, mint_jwt};
use adesync_local::tools::{self, Workspace};
use adesync_local::{LocalService, ServiceOptions};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod reliability;

#[derive(Parser)]
#[command(
    version,
    about = "adesync on one machine: local AWS, Apple simulator, every function"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start everything and keep serving: the local AWS (installed on first
    /// use), the Apple simulator and every function.
    Serve(ServeArgs),
    /// Serve, then walk through the product: create a token through the real
    /// flow and show its first full sync until every device is imported.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Exit after the walk-through instead of serving on.
        #[arg(long)]
        exit: bool,
    },
    /// Run every check CI runs: formatting, lints, the SAM template and all
    /// tests against one local AWS started for the run.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        cargo_test_args: Vec<String>,
    },
    /// Start only the local AWS emulators and print the variables that
    /// point other processes (e.g. `cargo test`) at them.
    Aws,
    /// Build every function for AWS Lambda (arm64, release) with `sam build
    /// --beta-features` and cargo-lambda, installed into .local/build-venv on
    /// first use; then print each function's artifact size. Deploy with
    /// `sam deploy` (docs/deploy.md).
    Build {
        /// Extra arguments for `sam build` (e.g. `--parallel`).
        #[arg(trailing_var_arg = true)]
        sam_args: Vec<String>,
    },
    /// Run the fault matrix of docs/reliability.md (every test it names,
    /// the property tests with their cases counted, schemathesis against
    /// the API) on one local AWS, and write docs/reliability.md from it.
    Reliability {
        /// Only fuzz the HTTP API with schemathesis (a few minutes instead
        /// of the whole matrix): print each run and the table comparison,
        /// leave docs/reliability.md as it is, exit non-zero on a failure.
        #[arg(long)]
        api_only: bool,
    },
    /// Check the AWS calls a test run recorded (`ADESYNC_IAM_RECORD_DIR=DIR
    /// cargo test …`) against the grants of template.yaml: print the calls
    /// IAM would deny and the grants no function used.
    Iam {
        /// The directory the test run wrote its calls to.
        dir: std::path::PathBuf,
    },
    /// Print a development JWT the local API accepts.
    DevToken {
        #[arg(long, default_value = "demo")]
        account: String,
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        roles: Vec<String>,
        #[arg(long, default_value = "dev-user")]
        user: String,
        /// The runner's secret: the one `serve` printed or was started with.
        #[arg(long, env = "ADESYNC_DEV_JWT_SECRET", hide_env_values = true)]
        secret: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where the API listens.
    #[arg(long, env = "ADESYNC_API_ADDR", default_value = "127.0.0.1:3000")]
    api_addr: SocketAddr,
    /// Where the Apple simulator listens.
    #[arg(long, env = "ADESYNC_SIM_ADDR", default_value = "127.0.0.1:3001")]
    sim_addr: SocketAddr,
    /// Devices of the demo's simulated MDM server.
    #[arg(long, default_value_t = 20_000)]
    devices: usize,
    /// Secret of the development JWTs (HS256); without it the run makes a
    /// random one and prints it.
    #[arg(long, env = "ADESYNC_DEV_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Let the API listen on an address other machines can reach. Whoever
    /// reaches it with the development secret acts as any account; the /_dev
    /// routes still answer only this machine, and the Apple simulator (whose
    /// control routes take no token) always listens on loopback.
    #[arg(long)]
    insecure_public: bool,
    /// Resource name stage.
    #[arg(long, default_value = "local")]
    stage: String,
    /// Run the service's clock (and the Apple simulator's) this many times
    /// faster than real time: leases, cooldowns, schedules, visibility and
    /// function timeouts and Apple's pace all follow it. Change it later with
    /// `POST /_dev/clock {"speed": N}` (`GET /_dev/clock` shows it); move it
    /// forward with `{"advance_seconds": S}`.
    #[arg(long, default_value_t = 1.0, value_parser = clock_speed)]
    clock_speed: f64,
    /// Pace the Apple simulator like Apple: about 3,000 devices per minute of
    /// the (possibly sped-up) clock, pages of at most 5,000 as `/account`
    /// advertises. Without it the simulator answers as fast as it can.
    #[arg(long)]
    apple_pace: bool,
    /// Print the domain events as they pass on the stage's EventBridge bus
    /// (a rule with a queue target, as a consumer subscribes): the first
    /// three of each kind, then a tally.
    #[arg(long)]
    events: bool,
}

fn clock_speed(text: &str) -> Result<f64, String> {
    let speed: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (1.0..=adesync_core::clock::MAX_SPEED).contains(&speed) {
        Ok(speed)
    } else {
        Err(format!(
            "the clock speed must be from 1 to {}",
            adesync_core::clock::MAX_SPEED
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("adesync-local: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Serve(args) => serve(args, None).await,
            Commands::Demo { serve: args, exit } => serve(args, Some(exit)).await,
            Commands::Test { cargo_test_args } => test(cargo_test_args).await,
            Commands::Aws => aws().await,
            Commands::Build { sam_args } => build(sam_args),
            Commands::Reliability { api_only } => {
                if api_only {
                    reliability::api_only().await
                } else {
                    reliability::command().await
                }
            }
            Commands::Iam { dir } => iam_report(&dir),
            Commands::DevToken {
                account,
                roles,
                user,
                secret,
            } => {
                let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
                println!(
                    "{}",
                    mint_jwt(
                        &secret,
                        &user,
                        &account,
                        &roles,
                        Duration::from_secs(12 * 3600)
                    )?
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("adesync-local: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts everything; with `demo` set, walks through a first sync (and
/// exits afterwards when it is true).
async fn serve(args: ServeArgs, demo: Option<bool>) -> Result<ExitCode> {
    if demo.is_none() {
        adesync_runtime::logging::init();
    }
    let workspace = Workspace::locate()?;
    let started = Instant::now();
    adesync_local::runner::only_loopback(args.api_addr, args.insecure_public)?;
    adesync_local::runner::simulator_on_loopback(args.sim_addr)?;
    let (jwt_secret, secret_made) = match &args.jwt_secret {
        Some(secret) => (secret.clone(), false),
        None => (adesync_local::runner::random_secret(), true),
    };
    let aws = LocalAws::start(&workspace).await?;
    let options = ServiceOptions {
        stage: args.stage.clone(),
        runner: RunnerOptions {
            api_addr: args.api_addr,
            jwt_secret: jwt_secret.clone(),
            insecure_public: args.insecure_public,
            clock_speed: args.clock_speed,
            ..RunnerOptions::default()
        },
        sim_addr: args.sim_addr,
        sim_devices: 0,
        sim_seed: 1,
        environment: Default::default(),
        throttle_dynamodb: None,
    };
    let service = LocalService::start(&workspace, aws.endpoints.clone(), options).await?;
    let jwt = mint_jwt(
        &jwt_secret,
        "dev-user",
        "demo",
        &["admin"],
        Duration::from_secs(12 * 3600),
    )?;

    let tap = if args.events {
        let bus = service.deployed.bus_name("EventBus")?;
        let tap = adesync_local::bus::EventTap::start(
            &service.clients,
            bus,
            &format!("adesync-{}-events-watch", args.stage),
        )
        .await?;
        // Events of an earlier run of this stage are not this run's.
        tap.drain(Duration::from_millis(200)).await?;
        Some(adesync_local::bus::print_events(tap))
    } else {
        None
    };
    if args.apple_pace {
        let paced = reqwest::Client::new()
            .post(format!("{}/_sim/rate", service.sim.base_url()))
            .json(&serde_json::json!({ "devices_per_minute": adesync_core::sync::APPLE_DEVICES_PER_MINUTE }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        paced.context("the Apple simulator did not take Apple's pace")?;
    }
    println!("adesync is running ({:.1?} to start)", started.elapsed());
    if args.clock_speed != 1.0 || args.apple_pace {
        println!(
            "  clock            {}× real time{}  (GET/POST {}/_dev/clock)",
            args.clock_speed,
            if args.apple_pace {
                "; Apple paced at 3,000 devices/min of that clock"
            } else {
                ""
            },
            service.runner.api_url()
        );
    }
    println!(
        "  API              {}  (GET /v1/health)",
        service.runner.api_url()
    );
    println!("  Apple simulator  {}", service.sim.base_url());
    println!("  DynamoDB         {}", service.endpoints.dynamodb);
    println!("  SQS, KMS         {}", service.endpoints.sqs);
    println!(
        "  EventBridge      {}  (bus {}{})",
        service.endpoints.eventbridge,
        service.deployed.bus_name("EventBus").unwrap_or("?"),
        if tap.is_some() {
            "; events printed as they pass"
        } else {
            "; --events prints them"
        }
    );
    println!("  started here     {:?}", aws.started());
    println!();
    println!("Point other tools at the same local AWS:");
    for (name, value) in service.endpoints.env_vars() {
        println!("  export {name}={value}");
    }
    println!();
    println!("An administrator of account \"demo\" (12 hours):");
    println!("  export ADESYNC_TOKEN={jwt}");
    println!(
        "  curl -s -H \"Authorization: Bearer $ADESYNC_TOKEN\" {}/v1/tokens",
        service.runner.api_url()
    );
    println!(
        "  console: {}  (signs in as this administrator)",
        adesync_local::console::sign_in_url(&service.runner.api_url(), &jwt)
    );
    if secret_made {
        println!(
            "Tokens for other accounts and roles (`adesync dev-token --help`) need this run's secret:"
        );
        println!("  export ADESYNC_DEV_JWT_SECRET={jwt_secret}");
    }

    if let Some(exit) = demo {
        let demo = DemoClient::new(service.runner.api_url(), service.sim.base_url(), jwt)?;
        println!();
        println!(
            "Creating a token for a simulated MDM server with {} devices (public key → token file → POST /v1/tokens)…",
            args.devices
        );
        let (token, _server) = demo.create_token(args.devices).await?;
        println!("Token {token} created; its first full sync is running:");
        let run: Run = serde_json::from_value(demo.watch_sync(&token, args.devices as u64).await?)?;
        println!("{}", adesync_cli::watch::summary(&run));
        let client = demo.client();
        let status = client.sync_status(&token).await?;
        println!(
            "The token now lists {} devices. The first five:",
            status.device_count
        );
        let page = client
            .devices_page(&token, &DeviceFilter::default(), None, Some(5))
            .await?;
        for device in &page.devices {
            println!(
                "  {}  {:<10} {:<28} {}",
                device.serial_number,
                device.device_family.as_deref().unwrap_or(""),
                device.model.as_deref().unwrap_or(""),
                device.state,
            );
        }
        if !run.ended(adesync_core::run::RunStatus::Succeeded) {
            bail!(
                "the demo's sync did not succeed: {}",
                adesync_cli::watch::summary(&run)
            );
        }
        if exit {
            if tap.is_some() {
                // The close's events leave right after the run is recorded.
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            return Ok(ExitCode::SUCCESS);
        }
        println!();
        println!("Try the CLI (in another terminal, with ADESYNC_TOKEN exported as above):");
        println!("  cargo run -p adesync-cli -- tokens list");
        println!("  cargo run -p adesync-cli -- sync status {token}");
        println!("  cargo run -p adesync-cli -- devices list {token} --limit 10");
    }
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    Ok(ExitCode::SUCCESS)
}

async fn aws() -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let aws = LocalAws::start(&workspace).await?;
    for (name, value) in aws.endpoints.env_vars() {
        println!("export {name}={value}");
    }
    eprintln!("adesync-local: local AWS ready; press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

/// `sam build` with cargo-lambda, then the size of each function's artifact.
fn build(sam_args: Vec<String>) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let total = Instant::now();
    let tools = tools::ensure(&workspace)?;
    let build_bin = step(
        "installing cargo-lambda and Zig (skipped when up to date)",
        || tools::ensure_build_tools(&workspace),
    )?;
    step(
        "the arm64 Rust target (rustup target add aarch64-unknown-linux-gnu)",
        || {
            run(Command::new("rustup")
                .args(["target", "add", "aarch64-unknown-linux-gnu"])
                .current_dir(workspace.root()))
        },
    )?;
    let path = std::env::join_paths(
        std::iter::once(build_bin).chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
    )?;
    step(
        "sam build --beta-features (cargo-lambda, arm64, release)",
        || {
            run(Command::new(tools.sam())
                .args(["build", "--beta-features"])
                .args(&sam_args)
                .env("PATH", &path)
                .env("SAM_CLI_TELEMETRY", "0")
                .current_dir(workspace.root()))
        },
    )?;
    let built = workspace.root().join(".aws-sam/build");
    let mut artifacts: Vec<(String, u64)> = std::fs::read_dir(&built)
        .with_context(|| format!("sam build left no {}", built.display()))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let size = entry.path().join("bootstrap").metadata().ok()?.len();
            Some((entry.file_name().to_string_lossy().into_owned(), size))
        })
        .collect();
    artifacts.sort();
    eprintln!(
        "==> built in {:.0?}; artifacts (.aws-sam/build/<function>/bootstrap):",
        total.elapsed()
    );
    for (function, size) in artifacts {
        eprintln!(
            "    {function:<28} {:>6.1} MiB",
            size as f64 / (1024.0 * 1024.0)
        );
    }
    eprintln!("    deploy: .local/venv/bin/sam deploy (see docs/deploy.md)");
    Ok(ExitCode::SUCCESS)
}

/// The one test command: what CI runs, what a newcomer runs.
async fn test(cargo_test_args: Vec<String>) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let total = Instant::now();

    step("formatting (cargo fmt --check)", || {
        run(tools::cargo()
            .args(["fmt", "--all", "--check"])
            .current_dir(workspace.root()))
    })?;
    step(
        "installing the local AWS tools and the test browser (skipped when up to date)",
        || tools::ensure(&workspace).and_then(|_| tools::ensure_browser()),
    )?;
    step("lints (cargo clippy --all-targets -D warnings)", || {
        run(tools::cargo()
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(workspace.root()))
    })?;

    eprintln!("==> starting the local AWS for this run");
    let aws = LocalAws::start(&workspace).await?;
    let mut command = tools::cargo();
    command
        .args(["test", "--workspace"])
        .args(&cargo_test_args)
        .current_dir(workspace.root());
    for (name, value) in aws.endpoints.env_vars() {
        command.env(name, value);
    }
    let result = step("tests (cargo test --workspace)", || run(&mut command));
    drop(aws);
    result?;
    eprintln!("==> all checks passed in {:.0?}", total.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn step<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("==> {what}");
    let started = Instant::now();
    let done = work().with_context(|| format!("{what} failed"))?;
    eprintln!("    done in {:.1?}", started.elapsed());
    Ok(done)
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} exited with {status}");
    }
    Ok(())
}

fn iam_report(dir: &std::path::Path) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let grants =
        adesync_local::iam::Grants::parse(&std::fs::read_to_string(workspace.template_path())?)?;
    let calls = adesync_local::iam::read_recorded(dir)?;
    print!("{}", adesync_local::iam::render(&grants, &calls));
    Ok(if grants.denied(&calls).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
