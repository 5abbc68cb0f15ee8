//! The demo: the whole service on this machine, a token created through
//! the real flow, and its first full sync shown as it happens.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// A client of the local API and the simulator, as an administrator.
pub struct DemoClient {
    http: reqwest::Client,
    api: String,
    sim: String,
    jwt: String,
}

impl DemoClient {
    pub fn new(api: String, sim: String, jwt: String) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            api,
            sim,
            jwt,
        })
    }

    async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.jwt);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{path}: no answer"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Downloads the account's public key, creates a simulated MDM server
    /// with `devices` devices encrypted to it, and uploads its token file.
    pub async fn create_token(&self, devices: usize) -> Result<(String, String)> {
        let pem = self
            .http
            .get(format!("{}/v1/public-key", self.api))
            .bearer_auth(&self.jwt)
            .send()
            .await?
            .error_for_status()
            .context("GET /v1/public-key")?
            .text()
            .await?;
        let server: Value = self
            .http
            .post(format!("{}/_sim/servers", self.sim))
            .json(&json!({
                "name": "Demo MDM server",
                "public_key_pem": pem,
                "org_name": "Demo Inc.",
                "admin_id": "admin@demo.example",
                "devices": devices,
            }))
            .send()
            .await?
            .error_for_status()
            .context("creating the simulated MDM server")?
            .json()
            .await?;
        let token = self
            .api_call(
                reqwest::Method::POST,
                "/v1/tokens",
                Some(json!({
                    "name": "Demo devices",
                    "apple_id": "admin@demo.example",
                    "token_file": server["token_file"],
                })),
            )
            .await?;
        let id = token["id"]
            .as_str()
            .context("the new token has no id")?
            .to_owned();
        Ok((
            id,
            server["server_uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))
    }

    /// Shows the token's running sync until it is over; returns the run.
    pub async fn watch_sync(&self, token: &str, expected: u64) -> Result<Value> {
        let bar = ProgressBar::new(expected.max(1));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:>9} [{bar:40}] {pos}/{len} devices imported, {per_sec}, ETA {eta}",
            )?
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let started = Instant::now();
        loop {
            let status = self
                .api_call(
                    reqwest::Method::GET,
                    &format!("/v1/tokens/{token}/sync"),
                    None,
                )
                .await?;
            let run = &status["run"];
            if run.is_object() {
                let fetched = run["fetched"].as_u64().unwrap_or(0);
                let imported = run["imported"].as_u64().unwrap_or(0);
                bar.set_length(expected.max(fetched).max(1));
                bar.set_position(imported);
                bar.set_message(format!("{} sync", run["kind"].as_str().unwrap_or("")));
            }
            if status["state"] == "idle" && started.elapsed() > Duration::from_millis(300) {
                let runs = self
                    .api_call(
                        reqwest::Method::GET,
                        &format!("/v1/tokens/{token}/runs?limit=1"),
                        None,
                    )
                    .await?;
                let run = runs["runs"][0].clone();
                bar.set_position(run["imported"].as_u64().unwrap_or(0));
                bar.finish_with_message("done");
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The first `limit` devices of the token.
    pub async fn devices(&self, token: &str, limit: u32) -> Result<Value> {
        self.api_call(
            reqwest::Method::GET,
            &format!("/v1/tokens/{token}/devices?limit={limit}"),
            None,
        )
        .await
    }

    pub async fn status(&self, token: &str) -> Result<Value> {
        self.api_call(
            reqwest::Method::GET,
            &format!("/v1/tokens/{token}/sync"),
            None,
        )
        .await
    }
}

/// Seconds between two RFC 3339 times of a run.
pub fn run_seconds(run: &Value) -> Option<f64> {
    let start: chrono::DateTime<chrono::Utc> = run["started_at"].as_str()?.parse().ok()?;
    let end: chrono::DateTime<chrono::Utc> = run["finished_at"].as_str()?.parse().ok()?;
    Some((end - start).num_milliseconds() as f64 / 1000.0)
}
