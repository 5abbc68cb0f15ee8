//! A simulator per test, an MDM server on it, and the token file decrypted into credentials
//! exactly as production does; plus helpers for the simulator's control API.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use adesync_apple::walk::outcome;
use adesync_apple::{
    AppleClient, AppleConfig, AppleError, AppleSession, Credentials, Device, RetryPolicy,
};
use adesync_core::cursor::{Failure, Finish, Records, Step, Walk};
use adesync_tokenfile::AccountKey;
use apple_sim::{RunningSim, SimConfig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};

/// One key pair for the whole test binary: RSA generation is the slow part.
static ACCOUNT_KEY: LazyLock<AccountKey> = LazyLock::new(|| {
    AccountKey::generate(
        "adesync-apple-tests",
        Utc::now() - chrono::Duration::hours(1),
        2,
    )
    .expect("an RSA key pair can be generated")
});

/// The test account's certificate, for creating more servers.
pub fn certificate_pem() -> String {
    ACCOUNT_KEY.certificate_pem()
}

/// The token name sessions log under.
pub const TOKEN_KEY: &str = "test-token";

pub struct Sim {
    // Kept so the server lives as long as the test.
    _running: RunningSim,
    pub base_url: String,
    control: reqwest::Client,
    pub server_uuid: String,
    pub credentials: Credentials,
}

/// A simulator with one MDM server holding `devices` generated devices.
pub async fn start(devices: usize) -> Sim {
    let running = apple_sim::spawn(SimConfig {
        seed: 42,
        ..SimConfig::default()
    })
    .await
    .expect("the Apple simulator starts on a free port");
    let base_url = running.base_url();
    let control = reqwest::Client::new();
    let created = call(
        &control,
        &base_url,
        Method::POST,
        "/_sim/servers",
        json!({
            "name": "tests",
            "public_key_pem": ACCOUNT_KEY.certificate_pem(),
            "devices": devices,
        }),
    )
    .await;
    Sim {
        _running: running,
        base_url,
        control,
        server_uuid: text(&created, "server_uuid"),
        credentials: open_token(&text(&created, "token_file")),
    }
}

pub fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing from {value}"))
        .to_owned()
}

/// Decrypts a base64 token file with the test account key, as the service does on upload.
pub fn open_token(token_file: &str) -> Credentials {
    let bytes = STANDARD
        .decode(token_file)
        .expect("the simulator returns base64");
    let token = adesync_tokenfile::open(&bytes, &ACCOUNT_KEY, Utc::now())
        .expect("the token file opens with the account key");
    Credentials {
        consumer_key: token.consumer_key,
        consumer_secret: token.consumer_secret,
        access_token: token.access_token,
        access_secret: token.access_secret,
    }
}

/// Calls the control API and returns its JSON; any refusal fails the test.
async fn call(
    control: &reqwest::Client,
    base_url: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Value {
    let response = control
        .request(method.clone(), format!("{base_url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "{method} {path} answered {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl Sim {
    /// A client with quick retries, so tests that retry stay fast.
    pub fn config(&self) -> AppleConfig {
        AppleConfig {
            base_url: self.base_url.clone(),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy {
                deadline: Duration::from_secs(10),
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
            },
            ..AppleConfig::default()
        }
    }

    pub fn client_with(&self, config: AppleConfig) -> AppleClient {
        AppleClient::new(config).expect("the test configuration is valid")
    }

    pub fn session(&self) -> AppleSession {
        self.session_with(self.config())
    }

    pub fn session_with(&self, config: AppleConfig) -> AppleSession {
        self.client_with(config)
            .session(TOKEN_KEY, self.credentials.clone(), None)
    }

    /// Calls the control API and returns its JSON; any refusal fails the test.
    pub async fn control(&self, method: Method, path: &str, body: Value) -> Value {
        call(&self.control, &self.base_url, method, path, body).await
    }

    /// Arms a fault (`route`, `status`, `body`, `times`, `retry_after`, `delay_ms`).
    pub async fn fault(&self, spec: Value) {
        self.control(Method::POST, "/_sim/faults", spec).await;
    }

    /// Sets behaviour knobs (`rotate_session_every`, `limit_maximum`, ...).
    pub async fn configure(&self, knobs: Value) {
        self.control(Method::POST, "/_sim/config", knobs).await;
    }

    /// Requests the simulator received on `path` (faulted ones included).
    pub async fn requests(&self, path: &str) -> u64 {
        let stats = self.control(Method::GET, "/_sim/stats", Value::Null).await;
        stats["requests"][path].as_u64().unwrap_or(0)
    }

    /// Serial numbers currently assigned to the server.
    pub async fn serials(&self) -> BTreeSet<String> {
        let path = format!("/_sim/servers/{}/devices", self.server_uuid);
        let listed = self.control(Method::GET, &path, Value::Null).await;
        listed["devices"]
            .as_array()
            .expect("the device list is an array")
            .iter()
            .map(|device| text(device, "serial_number"))
            .collect()
    }

    /// Adds generated devices, returning their serials.
    pub async fn add_devices(&self, count: usize) -> Vec<String> {
        let path = format!("/_sim/servers/{}/devices", self.server_uuid);
        let added = self
            .control(Method::POST, &path, json!({ "count": count }))
            .await;
        added["serials"]
            .as_array()
            .expect("added serials are listed")
            .iter()
            .map(|serial| serial.as_str().expect("serials are strings").to_owned())
            .collect()
    }
}

/// What a walk received.
#[derive(Debug)]
pub struct Walked {
    pub finish: Finish,
    /// Fetch records (snapshot).
    pub snapshot: Vec<Device>,
    /// Sync records (changes).
    pub changes: Vec<Device>,
    pub restarts: u32,
    pub pages: u32,
}

/// Why a walk failed: the walk's reason and, when Apple's call failed, its error.
#[derive(Debug)]
pub struct WalkFailed {
    pub failure: Failure,
    pub error: Option<AppleError>,
}

/// Drives `walk` against Apple the way the sync worker does: request the page the walk
/// names, keep its records, feed the outcome back. `between` runs after every page.
pub async fn drive(
    session: &AppleSession,
    mut walk: Walk,
    limit: u32,
    mut between: impl AsyncFnMut(u32),
) -> Result<Walked, WalkFailed> {
    let mut walked = Walked {
        finish: Finish {
            position: walk.request().clone(),
            full_snapshot: false,
            became_full: false,
            warning: None,
        },
        snapshot: Vec::new(),
        changes: Vec::new(),
        restarts: 0,
        pages: 0,
    };
    loop {
        let records = walk.records();
        let result = session
            .request_page(&walk, Some(limit), adesync_apple::CallLimits::standard())
            .await;
        if let Ok(page) = &result {
            walked.pages += 1;
            match records {
                Records::Snapshot => walked.snapshot.extend(page.devices.iter().cloned()),
                Records::Changes => walked.changes.extend(page.devices.iter().cloned()),
            }
            between(walked.pages).await;
        }
        match walk.next(outcome(&result)) {
            Step::Request(next) => walk = next,
            Step::Restart { walk: next, .. } => {
                // Everything counted so far is void: the run starts over as a full sync.
                walked.snapshot.clear();
                walked.changes.clear();
                walked.restarts += 1;
                walk = next;
            }
            Step::Done(finish) => {
                walked.finish = finish;
                return Ok(walked);
            }
            Step::Failed(failure) => {
                return Err(WalkFailed {
                    failure,
                    error: result.err(),
                });
            }
        }
    }
}

/// Serials of records, failing the test on a duplicate.
pub fn unique_serials(devices: &[Device]) -> BTreeSet<String> {
    let mut serials = BTreeSet::new();
    for device in devices {
        assert!(
            serials.insert(device.serial_number.clone()),
            "{} received twice",
            device.serial_number
        );
    }
    serials
}
