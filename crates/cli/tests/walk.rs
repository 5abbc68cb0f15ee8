//! An operator's walk through the `adesync` binary ONLY, against a whole
//! adesync on the local emulators: download the public key, link a token,
//! follow its first full sync, list and delete devices, hit the manual-sync
//! cooldown, renew the token. The Apple side (creating an MDM server and
//! downloading its token file) goes through the Apple simulator's control
//! API, as an administrator would use Apple Business.

use std::path::Path;
use std::process::Output;

use adesync_tests::TestService;
use base64::Engine;
use serde_json::{Value, json};

const DEVICES: usize = 300;

/// The `adesync` binary, pointed at one test service as one administrator.
struct Adesync {
    api_url: String,
    jwt: String,
}

/// A finished `adesync` run.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Adesync {
    async fn run(&self, args: &[&str]) -> Ran {
        let output: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_adesync"))
            .args(args)
            .env("ADESYNC_API_URL", &self.api_url)
            .env("ADESYNC_TOKEN", &self.jwt)
            .env_remove("ADESYNC_DEV_JWT_SECRET")
            .output()
            .await
            .expect("the adesync binary runs");
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and expects exit status `code`.
    async fn expect(&self, code: i32, args: &[&str]) -> Ran {
        let ran = self.run(args).await;
        assert_eq!(ran.code, code, "adesync {}\n{ran}", args.join(" "));
        ran
    }
}

/// What an administrator does in Apple Business: the token file of an MDM
/// server, saved to `path`.
fn save_token_file(server: &Value, path: &Path) {
    let file = base64::engine::general_purpose::STANDARD
        .decode(server["token_file"].as_str().expect("a token file"))
        .expect("base64");
    std::fs::write(path, file).expect("write the token file");
}

#[tokio::test]
async fn an_operator_walks_through_the_product_with_the_cli_only() {
    let env = TestService::start().await;
    let cli = Adesync {
        api_url: env.api(""),
        jwt: env.jwt("acme", &["admin"]),
    };
    let dir = tempfile::tempdir().expect("a scratch folder");
    let pem_path = dir.path().join("adesync.pem");
    let token_path = dir.path().join("token.p7m");

    // 1. The public key, for Apple Business.
    cli.expect(0, &["public-key", "--out", pem_path.to_str().unwrap()])
        .await;
    let pem = std::fs::read_to_string(&pem_path).expect("the certificate was written");
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");

    // 2. In Apple Business: an MDM server with that key, and its token file.
    let server = env
        .sim_post(
            "/_sim/servers",
            json!({
                "name": "Acme MDM server",
                "public_key_pem": pem,
                "org_name": "Acme Inc.",
                "admin_id": "admin@acme.test",
                "devices": DEVICES,
            }),
        )
        .await;
    save_token_file(&server, &token_path);
    let server_uuid = server["server_uuid"].as_str().expect("server uuid");

    // 3. Link it and follow its first full sync to the end.
    let created = cli
        .expect(
            0,
            &[
                "tokens",
                "create",
                "--name",
                "Acme devices",
                "--apple-id",
                "admin@acme.test",
                "--file",
                token_path.to_str().unwrap(),
                "--watch",
            ],
        )
        .await;
    assert!(
        created.stdout.contains(&format!(
            "Full sync succeeded: {DEVICES} devices fetched, {DEVICES} imported"
        )),
        "{created}"
    );
    assert!(
        created.stderr.contains("First full sync queued"),
        "{created}"
    );

    let listed = cli.expect(0, &["tokens", "list", "--json"]).await.json();
    let tokens = listed["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1, "{listed}");
    let token_id = tokens[0]["id"].as_str().expect("token id").to_owned();
    assert_eq!(tokens[0]["device_count"], DEVICES);
    let table = cli.expect(0, &["tokens", "list"]).await;
    assert!(
        table.stdout.contains(&token_id) && table.stdout.contains("Acme MDM server"),
        "{table}"
    );

    // 4. Its devices, every page.
    let devices = cli
        .expect(0, &["devices", "list", &token_id, "--all", "--json"])
        .await
        .json();
    let devices = devices["devices"].as_array().expect("devices").clone();
    assert_eq!(devices.len(), DEVICES);
    let serial = devices[0]["serial_number"]
        .as_str()
        .expect("a serial")
        .to_owned();
    let page = cli
        .expect(0, &["devices", "list", &token_id, "--limit", "10"])
        .await;
    assert!(page.stdout.contains(&serial), "{page}");
    assert!(page.stderr.contains("--cursor"), "more pages: {page}");
    let shown = cli
        .expect(0, &["devices", "show", &token_id, &serial])
        .await;
    assert!(shown.stdout.contains("active"), "{shown}");

    // 5. Delete one: it says the device comes back on the next full sync.
    let deleted = cli
        .expect(0, &["devices", "delete", &token_id, &serial])
        .await;
    assert!(
        deleted.stderr.contains("reappears on the next full sync"),
        "{deleted}"
    );
    let gone = cli
        .expect(1, &["devices", "show", &token_id, &serial])
        .await;
    assert!(gone.stderr.contains("not_found"), "{gone}");

    // 6. A manual sync runs; the next one within 15 minutes is refused (exit 3)
    //    with the retry time; so is a full sync within 7 days of the last.
    let delta = cli
        .expect(0, &["sync", "start", &token_id, "--watch"])
        .await;
    assert!(delta.stdout.contains("Delta sync succeeded"), "{delta}");
    let cooldown = cli.expect(3, &["sync", "start", &token_id]).await;
    assert!(
        cooldown
            .stderr
            .contains("refused (manual_sync_cooldown, HTTP 429)"),
        "{cooldown}"
    );
    assert!(cooldown.stderr.contains("retry in 1"), "{cooldown}");
    let refused = cli
        .expect(3, &["sync", "start", &token_id, "--full", "--json"])
        .await
        .json();
    assert!(
        matches!(
            refused["error"].as_str(),
            Some("manual_sync_cooldown" | "full_sync_cooldown")
        ),
        "{refused}"
    );
    assert!(refused["retry_after_seconds"].as_u64().unwrap_or(0) > 0);

    let status = cli.expect(0, &["sync", "status", &token_id]).await;
    assert!(
        status.stdout.contains("next manual sync") && status.stdout.contains("idle"),
        "{status}"
    );
    let runs = cli.expect(0, &["runs", &token_id, "--json"]).await.json();
    let kinds: Vec<&str> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["delta", "full"], "newest first: {runs}");

    // 7. Renewal: Apple Business hands out a new token file (the old one
    //    stops working); the wrong Apple ID is refused, the right one renews.
    let renewed_file = env
        .sim_post(&format!("/_sim/servers/{server_uuid}/token"), json!({}))
        .await;
    save_token_file(&renewed_file, &token_path);
    let file = token_path.to_str().unwrap();
    let mismatch = cli
        .expect(
            3,
            &[
                "tokens",
                "renew",
                &token_id,
                "--apple-id",
                "someone@else.test",
                "--file",
                file,
            ],
        )
        .await;
    assert!(mismatch.stderr.contains("apple_id_mismatch"), "{mismatch}");
    cli.expect(
        0,
        &[
            "tokens",
            "renew",
            &token_id,
            "--apple-id",
            "admin@acme.test",
            "--file",
            file,
        ],
    )
    .await;
    let token = cli
        .expect(0, &["tokens", "show", &token_id, "--json"])
        .await
        .json();
    assert_eq!(token["id"], token_id.as_str());
    assert_eq!(token["status"], "ok");
    assert!(token["renewed_at"].is_string(), "{token}");
    assert_eq!(token["device_count"], DEVICES - 1, "devices kept: {token}");

    // 8. A token with devices cannot be deleted: refused, with the reason.
    let kept = cli.expect(3, &["tokens", "delete", &token_id]).await;
    assert!(
        kept.stderr.contains("token_not_empty") && kept.stderr.contains("devices_assigned"),
        "{kept}"
    );
}

#[tokio::test]
async fn usage_failures_and_unreachable_apis_exit_differently() {
    let nowhere = Adesync {
        // Port 9 (discard) is not an adesync API on any test machine.
        api_url: "http://127.0.0.1:9".into(),
        jwt: "a.b.c".into(),
    };
    let missing = nowhere
        .expect(2, &["tokens", "create", "--name", "x"])
        .await;
    assert!(missing.stderr.contains("--apple-id"), "{missing}");
    let unreadable = nowhere
        .expect(
            2,
            &[
                "tokens",
                "create",
                "--name",
                "x",
                "--apple-id",
                "a@b.c",
                "--file",
                "/nonexistent/token.p7m",
            ],
        )
        .await;
    assert!(unreadable.stderr.contains("cannot read"), "{unreadable}");
    let unreachable = nowhere.expect(1, &["tokens", "list"]).await;
    assert!(
        unreachable.stderr.contains("cannot reach the adesync API"),
        "{unreachable}"
    );
    let no_token = Adesync {
        api_url: nowhere.api_url.clone(),
        jwt: String::new(),
    };
    let refused = no_token.expect(2, &["tokens", "list"]).await;
    assert!(refused.stderr.contains("ADESYNC_TOKEN"), "{refused}");
    let help = nowhere.expect(0, &["--help"]).await;
    assert!(help.stdout.contains("Exit status:"), "{help}");
    assert!(
        !help.stdout.contains("a.b.c"),
        "the token never shows: {help}"
    );
}

#[tokio::test]
async fn dev_tokens_carry_the_claims_the_runner_reads() {
    let cli = Adesync {
        api_url: "http://127.0.0.1:9".into(),
        jwt: String::new(),
    };
    let ran = cli
        .expect(
            0,
            &[
                "dev-token",
                "--account",
                "acme",
                "--roles",
                "admin,dem",
                "--secret",
                "walk-secret",
                "--hours",
                "1",
            ],
        )
        .await;
    let jwt = ran.stdout.trim();
    // As the runner verifies it: its issuer and audience, or nothing.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["adesync-local"]);
    validation.set_audience(&["adesync"]);
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(b"walk-secret"),
        &validation,
    )
    .expect("signed with the given secret, for the runner's issuer and audience")
    .claims;
    assert_eq!(claims["adesync:account"], "acme");
    assert_eq!(claims["adesync:roles"], json!(["admin", "dem"]));
    assert_eq!(claims["sub"], "dev-user");
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 3600);

    // No well-known default secret to fall back on: without one, no token.
    let refused = cli.expect(2, &["dev-token", "--account", "acme"]).await;
    assert!(refused.stdout.is_empty(), "{refused}");
    assert!(refused.stderr.contains("--secret"), "{refused}");
}

#[tokio::test]
async fn enrollment_policies_and_assignment_through_the_cli() {
    let env = TestService::start().await;
    let cli = Adesync {
        api_url: env.api(""),
        jwt: env.jwt("acme", &["admin"]),
    };
    let dir = tempfile::tempdir().expect("a scratch folder");
    let token_path = dir.path().join("token.p7m");
    let pem = cli.expect(0, &["public-key"]).await.stdout;
    let server = env
        .sim_post(
            "/_sim/servers",
            json!({"name": "Acme MDM server", "public_key_pem": pem, "devices": 20}),
        )
        .await;
    save_token_file(&server, &token_path);
    cli.expect(
        0,
        &[
            "tokens",
            "create",
            "--name",
            "Acme devices",
            "--apple-id",
            "admin@acme.test",
            "--file",
            token_path.to_str().unwrap(),
            "--watch",
        ],
    )
    .await;
    let token = cli.expect(0, &["tokens", "list", "--json"]).await.json()["tokens"][0]["id"]
        .as_str()
        .expect("token id")
        .to_owned();

    // Create, list, change and make default.
    let created = cli
        .expect(
            0,
            &[
                "policies",
                "create",
                &token,
                "--name",
                "Staff",
                "--url",
                "https://mdm.acme.test/enroll",
                "--user-affinity",
                "--settings",
                r#"{"is_supervised": true}"#,
                "--json",
            ],
        )
        .await
        .json();
    let policy = created["policy_id"].as_str().expect("policy id").to_owned();
    assert_eq!(created["user_affinity"], true, "{created}");
    assert_eq!(created["is_supervised"], true, "{created}");
    let listed = cli.expect(0, &["policies", "list", &token]).await;
    assert!(
        listed.stdout.contains(&policy) && listed.stdout.contains("Staff"),
        "{listed}"
    );
    let changed = cli
        .expect(
            0,
            &[
                "policies",
                "update",
                &token,
                &policy,
                "--name",
                "Staff Macs",
                "--json",
            ],
        )
        .await
        .json();
    assert_eq!(changed["name"], "Staff Macs", "{changed}");
    cli.expect(2, &["policies", "update", &token, &policy])
        .await;
    cli.expect(0, &["policies", "default", &token, &policy])
        .await;
    let shown = cli
        .expect(0, &["policies", "show", &token, &policy, "--json"])
        .await
        .json();
    assert_eq!(shown["is_default"], true, "{shown}");

    // Assign two of the token's devices; a serial of no device of the token
    // cannot be assigned (exit status 1).
    let devices = cli
        .expect(0, &["devices", "list", &token, "--json"])
        .await
        .json();
    let serials: Vec<String> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .take(2)
        .map(|d| d["serial_number"].as_str().expect("serial").to_owned())
        .collect();
    let assigned = cli
        .expect(0, &["assign", &token, &policy, &serials[0], &serials[1]])
        .await;
    for serial in &serials {
        assert!(assigned.stdout.contains(serial.as_str()), "{assigned}");
    }
    let device = cli
        .expect(0, &["devices", "show", &token, &serials[0], "--json"])
        .await
        .json();
    assert_eq!(device["policy_id"], policy.as_str(), "{device}");

    // A policy in use is not deleted: refused (exit status 3).
    let in_use = cli
        .expect(3, &["policies", "delete", &token, &policy])
        .await;
    assert!(in_use.stderr.contains("refused"), "{in_use}");
}
