//! adesync on one machine: the local AWS, the Apple simulator and every
//! function, wired exactly as template.yaml wires them on AWS.
//!
//! # Layout
//! - [`tools`]: installs DynamoDB Local, moto and the SAM CLI into the
//!   git-ignored `.local/` (pinned by files in `infra/local/`).
//! - [`emulators`]: starts them (or reuses what `AWS_ENDPOINT_URL*` names)
//!   and stops only what it started.
//! - [`template`]: reads template.yaml and creates its tables, queues and
//!   key under a stage name; resolves the functions' environment.
//! - [`runner`]: hosts the functions: HTTP with API Gateway's identity
//!   context, SQS pollers with partial-batch semantics, schedules on a
//!   clock that tests move forward.
//! - [`iam`]: records each function's AWS calls and checks them against
//!   the grants of template.yaml (the local AWS enforces no IAM).
//! - [`demo`]: the walk-through of `adesync-local demo`.
//! - [`console`]: the admin console, served by the runner as the stage's
//!   HTTP API serves it (`/console`), signed in with the development token.
//! - [`LocalService`]: all of the above in one value, for `serve`, the demo
//!   and the end-to-end tests.

pub mod bus;
pub mod console;
pub mod demo;
pub mod emulators;
pub mod faults;
pub mod iam;
pub mod runner;
pub mod template;
pub mod tools;

use std::collections::HashMap;
use std::net::SocketAddr;

use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use anyhow::{Context, Result};

use crate::emulators::Endpoints;
use crate::runner::{Runner, RunnerOptions};
use crate::template::{Deployed, Template};
use crate::tools::Workspace;

/// Options of a local service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Resource name stage (`adesync-<stage>-tokens`, …).
    pub stage: String,
    pub runner: RunnerOptions,
    /// Where the Apple simulator listens (port 0: any free port).
    pub sim_addr: SocketAddr,
    /// Devices each new simulated MDM server starts with.
    pub sim_devices: usize,
    pub sim_seed: u64,
    /// Settings added to (or replacing) the template's environment.
    pub environment: HashMap<String, String>,
    /// Throttle the functions' DynamoDB requests (fault tests).
    pub throttle_dynamodb: Option<faults::ThrottleDynamo>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            stage: "local".into(),
            runner: RunnerOptions::default(),
            sim_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            sim_devices: 0,
            sim_seed: 1,
            environment: HashMap::new(),
            throttle_dynamodb: None,
        }
    }
}

/// The whole service running locally.
pub struct LocalService {
    pub endpoints: Endpoints,
    pub clients: Clients,
    pub deployed: Deployed,
    pub config: Config,
    pub sim: apple_sim::RunningSim,
    pub runner: Runner,
    /// Every AWS call the functions made, as IAM actions.
    pub aws_actions: iam::AwsActions,
}

impl LocalService {
    /// Creates the template's resources on the local AWS at `endpoints`,
    /// starts the Apple simulator and hosts every function.
    pub async fn start(
        workspace: &Workspace,
        endpoints: Endpoints,
        options: ServiceOptions,
    ) -> Result<Self> {
        Self::start_counting(workspace, endpoints, options, None).await
    }

    /// [`LocalService::start`], with the functions' DynamoDB write requests
    /// counted by `writes` (the benchmark's re-sync figure).
    pub async fn start_counting(
        workspace: &Workspace,
        endpoints: Endpoints,
        options: ServiceOptions,
        writes: Option<faults::CountDynamoWrites>,
    ) -> Result<Self> {
        // The simulator's control routes (servers, token files, faults,
        // clock) take no token, so it stays on this machine whatever the API
        // does.
        runner::simulator_on_loopback(options.sim_addr)?;
        let clients = endpoints.clients().await;
        let template = Template::load(&workspace.template_path())?;
        let deployed = template
            .deploy(&clients, &options.stage)
            .await
            .context("creating the resources of template.yaml on the local AWS failed")?;
        let sim = apple_sim::spawn(apple_sim::SimConfig {
            addr: options.sim_addr,
            seed: options.sim_seed,
            default_device_count: options.sim_devices,
            ..Default::default()
        })
        .await
        .context("the Apple simulator did not start")?;
        let parameters = HashMap::from([("AppleBaseUrl".to_owned(), sim.base_url())]);
        let mut environment = deployed.environment(&parameters)?;
        environment.extend(options.environment.clone());
        let config = Config::from_lookup(|name| environment.get(name).cloned())?;
        let mut runner_options = options.runner;
        let sim_clock = format!("{}/_sim/clock", sim.base_url());
        if runner_options.clock_speed != 1.0 {
            // Apple's clock runs as fast as ours from the start.
            reqwest::Client::new()
                .post(&sim_clock)
                .json(&serde_json::json!({ "speed": runner_options.clock_speed }))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .context("the Apple simulator's clock did not take the runner's speed")?;
        }
        runner_options.linked_clocks.push(sim_clock);
        // The functions may get a throttled DynamoDB; the service's own
        // handle (what tests check with) never is.
        let mut function_clients = clients.clone();
        if let Some(throttle) = options.throttle_dynamodb.clone() {
            function_clients.dynamodb = aws_sdk_dynamodb::Client::from_conf(
                clients
                    .dynamodb
                    .config()
                    .to_builder()
                    .interceptor(throttle)
                    .build(),
            );
        }
        if let Some(writes) = writes {
            function_clients.dynamodb = aws_sdk_dynamodb::Client::from_conf(
                function_clients
                    .dynamodb
                    .config()
                    .to_builder()
                    .interceptor(writes)
                    .build(),
            );
        }
        let aws_actions = iam::AwsActions::default();
        let runner = Runner::start(
            deployed.clone(),
            &config,
            &function_clients,
            Some(&aws_actions),
            runner_options,
        )
        .await?;
        Ok(Self {
            endpoints,
            clients,
            deployed,
            config,
            sim,
            runner,
            aws_actions,
        })
    }

    /// The functions' AWS calls so far, each resource named by its logical
    /// id in template.yaml.
    pub fn aws_calls(&self) -> Vec<iam::AwsCall> {
        iam::by_logical_id(self.aws_actions.calls(), &self.deployed)
    }

    /// The functions' AWS calls so far that template.yaml's IAM would deny
    /// on AWS (the local AWS allows them all).
    pub fn denied_aws_calls(&self, workspace: &Workspace) -> Result<Vec<String>> {
        let template = std::fs::read_to_string(workspace.template_path())
            .context("cannot read template.yaml")?;
        Ok(iam::Grants::parse(&template)?.denied(&self.aws_calls()))
    }
}

/// The repository stands on its own: every `.md` file its code and documents
/// name exists in it (a reference to a document kept elsewhere is a dead end
/// for whoever clones the repository).
#[cfg(test)]
mod doc_references {
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .expect("the workspace root")
    }

    /// Every `*.md` name in `text`, as written.
    fn references(text: &str) -> Vec<&str> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
            .map(|token| token.trim_end_matches('.'))
            .filter(|token| token.ends_with(".md") && token.len() > 3)
            .collect()
    }

    /// Whether `reference`, written in `file`, names a file of the repository:
    /// relative to the file (Markdown links), to the root (`docs/apple.md`), or
    /// a bare name next to the file or in docs/.
    fn resolves(root: &Path, file: &Path, reference: &str) -> bool {
        let dir = file.parent().unwrap_or(root);
        let reference = reference.trim_start_matches("./");
        let candidates = if reference.contains('/') {
            vec![dir.join(reference), root.join(reference)]
        } else {
            vec![
                dir.join(reference),
                root.join("docs").join(reference),
                root.join(reference),
            ]
        };
        candidates.iter().any(|path| path.is_file())
    }

    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("a readable directory")
            .flatten()
        {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    sources(&path, found);
                }
            } else if [".rs", ".md", ".yaml", ".toml"]
                .iter()
                .any(|ext| name.ends_with(ext))
            {
                found.push(path);
            }
        }
    }

    #[test]
    fn every_document_the_repository_names_is_in_it() {
        let root = root();
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(
            files.len() > 50,
            "the walk found the sources: {}",
            files.len()
        );
        let mut dead = Vec::new();
        let mut checked = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for reference in references(&text) {
                checked += 1;
                if !resolves(&root, file, reference) {
                    dead.push(format!(
                        "{}: {reference}",
                        file.strip_prefix(&root).unwrap_or(file).display()
                    ));
                }
            }
        }
        assert!(checked > 20, "references were found: {checked}");
        assert!(
            dead.is_empty(),
            "documents named but not in the repository:\n{}",
            dead.join("\n")
        );
    }

    #[test]
    fn a_reference_to_a_document_kept_elsewhere_is_caught() {
        let root = root();
        let file = root.join("crates/core/src/sync.rs");
        // Built at run time, so the scan above does not find them in this file.
        let elsewhere = format!("{}.md", "apple-dep-api");
        let design = format!("docs/{}.md", "design");
        let up = concat!("../../", "docs/product.md");
        let text = format!("see product.md and `{elsewhere}` §4, docs/apple.md §4 and {up}.");
        assert_eq!(
            references(&text),
            ["product.md", elsewhere.as_str(), "docs/apple.md", up]
        );
        assert!(
            resolves(&root, &file, "product.md"),
            "a bare name found in docs/"
        );
        assert!(!resolves(&root, &file, &elsewhere));
        assert!(!resolves(&root, &file, &design));
        let readme = root.join("infra/apple-sim/README.md");
        assert!(resolves(&root, &readme, concat!("../../", "docs/apple.md")));
    }
}

/// `cargo run -p adesync-local -- test` builds this binary, then runs
/// `cargo test --workspace`. Cargo picks a dependency's features from the
/// packages being built, so unless both builds see the same features every
/// shared dependency (the AWS SDK included) compiles twice on a clean
/// machine. The workspace-hack crate (generated by `cargo hakari generate`)
/// evens them out; this fails when it has drifted from the dependencies.
#[cfg(test)]
mod build_sharing {
    use std::collections::BTreeSet;

    fn features(args: &[&str]) -> BTreeSet<String> {
        let output = crate::tools::cargo()
            .args(["tree", "-q", "--prefix", "none", "-f", "{p} [{f}]"])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.ends_with("(*)"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn this_binary_and_the_workspace_tests_build_dependencies_with_the_same_features() {
        let alone = features(&["-p", "adesync-local", "-e", "normal,build"]);
        let workspace = features(&["--workspace", "-e", "normal,build,dev"]);
        assert!(alone.len() > 100, "cargo tree listed the dependencies");
        let differing: Vec<_> = alone.difference(&workspace).collect();
        assert!(
            differing.is_empty(),
            "built with other features than in `cargo test --workspace` (so compiled twice); \
             run `cargo install cargo-hakari --locked && cargo hakari generate`:\n{differing:#?}"
        );
    }
}
