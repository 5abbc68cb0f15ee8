//! The demo: the whole service on this machine, a token created through
//! the real flow, and its first full sync shown as it happens — with the
//! `adesync` CLI's own client and progress bar, so the demo shows what an
//! operator sees. The benchmark (`infra/bench`) drives the same steps.

use std::time::Duration;

use adesync_cli::Client;
use adesync_cli::watch::{WatchOptions, watch_run};
use anyhow::{Context, Result};
use base64::Engine;
use secrecy::SecretString;
use serde_json::{Value, json};

/// An administrator of the demo account, and the Apple simulator standing
/// in for Apple Business.
pub struct DemoClient {
    client: Client,
    http: reqwest::Client,
    sim: String,
}

impl DemoClient {
    pub fn new(api: String, sim: String, jwt: String) -> Result<Self> {
        Ok(Self {
            client: Client::new(&api, Some(SecretString::from(jwt)))?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            sim,
        })
    }

    /// The API client acting as the demo's administrator.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Downloads the account's public key, creates a simulated MDM server
    /// with `devices` devices encrypted to it (what an administrator does in
    /// Apple Business), and uploads its token file. Returns the token's id
    /// and the simulated server's uuid.
    pub async fn create_token(&self, devices: usize) -> Result<(String, String)> {
        let pem = self.client.public_key().await?;
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
        let token_file = base64::engine::general_purpose::STANDARD
            .decode(server["token_file"].as_str().unwrap_or_default())
            .context("the simulator's token file is not base64")?;
        let token = self
            .client
            .create_token("Demo devices", "admin@demo.example", &token_file)
            .await?;
        let server_uuid = server["server_uuid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok((token.id, server_uuid))
    }

    /// Follows the token's running sync with the CLI's progress bar until
    /// it ends; returns the run as the API shows it (`GET …/runs`).
    pub async fn watch_sync(&self, token: &str, expected: u64) -> Result<Value> {
        let run_id = match self.client.sync_status(token).await?.run {
            Some(run) => run.run_id,
            // Already over: the newest run is the one.
            None => self
                .client
                .runs(token, Some(1))
                .await?
                .into_iter()
                .next()
                .map(|run| run.run_id)
                .context("the token has no sync run")?,
        };
        let options = WatchOptions {
            expected_devices: Some(expected),
            ..WatchOptions::default()
        };
        let run = watch_run(&self.client, token, &run_id, &options).await?;
        Ok(serde_json::to_value(run)?)
    }
}
