//! The admin console in a real browser: Debian's Chromium driven through
//! its WebDriver (chromedriver) against the local runner, which serves the
//! console as the stage's HTTP API does (`/console`).
//!
//! What an administrator does in the page: download the public key, upload
//! a token file with the file picker, watch the first sync to its end on
//! the progress bar, press Sync and see it disabled with the cooldown's
//! time, page through the devices and delete one (with the seed's warning),
//! create a policy and make it the default. A reader sees no write control
//! on any page. Each test takes screenshots of the pages it visits:
//! into `ADESYNC_CONSOLE_SCREENSHOTS` when set (the README's come from
//! `ADESYNC_CONSOLE_SCREENSHOTS=docs/console`), else under the target
//! directory.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adesync_local::tools;
use adesync_tests::TestService;
use adesync_tests::flows::CreatedToken;
use base64::Engine;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};

const ACCOUNT: &str = "acme-console";

/// A chromedriver of this test and the browser session it drives.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends the driver this test started and the Chromium it started: they
    /// run in a process group of their own, which is killed by its id.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        tools::ensure_browser().expect("Chromium and ChromeDriver install");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(tools::CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // The page shows times in the browser's zone: UTC, as the API.
            .env("TZ", "UTC")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile folder");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{url}/status")).send().await;
            if let Ok(reply) = ready
                && let Ok(body) = reply.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not get ready on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": tools::CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1200",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Ends the browser session (Chromium quits); the driver goes on drop.
    async fn close(&self) {
        self.client.clone().close().await.expect("the session ends");
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than null/false.
    async fn until(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.js(script).await;
            if !value.is_null() && value != false {
                return value;
            }
            if started.elapsed() > timeout {
                let text = self
                    .js("return document.querySelector('main').innerText")
                    .await;
                panic!("{what}: not seen within {timeout:?}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Loads the console at `url` (a sign-in address) afresh and waits
    /// until it has signed in as `role` and shows the tokens.
    async fn sign_in(&self, url: &str, role: &str) {
        self.client.goto("about:blank").await.expect("navigation");
        self.client.goto(url).await.expect("navigation");
        self.until(
            "the console starts",
            Duration::from_secs(20),
            &format!(
                "return document.body.dataset.ready === 'true' && location.hash === '#/tokens'
                   && document.querySelector('#who-roles').innerText === {}",
                json!(role)
            ),
        )
        .await;
    }

    /// Goes to `#hash` of the open console and waits for `ready` (a CSS
    /// selector) to appear.
    async fn page(&self, hash: &str, ready: &str) {
        self.js(&format!("location.hash = {}; return true", json!(hash)))
            .await;
        self.until(
            &format!("{hash} ({ready})"),
            Duration::from_secs(20),
            &format!(
                "return location.hash === {hash} && document.querySelector('main').dataset.rendered === {hash}
                   && document.querySelector({ready}) !== null",
                hash = json!(hash),
                ready = json!(ready)
            ),
        )
        .await;
    }

    async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    async fn type_into(&self, selector: &str, text: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {selector}: {e}"));
    }

    async fn text(&self, selector: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({}); return e ? e.innerText : null",
            json!(selector)
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The write controls on the page (every one is marked `data-write`),
    /// and the buttons whose words would write anyway.
    async fn write_controls(&self) -> Vec<String> {
        let found = self
            .js(
                "const words = /^(sync|delete|delete token|delete device|make default|upload|renew|create policy|save|assign|wipe|retire|factory reset)$/i;
                 return [...document.querySelectorAll('[data-write], button, a.button, input[type=file]')]
                   .filter(e => e.matches('[data-write], input[type=file]') || words.test(e.innerText.trim()))
                   .map(e => e.tagName + ' ' + (e.id || e.innerText.trim()));",
            )
            .await;
        serde_json::from_value(found).expect("a list")
    }

    /// What keeps the page from being used with the keyboard or a screen
    /// reader: a form field without a label, a control without a name, a
    /// control taken out of the tab order, or a tab order forced by
    /// positive `tabindex`.
    async fn accessibility_problems(&self) -> Vec<String> {
        let found = self
            .js(
                "const problems = [];
                 for (const e of document.querySelectorAll('input, select, textarea')) {
                   if (e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
                     problems.push('no label: ' + (e.id || e.name || e.outerHTML));
                 }
                 for (const e of document.querySelectorAll('a[href], button')) {
                   if (!(e.innerText.trim() || e.getAttribute('aria-label')))
                     problems.push('no name: ' + e.outerHTML);
                   if (e.tabIndex < 0) problems.push('not in the tab order: ' + e.outerHTML);
                 }
                 for (const e of document.querySelectorAll('[tabindex]')) {
                   if (e.tabIndex > 0) problems.push('positive tabindex: ' + e.outerHTML);
                 }
                 if (!document.querySelector('main h1')) problems.push('no heading');
                 return problems;",
            )
            .await;
        serde_json::from_value(found).expect("a list")
    }

    /// Activates the control `selector` with the keyboard (Enter).
    async fn press_enter(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .send_keys("\u{E007}")
            .await
            .unwrap_or_else(|e| panic!("Enter on {selector}: {e}"));
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("the screenshots folder");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is written");
    }
}

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("ADESYNC_CONSOLE_SCREENSHOTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                // Relative to the checkout (cargo runs tests in tests/).
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(dir)
            }
        }
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console"),
    }
}

fn console(env: &TestService, jwt: &str) -> String {
    adesync_local::console::sign_in_url(&env.service.runner.api_url(), jwt)
}

#[tokio::test]
async fn an_administrator_links_a_token_syncs_and_manages_devices_and_policies() {
    let started = Instant::now();
    let env = TestService::start().await;
    let browser = Browser::start().await;
    let admin = env.jwt(ACCOUNT, &["admin"]);

    // Signed in with the runner's development token, handed over in the
    // address's fragment; the page removes it from the address bar.
    browser.sign_in(&console(&env, &admin), "admin").await;
    assert!(
        !browser
            .js("return location.href")
            .await
            .to_string()
            .contains("dev-token"),
        "the token stays in the address bar"
    );

    // The public key, as the page downloads it, is what Apple Business gets.
    browser.page("#/public-key", "#pem").await;
    let pem = browser.text("#pem").await;
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    assert_eq!(
        browser
            .js("return document.querySelector('#download-key').download")
            .await,
        "adesync-public-key.pem"
    );
    browser.screenshot("public-key").await;

    // Apple Business makes a token file for it (250 devices, paced so the
    // first sync lasts a few seconds on the progress bar).
    let devices = 250;
    let server = env
        .sim_post(
            "/_sim/servers",
            json!({
                "name": "Acme iPads",
                "public_key_pem": pem.trim_end().to_owned() + "\n",
                "org_name": "Acme Inc.",
                "admin_id": "admin@acme.test",
                "devices": devices,
            }),
        )
        .await;
    env.sim_post("/_sim/rate", json!({ "devices_per_minute": 6000 }))
        .await;
    let file_dir = tempfile::tempdir().expect("a folder");
    let token_file = file_dir.path().join("Acme_iPads_Token.p7m");
    std::fs::write(
        &token_file,
        base64::engine::general_purpose::STANDARD
            .decode(server["token_file"].as_str().expect("a token file"))
            .expect("base64"),
    )
    .expect("the token file is written");

    // Upload it with the file picker.
    browser.page("#/upload", "#upload-form").await;
    browser.type_into("#upload-name", "Acme iPads").await;
    browser
        .type_into("#upload-apple-id", "admin@acme.test")
        .await;
    browser
        .type_into("#upload-file", &token_file.display().to_string())
        .await;
    browser.screenshot("upload").await;
    browser.click("#upload-submit").await;

    // The token's page follows its first full sync on the progress bar.
    let token_id = browser
        .until(
            "the new token's page",
            Duration::from_secs(30),
            "const m = location.hash.match(/^#\\/tokens\\/([^/]+)$/); return m && document.querySelector('#sync-progress') ? m[1] : null",
        )
        .await
        .as_str()
        .expect("an id")
        .to_owned();
    let token = CreatedToken {
        token_id: token_id.clone(),
        server_uuid: server["server_uuid"].as_str().expect("uuid").to_owned(),
        jwt: admin.clone(),
    };
    let mut seen = Vec::new();
    let mut shot = false;
    let watch = Instant::now();
    loop {
        let state = browser
            .js("const r = document.querySelector('#run'); const p = document.querySelector('#sync-progress');
                 return r && p ? [r.dataset.status, p.getAttribute('value'), p.getAttribute('max'), document.querySelector('#progress-text').innerText] : null")
            .await;
        let status = state[0].as_str().unwrap_or_default().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if !shot && (status == "running" || status == "importing") {
            browser.screenshot("token-first-sync").await;
            shot = true;
        }
        if status == "succeeded" {
            assert_eq!(state[1], json!(devices.to_string()), "imported: {state}");
            assert_eq!(state[2], json!(devices.to_string()), "of: {state}");
            let text = state[3].as_str().unwrap_or_default();
            assert!(
                text.contains(&format!("{devices} fetched · {devices} imported")),
                "{text}"
            );
            break;
        }
        assert!(
            status != "failed" && status != "abandoned",
            "the first sync ended {status}: {state}"
        );
        assert!(
            watch.elapsed() < Duration::from_secs(60),
            "the first sync did not end on the page: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().any(|s| s == "running" || s == "importing"),
        "the progress bar never showed the run going: {seen:?}"
    );
    env.sim_post("/_sim/rate", json!({ "devices_per_minute": 0 }))
        .await;

    // Sync: a manual delta, then the button stays disabled with the time
    // the 15-minute cooldown opens it again.
    let enabled = browser
        .js("return !document.querySelector('#sync-button').disabled")
        .await;
    assert_eq!(
        enabled,
        json!(true),
        "Sync is disabled before any manual sync"
    );
    // With the keyboard, as anyone who does not use a mouse presses it.
    browser.press_enter("#sync-button").await;
    let reason = browser
        .until(
            "Sync disabled by the cooldown",
            Duration::from_secs(30),
            "const b = document.querySelector('#sync-button'); const r = document.querySelector('#sync-reason');
             return b && b.disabled && r && r.innerText.includes('15 minutes') ? r.innerText : null",
        )
        .await;
    let status = env.sync_status(&token).await;
    let opens: chrono::DateTime<chrono::Utc> = status["next_manual_sync_at"]
        .as_str()
        .expect("a cooldown")
        .parse()
        .expect("a time");
    assert!(
        reason
            .as_str()
            .unwrap_or_default()
            .contains(&opens.format("%H:%M:%S").to_string()),
        "the page does not say when Sync opens ({opens}): {reason}"
    );
    browser
        .until(
            "the delta run in the recent runs",
            Duration::from_secs(30),
            "return [...document.querySelectorAll('#runs tbody tr')].some(r => r.innerText.includes('manual'))",
        )
        .await;
    assert!(
        !browser.write_controls().await.is_empty(),
        "an administrator sees no write control"
    );
    browser.screenshot("token").await;

    // Devices: 50 a page, a next page, a filter, and a delete with the warning.
    let devices_hash = format!("#/tokens/{token_id}/devices");
    browser.page(&devices_hash, "#devices").await;
    let rows = browser
        .js("return document.querySelectorAll('#devices tbody tr').length")
        .await;
    assert_eq!(rows, 50, "a page holds 50 devices");
    let first_page_first = browser
        .js("return document.querySelector('#devices tbody tr').dataset.serial")
        .await;
    browser.click("#next-page").await;
    browser
        .until(
            "the second page",
            Duration::from_secs(20),
            &format!(
                "const r = document.querySelector('#devices tbody tr'); return r && r.dataset.serial !== {first_page_first} && location.hash.includes('cursor=')"
            ),
        )
        .await;
    browser
        .page(
            &format!("{devices_hash}?state=removed_from_apple"),
            "#no-devices",
        )
        .await;
    browser.page(&devices_hash, "#devices").await;
    let serial = browser
        .js("return document.querySelector('#devices tbody tr').dataset.serial")
        .await
        .as_str()
        .expect("a serial")
        .to_owned();
    browser
        .click(&format!("button[data-delete='{serial}']"))
        .await;
    let warning = browser
        .until(
            "the delete's warning",
            Duration::from_secs(10),
            "const d = document.querySelector('dialog#confirm[open]'); return d ? d.innerText : null",
        )
        .await;
    let warning = warning.as_str().unwrap_or_default();
    for words in [
        "leaves management",
        "loses access to corporate resources",
        "wiped and re-enrolled",
        "next full sync",
        "unassign it in Apple Business",
    ] {
        assert!(
            warning.contains(words),
            "the warning lacks {words:?}: {warning}"
        );
    }
    browser.screenshot("devices").await;
    browser.click("#confirm-yes").await;
    browser
        .until(
            "the device leaves the list",
            Duration::from_secs(20),
            &format!(
                "return document.querySelector('#devices') && !document.querySelector(\"tr[data-serial='{serial}']\")"
            ),
        )
        .await;
    let gone = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{token_id}/devices/{serial}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(gone.status, 404, "the device is still there: {gone:?}");

    // Policies: create one, make it the default.
    let policies_hash = format!("#/tokens/{token_id}/policies");
    browser.page(&policies_hash, "#policy-form").await;
    browser.type_into("#policy-name", "Acme iPads").await;
    browser
        .type_into("#policy-url", "https://mdm.acme.test/enroll")
        .await;
    browser.click("#policy-is_supervised").await;
    browser.click("#policy-save").await;
    let policy_id = browser
        .until(
            "the new policy",
            Duration::from_secs(20),
            "const r = document.querySelector('#policies tr[data-policy]'); return r ? r.dataset.policy : null",
        )
        .await
        .as_str()
        .expect("an id")
        .to_owned();
    browser
        .click(&format!("button[data-make-default='{policy_id}']"))
        .await;
    browser
        .until(
            "the default badge",
            Duration::from_secs(20),
            &format!(
                "const r = document.querySelector(\"tr[data-policy='{policy_id}']\"); return r && r.innerText.includes('default') && !r.querySelector('[data-make-default]')"
            ),
        )
        .await;
    browser.screenshot("policies").await;
    let listed = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{token_id}/policies"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        listed.body["default_policy_id"],
        json!(policy_id),
        "{listed:?}"
    );
    assert_eq!(
        listed.body["policies"][0]["is_supervised"], true,
        "{listed:?}"
    );

    // Edit it: the form comes filled in; a change is saved with PATCH.
    browser
        .page(&format!("{policies_hash}?edit={policy_id}"), "#policy-form")
        .await;
    browser
        .until(
            "the edit form",
            Duration::from_secs(20),
            "return document.querySelector('#policy-form-heading').innerText === 'Edit Acme iPads'",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#policy-name').value")
            .await,
        "Acme iPads"
    );
    browser.type_into("#policy-department", "IT").await;
    browser.click("#policy-save").await;
    browser
        .until(
            "the list after the edit",
            Duration::from_secs(20),
            &format!(
                "return location.hash === {} && document.querySelector('#policy-form-heading').innerText === 'New policy'",
                json!(policies_hash)
            ),
        )
        .await;
    let edited = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{token_id}/policies/{policy_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(edited.body["department"], "IT", "{edited:?}");
    assert_eq!(edited.body["is_supervised"], true, "{edited:?}");

    // Assign two devices to it; Apple's answer per device is summed up.
    let serials = env.serials(&token).await;
    browser
        .type_into(
            "#assign-serials",
            &format!("{}\n{}", serials[0], serials[1]),
        )
        .await;
    browser.click("#assign-form button[type=submit]").await;
    let assigned = browser
        .until(
            "the assignment's result",
            Duration::from_secs(20),
            "const n = document.querySelector('#policy-result .notice'); return n ? n.innerText : null",
        )
        .await;
    assert!(
        assigned
            .as_str()
            .unwrap_or_default()
            .contains("Assigned in adesync: 2"),
        "{assigned}"
    );
    let moved = env.device(&token, &serials[0]).await;
    assert_eq!(moved["policy_id"], json!(policy_id), "{moved}");

    // The device enrolls (licensed, with its policy); the page then offers
    // the re-enroll actions, and a wipe lets it enroll again.
    let enrolled = &serials[0];
    let licensed = env
        .call(
            Method::PUT,
            &format!("/v1/licenses/devices/{enrolled}"),
            &admin,
            Some(json!({ "licensed": true })),
        )
        .await;
    assert_eq!(licensed.status, 200, "{licensed:?}");
    let enrollment = env
        .call(
            Method::POST,
            "/v1/enrollments",
            &admin,
            Some(json!({ "serial": enrolled })),
        )
        .await;
    assert_eq!(enrollment.status, 201, "enrollment: {}", enrollment.status);
    browser
        .page(
            &format!("{devices_hash}?policy={policy_id}"),
            &format!("tr[data-serial='{enrolled}'] button[data-action='wipe']"),
        )
        .await;
    let rows = browser
        .js("return document.querySelectorAll('#devices tbody tr').length")
        .await;
    assert_eq!(rows, 2, "the policy filter shows its two devices");
    browser
        .click(&format!(
            "tr[data-serial='{enrolled}'] button[data-action='wipe']"
        ))
        .await;
    browser
        .until(
            "the wiped device",
            Duration::from_secs(20),
            &format!(
                "const r = document.querySelector(\"tr[data-serial='{enrolled}']\"); return r && r.innerText.includes('wiped (may enroll again)')"
            ),
        )
        .await;
    let wiped = env.device(&token, enrolled).await;
    assert_eq!(wiped["enrollment_state"], "wiped", "{wiped}");

    // Renewing needs the Apple ID that created the token; deleting a token
    // with devices and a policy is refused with each reason.
    browser
        .page(&format!("#/tokens/{token_id}"), "#renew-apple-id")
        .await;
    browser
        .type_into("#renew-apple-id", "someone@else.test")
        .await;
    browser
        .type_into("#renew-file", &token_file.display().to_string())
        .await;
    browser.click("#renew-form button[type=submit]").await;
    let refused = browser
        .until(
            "the Apple ID check",
            Duration::from_secs(10),
            "const n = document.querySelector('#renew-result .notice'); return n ? n.innerText : null",
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap_or_default()
            .contains("admin@acme.test"),
        "{refused}"
    );
    // With the right Apple ID and a newly downloaded file, it renews.
    let renewed = env
        .sim_post(
            &format!("/_sim/servers/{}/token", token.server_uuid),
            json!({}),
        )
        .await;
    let renewed_file = file_dir.path().join("Acme_iPads_Token_renewed.p7m");
    std::fs::write(
        &renewed_file,
        base64::engine::general_purpose::STANDARD
            .decode(renewed["token_file"].as_str().expect("a token file"))
            .expect("base64"),
    )
    .expect("the renewed file is written");
    browser
        .js("for (const id of ['renew-apple-id', 'renew-file']) document.getElementById(id).value = ''; return true")
        .await;
    browser
        .type_into("#renew-apple-id", "admin@acme.test")
        .await;
    browser
        .type_into("#renew-file", &renewed_file.display().to_string())
        .await;
    browser.click("#renew-form button[type=submit]").await;
    browser
        .until(
            "the renewal",
            Duration::from_secs(30),
            "const f = document.querySelector('dl.facts'); return f && f.innerText.includes('Renewed')",
        )
        .await;
    let after = env.token(&token).await;
    assert!(after.body["renewed_at"].is_string(), "{after:?}");
    browser.click("#delete-token").await;
    browser.click("#confirm-yes").await;
    let reasons = browser
        .until(
            "the reasons the delete is refused",
            Duration::from_secs(20),
            "const n = document.querySelector('#delete-token-result li'); return n ? document.querySelector('#delete-token-result').innerText : null",
        )
        .await;
    let reasons = reasons.as_str().unwrap_or_default();
    for words in [
        format!("{} devices are assigned to the token", devices - 1),
        "1 enrollment policy exists".to_owned(),
    ] {
        assert!(reasons.contains(&words), "{words:?} not in: {reasons}");
    }

    // The tokens list: name, Apple ID, server, status, devices, expiry.
    browser.page("#/tokens", "#tokens tbody tr").await;
    let row = browser.text(&format!("tr[data-token='{token_id}']")).await;
    let listed_devices = (devices - 1).to_string();
    for words in [
        "Acme iPads",
        "admin@acme.test",
        "OK",
        listed_devices.as_str(),
        "days left",
    ] {
        assert!(row.contains(words), "the row lacks {words:?}: {row}");
    }
    browser.screenshot("tokens").await;
    browser.close().await;
    eprintln!(
        "console: the administrator's walk took {:.1?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_reader_sees_no_write_controls() {
    let started = Instant::now();
    let env = TestService::start().await;
    let token = env.create_token(ACCOUNT, 60).await;
    env.wait_until_idle(&token, Duration::from_secs(60)).await;
    let policy = env.new_policy(&token, "Reader's view").await;
    let id = &token.token_id;
    let pages = [
        ("#/tokens".to_owned(), "#tokens tbody tr".to_owned()),
        (format!("#/tokens/{id}"), "#runs tbody tr".to_owned()),
        (
            format!("#/tokens/{id}/devices"),
            "#devices tbody tr".to_owned(),
        ),
        (
            format!("#/tokens/{id}/policies"),
            format!("tr[data-policy='{policy}']"),
        ),
        ("#/public-key".to_owned(), "#pem".to_owned()),
    ];
    let browser = Browser::start().await;

    // The same pages as an administrator show write controls (the check
    // below would find them)…
    browser.sign_in(&console(&env, &token.jwt), "admin").await;
    for (hash, ready) in &pages[1..4] {
        browser.page(hash, ready).await;
        assert!(
            !browser.write_controls().await.is_empty(),
            "{hash}: an administrator sees no write control"
        );
        let problems = browser.accessibility_problems().await;
        assert!(problems.is_empty(), "{hash}: {problems:#?}");
    }

    // …and as a reader none, while the data is all there.
    let reader = env.jwt(ACCOUNT, &["reader"]);
    browser.sign_in(&console(&env, &reader), "reader").await;
    for (hash, ready) in &pages {
        browser.page(hash, ready).await;
        let controls = browser.write_controls().await;
        assert!(controls.is_empty(), "{hash}: a reader sees {controls:?}");
        let problems = browser.accessibility_problems().await;
        assert!(problems.is_empty(), "{hash}: {problems:#?}");
        if hash == &format!("#/tokens/{id}") {
            assert!(
                browser.text("#sync").await.contains("manual sync"),
                "the reader is not told when a sync may run"
            );
        }
    }
    let nav = browser.text("#nav").await;
    assert!(
        !nav.contains("Upload"),
        "a reader's menu offers an upload: {nav}"
    );
    browser
        .page(&format!("#/tokens/{id}/devices"), "#devices tbody tr")
        .await;
    browser.screenshot("reader-devices").await;
    browser.close().await;
    eprintln!("console: the reader's walk took {:.1?}", started.elapsed());
}

/// What the stand-in identity provider of the sign-in test saw.
#[derive(Debug, Default)]
struct Provider {
    base: String,
    /// The authorization request's query.
    authorize: Option<std::collections::HashMap<String, String>>,
    /// The token request's form, and whether its PKCE verifier matched.
    token: Option<(std::collections::HashMap<String, String>, bool)>,
    /// The bearer tokens the page sent to the API.
    bearers: Vec<String>,
}

const ACCESS_TOKEN_ACCOUNT: &str = "acme-oidc";

fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(b"the stand-in provider's key"),
    )
    .expect("a JWT")
}

/// The deployed console's sign-in, end to end in the browser against a
/// stand-in OpenID Connect provider on the console's own origin: the
/// vendored oidc-client-ts loads under the page's Content-Security-Policy,
/// sends the user to the provider with an S256 code challenge, trades the
/// code with the matching verifier, and the page calls the API with the
/// access token, shaping itself by the roles in it.
#[tokio::test]
async fn the_deployed_sign_in_is_authorization_code_with_pkce() {
    use axum::extract::{Form, Query, State};
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::{get, post};
    use sha2::Digest;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Shared = Arc<Mutex<Provider>>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let provider: Shared = Arc::new(Mutex::new(Provider {
        base: base.clone(),
        ..Provider::default()
    }));
    let console = adesync_console::routes(adesync_console::ConsoleConfig {
        auth: adesync_console::ConsoleAuth::Oidc {
            issuer: base.clone(),
            client_id: "adesync-console".into(),
            scope: "openid".into(),
        },
    });
    let idp = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(p): State<Shared>| async move {
                let base = p.lock().expect("lock").base.clone();
                axum::Json(json!({
                    "issuer": base,
                    "authorization_endpoint": format!("{base}/authorize"),
                    "token_endpoint": format!("{base}/token"),
                    "jwks_uri": format!("{base}/jwks"),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["HS256"],
                    "code_challenge_methods_supported": ["S256"],
                }))
            }),
        )
        .route(
            "/authorize",
            get(
                |State(p): State<Shared>, Query(query): Query<HashMap<String, String>>| async move {
                    let to = format!(
                        "{}?code=the-code&state={}",
                        query.get("redirect_uri").cloned().unwrap_or_default(),
                        query.get("state").cloned().unwrap_or_default()
                    );
                    p.lock().expect("lock").authorize = Some(query);
                    Redirect::to(&to)
                },
            ),
        )
        .route(
            "/token",
            post(
                |State(p): State<Shared>, Form(form): Form<HashMap<String, String>>| async move {
                    let mut p = p.lock().expect("lock");
                    let challenge = p
                        .authorize
                        .as_ref()
                        .and_then(|a| a.get("code_challenge").cloned())
                        .unwrap_or_default();
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    let matched = !verifier.is_empty()
                        && base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(sha2::Sha256::digest(verifier.as_bytes()))
                            == challenge
                        && form.get("code").map(String::as_str) == Some("the-code");
                    p.token = Some((form, matched));
                    if !matched {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::Json(json!({ "error": "invalid_grant" })),
                        )
                            .into_response();
                    }
                    let now = chrono::Utc::now().timestamp();
                    let access = signed(&json!({
                        "iss": p.base, "aud": "adesync", "sub": "ada@acme.test",
                        "exp": now + 3600, "iat": now,
                        "adesync:account": ACCESS_TOKEN_ACCOUNT, "adesync:roles": ["reader"],
                    }));
                    let id = signed(&json!({
                        "iss": p.base, "aud": "adesync-console", "sub": "ada@acme.test",
                        "email": "ada@acme.test", "exp": now + 3600, "iat": now,
                    }));
                    axum::Json(json!({
                        "access_token": access, "id_token": id, "token_type": "Bearer",
                        "expires_in": 3600, "scope": "openid",
                    }))
                    .into_response()
                },
            ),
        )
        // The API, as far as the tokens page needs it.
        .route(
            "/v1/tokens",
            get(
                |State(p): State<Shared>, headers: axum::http::HeaderMap| async move {
                    let bearer = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    p.lock().expect("lock").bearers.push(bearer);
                    axum::Json(json!({ "tokens": [], "next_cursor": null }))
                },
            ),
        )
        .with_state(provider.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, console.merge(idp))
            .await
            .expect("the stand-in serves");
    });

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{base}/console"))
        .await
        .expect("navigation");
    browser
        .until(
            "the sign-in button",
            Duration::from_secs(20),
            "return [...document.querySelectorAll('main button')].some(b => b.innerText === 'Sign in')",
        )
        .await;
    browser.click("main button").await;
    browser
        .until(
            "signed in",
            Duration::from_secs(20),
            "return document.body.dataset.ready === 'true' && location.search === ''
               && document.querySelector('#who-roles').innerText === 'reader'
               && document.querySelector('#no-tokens') !== null",
        )
        .await;
    assert_eq!(browser.text("#who-name").await, "ada@acme.test");
    assert!(browser.write_controls().await.is_empty());
    browser.close().await;
    server.abort();

    let seen = provider.lock().expect("lock");
    let authorize = seen.authorize.as_ref().expect("an authorization request");
    assert_eq!(authorize["response_type"], "code", "{authorize:?}");
    assert_eq!(authorize["code_challenge_method"], "S256", "{authorize:?}");
    assert_eq!(authorize["client_id"], "adesync-console", "{authorize:?}");
    assert_eq!(authorize["redirect_uri"], format!("{base}/console"));
    let (form, matched) = seen.token.as_ref().expect("a token request");
    assert!(
        matched,
        "the code verifier does not match the challenge: {form:?}"
    );
    assert_eq!(form["grant_type"], "authorization_code", "{form:?}");
    assert!(
        !seen.bearers.is_empty() && seen.bearers.iter().all(|b| b.contains('.')),
        "the page did not call the API with the access token: {:?}",
        seen.bearers
    );
    let access = jsonwebtoken::dangerous::insecure_decode::<Value>(&seen.bearers[0])
        .map(|t| t.claims)
        .unwrap_or_default();
    assert_eq!(access["adesync:account"], ACCESS_TOKEN_ACCOUNT);
}
