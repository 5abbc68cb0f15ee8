//! The local AWS: DynamoDB Local for DynamoDB, moto for SQS, KMS and
//! EventBridge — or whatever already answers at the standard endpoint
//! variables (LocalStack with Docker works unchanged).
//!
//! Only what this process started is stopped, when [`LocalAws`] is dropped
//! or this process dies (the children get `PR_SET_PDEATHSIG`).

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adesync_runtime::aws::Clients;
use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::tools::{self, Tools, Workspace};

/// Where each AWS service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub dynamodb: String,
    pub sqs: String,
    pub kms: String,
    /// EventBridge (moto, when the project starts the local AWS).
    pub eventbridge: String,
}

impl Endpoints {
    /// Endpoints named by the standard variables (`AWS_ENDPOINT_URL_<SERVICE>`,
    /// falling back to `AWS_ENDPOINT_URL`); `None` for a service without one.
    fn partial_from_env() -> (Option<String>, Option<String>, Option<String>) {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let general = get("AWS_ENDPOINT_URL");
        (
            get("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| general.clone()),
            get("AWS_ENDPOINT_URL_SQS").or_else(|| general.clone()),
            get("AWS_ENDPOINT_URL_KMS").or(general),
        )
    }

    /// EventBridge's endpoint from the environment, else moto's (the SQS one).
    fn eventbridge_from_env(sqs: &str) -> String {
        ["AWS_ENDPOINT_URL_EVENTBRIDGE", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| sqs.to_owned())
    }

    /// All endpoints from the environment, or `None` if any is missing.
    pub fn from_env() -> Option<Self> {
        match Self::partial_from_env() {
            (Some(dynamodb), Some(sqs), Some(kms)) => Some(Self {
                eventbridge: Self::eventbridge_from_env(&sqs),
                dynamodb,
                sqs,
                kms,
            }),
            _ => None,
        }
    }

    /// Shell lines that point another process (say `cargo test`) at these endpoints.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb.clone()),
            ("AWS_ENDPOINT_URL_SQS", self.sqs.clone()),
            ("AWS_ENDPOINT_URL_KMS", self.kms.clone()),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", self.eventbridge.clone()),
            // Anything else: moto.
            ("AWS_ENDPOINT_URL", self.sqs.clone()),
            ("AWS_REGION", region()),
            (
                "AWS_ACCESS_KEY_ID",
                std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
            ),
        ]
    }

    /// SDK clients pointed at these endpoints.
    pub async fn clients(&self) -> Clients {
        Clients::with_endpoints(
            &sdk_config().await,
            &self.dynamodb,
            &self.sqs,
            &self.kms,
            &self.eventbridge,
        )
    }
}

fn region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into())
}

/// SDK configuration for local endpoints: the environment's credentials,
/// or dummy ones (emulators accept any).
pub async fn sdk_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region()));
    if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "adesync-local",
        ));
    }
    loader.load().await
}

/// The running local AWS.
#[derive(Debug)]
pub struct LocalAws {
    pub endpoints: Endpoints,
    started: Vec<Emulator>,
}

impl LocalAws {
    /// Reuses the endpoints the environment names and starts emulators for
    /// the services it does not, installing them first if needed. Returns
    /// once every service answers.
    pub async fn start(workspace: &Workspace) -> Result<Self> {
        let (dynamodb, sqs, kms) = Endpoints::partial_from_env();
        let mut started = Vec::new();
        let needs_tools = dynamodb.is_none() || sqs.is_none() || kms.is_none();
        let tools = if needs_tools {
            Some(tools::ensure(workspace)?)
        } else {
            None
        };

        let dynamodb = match dynamodb {
            Some(url) => url,
            None => {
                let tools = tools.as_ref().context("tools are installed")?;
                let emulator = Emulator::dynamodb_local(tools)?;
                let url = emulator.url.clone();
                started.push(emulator);
                url
            }
        };
        let (sqs, kms) = match (sqs, kms) {
            (Some(sqs), Some(kms)) => (sqs, kms),
            (sqs, kms) => {
                let tools = tools.as_ref().context("tools are installed")?;
                let emulator = Emulator::moto(tools)?;
                let url = emulator.url.clone();
                started.push(emulator);
                (sqs.unwrap_or_else(|| url.clone()), kms.unwrap_or(url))
            }
        };
        let mut local = Self {
            endpoints: Endpoints {
                eventbridge: Endpoints::eventbridge_from_env(&sqs),
                dynamodb,
                sqs,
                kms,
            },
            started,
        };
        local.wait_until_ready(Duration::from_secs(90)).await?;
        Ok(local)
    }

    /// Names of the emulators this process started (empty when all were reused).
    pub fn started(&self) -> Vec<&'static str> {
        self.started.iter().map(|e| e.name).collect()
    }

    async fn wait_until_ready(&mut self, timeout: Duration) -> Result<()> {
        let clients = self.endpoints.clients().await;
        let deadline = Instant::now() + timeout;
        loop {
            for emulator in &mut self.started {
                emulator.check_alive()?;
            }
            let dynamodb = clients.dynamodb.list_tables().limit(1).send().await;
            let sqs = clients.sqs.list_queues().max_results(1).send().await;
            let kms = clients.kms.list_keys().limit(1).send().await;
            match (dynamodb, sqs, kms) {
                (Ok(_), Ok(_), Ok(_)) => return Ok(()),
                (d, s, k) if Instant::now() > deadline => {
                    let mut down = Vec::new();
                    if d.is_err() {
                        down.push(format!("DynamoDB at {}", self.endpoints.dynamodb));
                    }
                    if s.is_err() {
                        down.push(format!("SQS at {}", self.endpoints.sqs));
                    }
                    if k.is_err() {
                        down.push(format!("KMS at {}", self.endpoints.kms));
                    }
                    bail!(
                        "the local AWS did not answer within {timeout:?}: {}. If you set AWS_ENDPOINT_URL* yourself, check that those servers run; otherwise see the logs in .local/logs/",
                        down.join(", ")
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// An emulator process this program started.
#[derive(Debug)]
struct Emulator {
    name: &'static str,
    url: String,
    child: Child,
    log: std::path::PathBuf,
}

impl Emulator {
    fn dynamodb_local(tools: &Tools) -> Result<Self> {
        let port = free_port()?;
        let mut command = Command::new("java");
        command
            .arg("-Djava.library.path=./DynamoDBLocal_lib")
            .arg("-jar")
            .arg("DynamoDBLocal.jar")
            .args(["-inMemory", "-sharedDb", "-port"])
            .arg(port.to_string())
            .current_dir(&tools.dynamodb_local_dir);
        Self::spawn("DynamoDB Local", command, port, &tools.log_dir)
    }

    fn moto(tools: &Tools) -> Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(tools.moto_server());
        command
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string());
        Self::spawn("moto", command, port, &tools.log_dir)
    }

    fn spawn(name: &'static str, mut command: Command, port: u16, log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!(
            "{}-{port}.log",
            name.to_lowercase().replace(' ', "-")
        ));
        let out = File::create(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        eprintln!(
            "adesync-local: started {name} on 127.0.0.1:{port} (log: {})",
            log.display()
        );
        Ok(Self {
            name,
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!(
                "{} exited ({status}) before it was ready:\n{tail}",
                self.name
            );
        }
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the kernel to kill the child when this process dies, so a crashed
/// or killed runner never leaves emulators behind.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free local port")?;
    Ok(listener.local_addr()?.port())
}
