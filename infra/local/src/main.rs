//! `adesync-local`: run adesync on this machine, or run every test.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use adesync_core::ids::{AccountId, TokenId};
use adesync_local::emulators::LocalAws;
use adesync_local::runner::{RunnerOptions, mint_jwt};
use adesync_local::tools::{self, Workspace};
use adesync_local::{LocalService, ServiceOptions};
use adesync_store::Store;
use adesync_store::tokens::NewToken;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

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
    /// Print a development JWT the local API accepts.
    DevToken {
        #[arg(long, default_value = "demo")]
        account: String,
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        roles: Vec<String>,
        #[arg(long, default_value = "dev-user")]
        user: String,
        #[arg(long, env = "ADESYNC_DEV_JWT_SECRET", default_value = DEFAULT_JWT_SECRET)]
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
    /// Devices each new simulated MDM server starts with.
    #[arg(long, default_value_t = 20_000)]
    devices: usize,
    /// Secret of the development JWTs (HS256).
    #[arg(long, env = "ADESYNC_DEV_JWT_SECRET", default_value = DEFAULT_JWT_SECRET)]
    jwt_secret: String,
    /// Resource name stage.
    #[arg(long, default_value = "local")]
    stage: String,
}

const DEFAULT_JWT_SECRET: &str = "adesync-dev-secret";

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
            Commands::Serve(args) => serve(args).await,
            Commands::Test { cargo_test_args } => test(cargo_test_args).await,
            Commands::Aws => aws().await,
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

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    adesync_runtime::logging::init();
    let workspace = Workspace::locate()?;
    let started = Instant::now();
    let aws = LocalAws::start(&workspace).await?;
    let options = ServiceOptions {
        stage: args.stage.clone(),
        runner: RunnerOptions {
            api_addr: args.api_addr,
            jwt_secret: args.jwt_secret.clone(),
            ..RunnerOptions::default()
        },
        sim_addr: args.sim_addr,
        sim_devices: args.devices,
        sim_seed: 1,
    };
    let service = LocalService::start(&workspace, aws.endpoints.clone(), options).await?;

    // A token to try the sync rules on until tokens are created through the API.
    let store = Store::new(
        service.clients.dynamodb.clone(),
        service.config.tables.clone(),
    );
    let account = AccountId::parse("demo")?;
    let token = TokenId::parse("demo-token")?;
    store
        .insert_token(&NewToken {
            account: account.clone(),
            token: token.clone(),
            name: "Demo token".into(),
            created_at: adesync_core::clock::Clock::now(&*service.runner.clock()),
        })
        .await?;
    let jwt = mint_jwt(
        &args.jwt_secret,
        "dev-user",
        account.as_str(),
        &["admin"],
        Duration::from_secs(12 * 3600),
    )?;

    println!("adesync is running ({:.1?} to start)", started.elapsed());
    println!(
        "  API              {}  (GET /v1/health)",
        service.runner.api_url()
    );
    println!("  Apple simulator  {}", service.sim.base_url());
    println!("  DynamoDB         {}", service.endpoints.dynamodb);
    println!("  SQS, KMS         {}", service.endpoints.sqs);
    println!("  started here     {:?}", aws.started());
    println!();
    println!("Point other tools at the same local AWS:");
    for (name, value) in service.endpoints.env_vars() {
        println!("  export {name}={value}");
    }
    println!();
    println!("Try the sync rules on the seeded token:");
    println!("  export ADESYNC_TOKEN={jwt}");
    println!(
        "  curl -s -XPOST -H \"Authorization: Bearer $ADESYNC_TOKEN\" {}/v1/tokens/{token}/sync",
        service.runner.api_url()
    );
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

/// The one test command: what CI runs, what a newcomer runs.
async fn test(cargo_test_args: Vec<String>) -> Result<ExitCode> {
    let workspace = Workspace::locate()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let total = Instant::now();

    step("formatting (cargo fmt --check)", || {
        run(Command::new(&cargo)
            .args(["fmt", "--all", "--check"])
            .current_dir(workspace.root()))
    })?;
    step(
        "installing the local AWS tools (skipped when up to date)",
        || tools::ensure(&workspace).map(|_| ()),
    )?;
    step("lints (cargo clippy --all-targets -D warnings)", || {
        run(Command::new(&cargo)
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
    let mut command = Command::new(&cargo);
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

fn step(what: &str, work: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("==> {what}");
    let started = Instant::now();
    work().with_context(|| format!("{what} failed"))?;
    eprintln!("    done in {:.1?}", started.elapsed());
    Ok(())
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
