//! Schema-driven fuzzing of the HTTP API with schemathesis.
//!
//! A local service (its own stage, the API on a free port, no schedules so
//! nothing writes on its own) gets a token created through the real flow,
//! its synced devices, an enrollment policy and a second, empty token to be
//! deleted; schemathesis then sends requests generated from
//! docs/openapi.yaml as that account's administrator:
//! - invalid requests only (`--mode negative`): never a 5xx, every one
//!   refused, and the DynamoDB tables identical before and after (no write
//!   on a 4xx);
//! - requests the document allows (`--mode positive`, real ids passed in):
//!   never a 5xx, and every answer's status, content type and body as the
//!   document says.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

use adesync_local::demo::DemoClient;
use adesync_local::emulators::Endpoints;
use adesync_local::runner::{RunnerOptions, mint_jwt};
use adesync_local::tools::{Tools, Workspace};
use adesync_local::{LocalService, ServiceOptions};

use super::{ApiFuzz, ApiFuzzRun};

/// Examples per operation and phase: enough to reach every documented
/// answer, few enough that both runs take a couple of minutes.
const MAX_EXAMPLES: u32 = 60;

/// Devices of the fuzzed token's simulated MDM server.
const DEVICES: usize = 40;

/// The ids the generated requests are pointed at.
struct Fixture {
    token: String,
    victim: String,
    serial: String,
    jwt: String,
}

/// Runs both schemathesis runs; every problem ends up in the result (the
/// document says what happened rather than the command stopping early).
pub async fn run(workspace: &Workspace, endpoints: Endpoints, tools: &Tools) -> ApiFuzz {
    let mut fuzz = ApiFuzz::default();
    if let Err(error) = run_into(workspace, endpoints, tools, &mut fuzz).await {
        fuzz.error = Some(format!("{error:#}"));
    }
    fuzz
}

async fn run_into(
    workspace: &Workspace,
    endpoints: Endpoints,
    tools: &Tools,
    fuzz: &mut ApiFuzz,
) -> Result<()> {
    let schemathesis = tools.schemathesis();
    if !schemathesis.is_file() {
        bail!(
            "{} is missing (infra/local/requirements.txt pins it)",
            schemathesis.display()
        );
    }
    let stage = format!("rel{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let runner = RunnerOptions {
        schedules: false,
        ..RunnerOptions::default()
    };
    let secret = runner.jwt_secret.clone();
    let service = LocalService::start(
        workspace,
        endpoints,
        ServiceOptions {
            stage,
            runner,
            ..ServiceOptions::default()
        },
    )
    .await
    .context("the local service for the API fuzzing did not start")?;
    let fixture = seed(&service, &secret).await?;
    let dir = workspace.local_dir().join("reliability");
    std::fs::create_dir_all(&dir)?;
    let api = service.runner.api_url();
    let document = workspace.root().join("docs/openapi.yaml");

    // Invalid requests only. renewToken and startSync get the real token so
    // their bodies are checked on an object that exists (a write there
    // would matter most); startSync's token is in its 15-minute manual
    // cooldown, so even a request that turned out valid could not start a
    // run. Every other id is generated, hence unknown.
    let before = quiet_snapshot(&service).await?;
    let config = negative_config(&fixture.token);
    let negative = schemathesis_run(
        &schemathesis,
        &dir,
        "invalid requests",
        "negative",
        "not_a_server_error,negative_data_rejection",
        &config,
        &document,
        &api,
        &fixture.jwt,
    )?;
    fuzz.runs.push(negative);
    // Whatever a request queued has had time to land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = snapshot(&service).await?;
    let changed = diff(&before, &after);
    let accepted = std::fs::read_to_string(dir.join(cassette_name("negative")))
        .context("reading the invalid-only run's cassette")
        .and_then(|text| accepted_writes(&text));
    let run = fuzz.runs.last_mut().expect("the run just pushed");
    match &accepted {
        Ok(accepted) => {
            let valid: Vec<_> = accepted.iter().filter(|w| w.valid).cloned().collect();
            if !valid.is_empty() {
                run.failures.push(format!(
                    "the invalid-only run sent requests schemathesis itself generated valid, and the API accepted them, \
                     so their writes cannot be told from a bug's: {}",
                    listed(&valid)
                ));
            }
        }
        Err(error) => run.failures.push(format!("{error:#}")),
    }
    if !changed.is_empty() {
        let culprits = match &accepted {
            Ok(accepted) if !accepted.is_empty() => {
                format!("; the writes the API accepted: {}", listed(accepted))
            }
            _ => String::new(),
        };
        run.failures.push(format!(
            "tables changed by invalid requests: {}{culprits}",
            changed.join("; ")
        ));
    }
    if !run.failures.is_empty() {
        run.passed = false;
    }
    fuzz.unchanged_after_negative = Some(changed.is_empty());

    // Valid requests on real objects: deleteToken gets the empty token, so
    // the token every other operation uses stays.
    let config = format!(
        "[parameters]\n\"path.token_id\" = \"{t}\"\n\"path.serial\" = \"{s}\"\n\n\
         [[operations]]\ninclude-operation-id = \"deleteToken\"\nparameters = {{ \"path.token_id\" = \"{v}\" }}\n",
        t = fixture.token,
        s = fixture.serial,
        v = fixture.victim
    );
    let positive = schemathesis_run(
        &schemathesis,
        &dir,
        "valid requests",
        "positive",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        &config,
        &document,
        &api,
        &fixture.jwt,
    )?;
    fuzz.runs.push(positive);
    fuzz.aws_calls = service.aws_calls();
    Ok(())
}

/// The invalid-only run's schemathesis configuration. renewToken and
/// startSync get the real token (see `run_into`).
///
/// Extra data sources are off: schemathesis otherwise fills parameters
/// with values it collected (the JWT's `sub` for any `user_id`, ids from
/// answers), and a value drawn that way by a "negative" strategy is valid,
/// so the case is sent as a valid request. `PUT /v1/licenses/users/fuzz-user
/// {"licensed": true}` was one: a real grant of the caller's own license
/// that changed the accounts table in a run meant to change nothing. The
/// stateful phase is off: it reads those values with no setting to stop it
/// (4.32.5) and sent `POST /v1/tokens/<the real token>/policies` valid (201).
/// `accepted_writes` names any valid request that still gets through.
fn negative_config(token: &str) -> String {
    let mut config = String::from("[phases.stateful]\nenabled = false\n\n");
    for phase in ["examples", "coverage", "fuzzing"] {
        config.push_str(&format!(
            "[phases.{phase}.extra-data-sources]\nresponses = false\n\n"
        ));
    }
    for operation in ["renewToken", "startSync"] {
        config.push_str(&format!(
            "[[operations]]\ninclude-operation-id = \"{operation}\"\nparameters = {{ \"path.token_id\" = \"{token}\" }}\n\n"
        ));
    }
    config
}

fn cassette_name(mode: &str) -> String {
    format!("schemathesis-{mode}.vcr.yaml")
}

/// A request other than a read that the API answered with a 2xx.
#[derive(Debug, Clone, PartialEq)]
struct AcceptedWrite {
    method: String,
    path: String,
    status: String,
    /// schemathesis generated it valid by the document.
    valid: bool,
}

/// The writes of a schemathesis cassette (`--report vcr`) the API accepted.
fn accepted_writes(cassette: &str) -> Result<Vec<AcceptedWrite>> {
    #[derive(serde::Deserialize)]
    struct Cassette {
        #[serde(default)]
        http_interactions: Vec<Interaction>,
    }
    #[derive(serde::Deserialize)]
    struct Interaction {
        generation: Generation,
        request: Request,
        response: Option<Response>,
    }
    #[derive(serde::Deserialize)]
    struct Generation {
        mode: String,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        uri: String,
        method: String,
    }
    #[derive(serde::Deserialize)]
    struct Response {
        status: Status,
    }
    #[derive(serde::Deserialize)]
    struct Status {
        code: String,
    }
    let cassette: Cassette =
        serde_yaml_ng::from_str(cassette).context("the schemathesis cassette is not readable")?;
    Ok(cassette
        .http_interactions
        .into_iter()
        .filter_map(|i| {
            let status = i.response?.status.code;
            let read = matches!(i.request.method.as_str(), "GET" | "HEAD" | "OPTIONS");
            (status.starts_with('2') && !read).then(|| AcceptedWrite {
                path: i
                    .request
                    .uri
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|at| rest[at..].to_owned()))
                    .unwrap_or(i.request.uri),
                method: i.request.method,
                status,
                valid: i.generation.mode == "positive",
            })
        })
        .collect())
}

/// The first few, each once, with how many times it was sent.
fn listed(writes: &[AcceptedWrite]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for w in writes {
        let line = format!(
            "{} {} → {} ({})",
            w.method,
            w.path,
            w.status,
            if w.valid { "valid" } else { "invalid" }
        );
        match counts.iter_mut().find(|(l, _)| *l == line) {
            Some((_, n)) => *n += 1,
            None => counts.push((line, 1)),
        }
    }
    let shown: Vec<_> = counts
        .iter()
        .take(5)
        .map(|(l, n)| {
            if *n > 1 {
                format!("{l} ×{n}")
            } else {
                l.clone()
            }
        })
        .collect();
    let more = counts.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{}, and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// A token synced with devices, in its manual-sync cooldown, with a
/// policy; an empty second token; an administrator's JWT.
async fn seed(service: &LocalService, secret: &str) -> Result<Fixture> {
    let jwt = mint_jwt(
        secret,
        "fuzz-user",
        "fuzz",
        &["admin"],
        Duration::from_secs(3600),
    )?;
    let api = service.runner.api_url();
    let demo = DemoClient::new(api.clone(), service.sim.base_url(), jwt.clone())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{api}{path}"))
            .bearer_auth(&jwt);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };

    let (token, _) = demo.create_token(DEVICES).await?;
    let (victim, _) = demo.create_token(0).await?;
    for id in [&token, &victim] {
        wait_idle(&call, id).await?;
    }
    let (status, body) = call(
        reqwest::Method::POST,
        format!("/v1/tokens/{token}/sync"),
        Some(json!({"kind": "delta"})),
    )
    .await?;
    if status != 202 {
        bail!("the fixture's manual sync was refused: {status} {body}");
    }
    wait_idle(&call, &token).await?;
    let (status, body) = call(
        reqwest::Method::POST,
        format!("/v1/tokens/{token}/policies"),
        Some(json!({"name": "Fuzzing", "url": "https://mdm.fuzz.test/enroll"})),
    )
    .await?;
    if status != 201 {
        bail!("the fixture's policy was refused: {status} {body}");
    }
    let (status, body) = call(
        reqwest::Method::GET,
        format!("/v1/tokens/{token}/devices?limit=1"),
        None,
    )
    .await?;
    let serial = body["devices"][0]["serial_number"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the fixture token lists no device: {status} {body}"))?;
    Ok(Fixture {
        token,
        victim,
        serial,
        jwt,
    })
}

async fn wait_idle<F, Fut>(call: &F, token: &str) -> Result<()>
where
    F: Fn(reqwest::Method, String, Option<Value>) -> Fut,
    Fut: Future<Output = Result<(u16, Value)>>,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = call(
            reqwest::Method::GET,
            format!("/v1/tokens/{token}/sync"),
            None,
        )
        .await?;
        if status == 200 && body["state"] == "idle" && !body["last_outcome"].is_null() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the fixture token {token}'s sync did not finish: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One `schemathesis run`; its figures from its own summary.
#[allow(clippy::too_many_arguments)]
fn schemathesis_run(
    schemathesis: &Path,
    dir: &Path,
    name: &str,
    mode: &str,
    checks: &str,
    config: &str,
    document: &Path,
    api: &str,
    jwt: &str,
) -> Result<ApiFuzzRun> {
    let config_path = dir.join(format!("schemathesis-{mode}.toml"));
    std::fs::write(&config_path, config)?;
    let seed: u32 = rand_seed();
    eprintln!("==> schemathesis: {name} (--mode {mode}, seed {seed})");
    let started = Instant::now();
    let output = Command::new(schemathesis)
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(document)
        .args(["--url", api])
        .args(["--header", &format!("Authorization: Bearer {jwt}")])
        .args(["--mode", mode])
        .args(["--checks", checks])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--seed", &seed.to_string()])
        // One worker for the invalid-only run: its path-parameter negations
        // make hypothesis parse sources from two threads at once, which
        // CPython 3.11's ast module can fail ("AST constructor recursion
        // depth mismatch", a runtime error that fails the run).
        .args(["--workers", if mode == "negative" { "1" } else { "2" }])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        // Every request and answer, so a change to the tables can be traced
        // to the request that made it (the summary shows only failed checks).
        .args(["--report", "vcr"])
        .arg("--report-vcr-path")
        .arg(dir.join(cassette_name(mode)))
        .arg("--continue-on-failure")
        .arg("--no-color")
        .current_dir(dir)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", schemathesis.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(dir.join(format!("schemathesis-{mode}.log")), &text)?;
    let summary = Summary::parse(&text);
    let mut failures = summary.failures.clone();
    if summary.cases == 0 {
        failures.push(format!(
            "schemathesis tried no case (exit {}); see .local/reliability/schemathesis-{mode}.log",
            output.status
        ));
    }
    let passed = output.status.success() && summary.cases > 0 && summary.failures.is_empty();
    if !passed && failures.is_empty() {
        failures.push(format!(
            "schemathesis exited with {}; see .local/reliability/schemathesis-{mode}.log",
            output.status
        ));
    }
    eprintln!(
        "    {} cases on {} operations in {seconds:.1}s: {}",
        summary.cases,
        summary.operations,
        if passed { "ok" } else { "FAILED" }
    );
    if !passed {
        eprintln!("{text}");
    }
    Ok(ApiFuzzRun {
        name: format!("{name} (seed {seed})"),
        mode: mode.to_owned(),
        checks: checks.replace(',', ", "),
        operations: summary.operations,
        cases: summary.cases,
        seconds,
        passed,
        failures,
    })
}

fn rand_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    nanos % 1_000_000
}

/// What schemathesis's closing summary says.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub operations: usize,
    pub cases: u64,
    pub failures: Vec<String>,
}

impl Summary {
    /// Reads "Tested: N" (operations), "N generated" (test cases) and the
    /// names of failed checks from the summary schemathesis prints.
    pub fn parse(text: &str) -> Self {
        let mut summary = Self::default();
        let mut in_failures = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(n) = trimmed.strip_prefix("Tested:") {
                summary.operations = n.trim().parse().unwrap_or(0);
            }
            if let Some(n) = trimmed.split_once(" generated").map(|(n, _)| n)
                && let Ok(n) = n.trim().parse::<u64>()
            {
                summary.cases = n;
            }
            if trimmed.starts_with("Failures:") {
                in_failures = true;
                continue;
            }
            if in_failures {
                if trimmed.is_empty() || trimmed.ends_with(':') {
                    in_failures = trimmed.is_empty() && summary.failures.is_empty();
                    continue;
                }
                summary.failures.push(trimmed.to_owned());
            }
        }
        summary
    }
}

/// Every table's items, each in a canonical text form, sorted.
type Snapshot = BTreeMap<String, Vec<String>>;

/// A snapshot taken once the tables stopped changing (the fixture's syncs
/// and imports are over).
async fn quiet_snapshot(service: &LocalService) -> Result<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = snapshot(service).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = snapshot(service).await?;
        if now == last {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!(
                "the tables kept changing with no request sent: {}",
                diff(&last, &now).join("; ")
            );
        }
        last = now;
    }
}

async fn snapshot(service: &LocalService) -> Result<Snapshot> {
    let client = &service.clients.dynamodb;
    let mut snapshot = Snapshot::new();
    for table in service.deployed.tables.values() {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .with_context(|| format!("scanning {table}"))?;
            for item in page.items() {
                items.push(canonical_item(item));
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        items.sort();
        snapshot.insert(table.clone(), items);
    }
    Ok(snapshot)
}

fn canonical_item(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    let sorted: BTreeMap<_, _> = item.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={}", canonical(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A value's text with map keys and set members in a fixed order, so the
/// same item always reads the same.
fn canonical(value: &AttributeValue) -> String {
    match value {
        AttributeValue::M(map) => format!("{{{}}}", canonical_item(map)),
        AttributeValue::L(list) => format!(
            "[{}]",
            list.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => {
            let mut set = set.clone();
            set.sort();
            format!("<{}>", set.join(","))
        }
        AttributeValue::Bs(set) => {
            let mut set: Vec<_> = set.iter().map(|b| format!("{:?}", b.as_ref())).collect();
            set.sort();
            format!("<{}>", set.join(","))
        }
        other => format!("{other:?}"),
    }
}

/// Per table: how the two snapshots differ (empty: identical).
fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut changes = Vec::new();
    for (table, items) in after {
        let old = before.get(table).map(Vec::as_slice).unwrap_or_default();
        if old != items.as_slice() {
            let added: Vec<_> = items.iter().filter(|i| !old.contains(i)).collect();
            let removed: Vec<_> = old.iter().filter(|i| !items.contains(i)).collect();
            let keys: Vec<_> = added.iter().chain(&removed).map(|i| sort_key(i)).collect();
            changes.push(format!(
                "{table}: {} → {} items ({} new or changed, {} gone or changed; sort keys {}; hash {:016x} → {:016x})",
                old.len(),
                items.len(),
                added.len(),
                removed.len(),
                keys.join(", "),
                hash(old),
                hash(items)
            ));
        }
    }
    changes
}

/// The `sk` of a canonical item (`sk=S("…")`), which names what the item is
/// (`license#user#…`, `enrollment#…`) without showing any secret value.
fn sort_key(item: &str) -> String {
    item.split_once("sk=S(\"")
        .and_then(|(_, rest)| rest.split_once("\")"))
        .map_or_else(|| "(none)".to_owned(), |(key, _)| key.to_owned())
}

fn hash(items: &[String]) -> u64 {
    let mut hasher = DefaultHasher::new();
    items.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_item_reads_the_same_whatever_its_map_order() {
        let a = std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S("T#1".into())),
            (
                "m".to_owned(),
                AttributeValue::M(std::collections::HashMap::from([
                    ("x".to_owned(), AttributeValue::N("1".into())),
                    (
                        "y".to_owned(),
                        AttributeValue::Ss(vec!["b".into(), "a".into()]),
                    ),
                ])),
            ),
        ]);
        let mut b = a.clone();
        b.insert(
            "m".to_owned(),
            AttributeValue::M(std::collections::HashMap::from([
                (
                    "y".to_owned(),
                    AttributeValue::Ss(vec!["a".into(), "b".into()]),
                ),
                ("x".to_owned(), AttributeValue::N("1".into())),
            ])),
        );
        assert_eq!(canonical_item(&a), canonical_item(&b));
        b.insert("pk".to_owned(), AttributeValue::S("T#2".into()));
        assert_ne!(canonical_item(&a), canonical_item(&b));
    }

    #[test]
    fn the_invalid_only_run_fills_no_parameter_from_collected_values() {
        let config = negative_config("T1");
        for phase in ["examples", "coverage", "fuzzing"] {
            assert!(
                config.contains(&format!(
                    "[phases.{phase}.extra-data-sources]\nresponses = false\n"
                )),
                "{phase}: {config}"
            );
        }
        assert!(config.contains("[phases.stateful]\nenabled = false\n"));
        assert!(config.contains(
            "include-operation-id = \"startSync\"\nparameters = { \"path.token_id\" = \"T1\" }"
        ));
    }

    /// Shortened from the cassette of the run that changed the accounts
    /// table: the JWT's `sub` drawn for `user_id`, sent as a valid request.
    const CASSETTE: &str = r#"
command: 'st run ...'
recorded_with: 'Schemathesis 4.32.5'
seed: 18222
http_interactions:
- id: 'aL8MpJ'
  status: 'SUCCESS'
  generation:
    time: 2.6e-05
    mode: negative
  phase:
    name: 'coverage'
    data:
      description: "Missing request body"
  request:
    uri: 'http://127.0.0.1:45057/v1/licenses/devices/0'
    method: 'PUT'
  response:
    status:
      code: '400'
      message: "Bad Request"
- id: 'D2xy4K'
  generation:
    mode: negative
  request:
    uri: 'http://127.0.0.1:45057/v1/public-key'
    method: 'GET'
  response:
    status:
      code: '200'
- id: 'NyozjC'
  generation:
    mode: negative
  request:
    uri: 'http://127.0.0.1:45057/v1/licenses/devices/0'
    method: 'PUT'
  response:
    status:
      code: '200'
- id: 'kb7lPr'
  status: 'SUCCESS'
  generation:
    time: 0.0057
    mode: positive
  components:
    path:
      mode: 'positive'
    body:
      mode: 'positive'
  phase:
    name: 'fuzzing'
    data: {}
  checks:
    - name: 'negative_data_rejection'
      status: 'SUCCESS'
      message: ~
  request:
    uri: 'http://127.0.0.1:45057/v1/licenses/users/fuzz-user'
    method: 'PUT'
    headers:
      "Authorization":
      - "[Filtered]"
    body:
      encoding: 'utf-8'
      string: "{\"licensed\": true}"
  response:
    status:
      code: '200'
      message: "OK"
    body:
      encoding: 'utf-8'
      string: "{\"licensed\":true,\"user_id\":\"fuzz-user\"}"
    http_version: '1.1'
- id: 'nOansw'
  generation:
    mode: negative
  request:
    uri: 'http://127.0.0.1:45057/v1/tokens'
    method: 'POST'
  response: ~
"#;

    #[test]
    fn a_valid_request_the_api_accepted_in_the_invalid_only_run_is_named() {
        let writes = accepted_writes(CASSETTE).unwrap();
        let valid: Vec<_> = writes.iter().filter(|w| w.valid).cloned().collect();
        assert_eq!(
            valid,
            [AcceptedWrite {
                method: "PUT".into(),
                path: "/v1/licenses/users/fuzz-user".into(),
                status: "200".into(),
                valid: true,
            }]
        );
        assert_eq!(
            writes.len(),
            2,
            "reads, refusals and no answer are not writes"
        );
        assert_eq!(
            listed(&writes),
            "PUT /v1/licenses/devices/0 → 200 (invalid), PUT /v1/licenses/users/fuzz-user → 200 (valid)"
        );
        assert!(accepted_writes("http_interactions: [").is_err());
    }

    #[test]
    fn a_changed_table_is_named() {
        let before = Snapshot::from([("t".to_owned(), vec!["a".to_owned()])]);
        let mut after = before.clone();
        assert!(diff(&before, &after).is_empty());
        after.insert("t".to_owned(), vec!["a".to_owned(), "b".to_owned()]);
        let changes = diff(&before, &after);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].starts_with("t: 1 → 2 items (1 new"));
        let item = r#"account_id=S("acme"),licensed_at=N("1"),sk=S("license#user#jo")"#;
        after.insert("t".to_owned(), vec!["a".to_owned(), item.to_owned()]);
        assert!(diff(&before, &after)[0].contains("sort keys license#user#jo;"));
    }
}
