//! Shared test harness: a simulator on port 0, a reqwest client, and OAuth 1.0a signing of
//! `/session` with the `oauth1-request` crate (an independent client implementation).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::num::NonZeroU64;
use std::sync::OnceLock;

use adesync_tokenfile::{AccountKey, ServerToken};
use anyhow::{Context, Result, bail};
use apple_sim::{RunningSim, SimConfig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub const USER_AGENT: &str = "apple-sim-tests/1";

/// RSA key generation is slow; one account key serves every test in a binary.
pub fn account_key() -> &'static AccountKey {
    static KEY: OnceLock<AccountKey> = OnceLock::new();
    KEY.get_or_init(|| {
        AccountKey::generate(
            "apple-sim-tests",
            Utc::now() - chrono::TimeDelta::hours(1),
            30,
        )
        .expect("generating the test account key")
    })
}

pub struct Sim {
    pub sim: RunningSim,
    pub base: String,
    pub http: reqwest::Client,
}

/// A server created through `/_sim/servers`, with credentials read from its token file.
pub struct TestServer {
    pub uuid: String,
    pub token: ServerToken,
}

/// An Apple response: status, headers, body text.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }

    /// Asserts an error answer and that its body carries `token`.
    pub fn assert_error(&self, status: u16, token: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert!(
            self.body.contains(token),
            "expected {token} in {:?}",
            self.body
        );
    }
}

impl Sim {
    pub async fn start() -> Result<Self> {
        Self::start_with(SimConfig::default()).await
    }

    pub async fn start_with(config: SimConfig) -> Result<Self> {
        let sim = apple_sim::spawn(config).await?;
        let base = sim.base_url();
        Ok(Self {
            sim,
            base,
            http: reqwest::Client::new(),
        })
    }

    /// A `/_sim/*` call expected to succeed.
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.control_raw(method, path, body).await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {value}");
        }
        Ok(value)
    }

    pub async fn control_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await?))
    }

    pub async fn create_server(&self, name: &str, devices: usize) -> Result<TestServer> {
        let created = self
            .control(
                Method::POST,
                "/_sim/servers",
                Some(json!({
                    "name": name,
                    "public_key_pem": account_key().certificate_pem(),
                    "admin_id": format!("{name}@example.com"),
                    "devices": devices,
                })),
            )
            .await?;
        let uuid = created["server_uuid"]
            .as_str()
            .context("server_uuid")?
            .to_owned();
        let token = open_token_file(&created)?;
        Ok(TestServer { uuid, token })
    }

    /// The `Authorization` header for `GET /session`, signed by `oauth1-request`.
    pub fn sign(&self, token: &ServerToken, nonce: &str, timestamp: u64) -> String {
        let credentials = oauth1_request::Token::from_parts(
            token.consumer_key.expose_secret(),
            token.consumer_secret.expose_secret(),
            token.access_token.expose_secret(),
            token.access_secret.expose_secret(),
        );
        let mut builder =
            oauth1_request::Builder::with_token(credentials, oauth1_request::HmacSha1::new());
        builder
            .nonce(nonce)
            .timestamp(NonZeroU64::new(timestamp))
            .version(true);
        let header = builder.get(format!("{}/session", self.base), &());
        // Apple's own header starts with realm="ADM"; the realm is not signed.
        header.replacen("OAuth ", "OAuth realm=\"ADM\",", 1)
    }

    pub async fn session_with(&self, authorization: Option<&str>) -> Result<Reply> {
        let mut request = self
            .http
            .get(format!("{}/session", self.base))
            .header("User-Agent", USER_AGENT)
            .header("X-Server-Protocol-Version", "10");
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        reply(request.send().await?).await
    }

    /// A fresh session token for `server`.
    pub async fn session(&self, server: &TestServer) -> Result<String> {
        let nonce = format!("{:032x}", rand_u128());
        let header = self.sign(&server.token, &nonce, now_secs());
        let reply = self.session_with(Some(&header)).await?;
        if reply.status != StatusCode::OK {
            bail!("/session answered {}: {}", reply.status, reply.body);
        }
        Ok(reply.json()?["auth_session_token"]
            .as_str()
            .context("auth_session_token")?
            .to_owned())
    }

    /// An Apple API call at protocol version 10.
    pub async fn apple(
        &self,
        method: Method,
        path: &str,
        session: &str,
        body: Option<Value>,
    ) -> Result<Reply> {
        self.apple_v(method, path, session, body, "10").await
    }

    pub async fn apple_v(
        &self,
        method: Method,
        path: &str,
        session: &str,
        body: Option<Value>,
        version: &str,
    ) -> Result<Reply> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("User-Agent", USER_AGENT)
            .header("X-Server-Protocol-Version", version)
            .header("X-ADM-Auth-Session", session);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json;charset=UTF8")
                .body(body.to_string());
        }
        reply(request.send().await?).await
    }

    pub async fn advance_clock(&self, seconds: i64) -> Result<()> {
        self.control(
            Method::POST,
            "/_sim/clock",
            Some(json!({ "advance_seconds": seconds })),
        )
        .await?;
        Ok(())
    }

    /// Fetches every page from scratch; returns devices and the final cursor.
    pub async fn fetch_all(
        &self,
        session: &str,
        limit: u64,
    ) -> Result<(Vec<Value>, String, usize)> {
        let mut cursor: Option<String> = None;
        let mut devices = Vec::new();
        let mut pages = 0;
        loop {
            let mut body = json!({ "limit": limit });
            if let Some(cursor) = &cursor {
                body["cursor"] = json!(cursor);
            }
            let reply = self
                .apple(Method::POST, "/server/devices", session, Some(body))
                .await?;
            if reply.status != StatusCode::OK {
                bail!("fetch answered {}: {}", reply.status, reply.body);
            }
            let page = reply.json()?;
            pages += 1;
            devices.extend(page["devices"].as_array().cloned().unwrap_or_default());
            cursor = Some(page["cursor"].as_str().context("cursor")?.to_owned());
            if page["more_to_follow"] != json!(true) {
                break;
            }
        }
        Ok((devices, cursor.unwrap_or_default(), pages))
    }

    /// One sync page.
    pub async fn sync(&self, session: &str, cursor: &str) -> Result<Value> {
        let reply = self
            .apple(
                Method::POST,
                "/devices/sync",
                session,
                Some(json!({ "cursor": cursor })),
            )
            .await?;
        if reply.status != StatusCode::OK {
            bail!("sync answered {}: {}", reply.status, reply.body);
        }
        reply.json()
    }
}

pub async fn reply(response: reqwest::Response) -> Result<Reply> {
    Ok(Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await?,
    })
}

pub fn open_token_file(created: &Value) -> Result<ServerToken> {
    let file = STANDARD.decode(created["token_file"].as_str().context("token_file")?)?;
    Ok(adesync_tokenfile::open(&file, account_key(), Utc::now())?)
}

pub fn now_secs() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

pub fn rand_u128() -> u128 {
    rand::random()
}

pub fn serials(devices: &[Value]) -> Vec<String> {
    devices
        .iter()
        .filter_map(|d| d["serial_number"].as_str().map(str::to_owned))
        .collect()
}
