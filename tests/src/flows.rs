//! The product's flows as test steps: each goes through the real API and
//! the Apple simulator's control API, never around them.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Reply, TestService};

/// A token created through the real flow.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token_id: String,
    pub server_uuid: String,
    pub jwt: String,
}

impl TestService {
    /// Public key → simulated MDM server with `devices` devices → token file
    /// → `POST /v1/tokens`. The first full sync is queued by the service.
    pub async fn create_token(&self, account: &str, devices: usize) -> CreatedToken {
        let jwt = self.jwt(account, &["admin"]);
        let pem = self.public_key(&jwt).await;
        let server: Value = self
            .http
            .post(self.sim("/_sim/servers"))
            .json(&json!({
                "name": format!("{account} MDM server"),
                "public_key_pem": pem,
                "org_name": "Acme Inc.",
                "admin_id": "admin@acme.test",
                "devices": devices,
            }))
            .send()
            .await
            .expect("POST /_sim/servers")
            .json()
            .await
            .expect("a server");
        let created = self
            .call(
                Method::POST,
                "/v1/tokens",
                &jwt,
                Some(json!({
                    "name": "Acme devices",
                    "apple_id": "admin@acme.test",
                    "token_file": server["token_file"],
                })),
            )
            .await;
        assert_eq!(created.status, 201, "token creation: {created:?}");
        CreatedToken {
            token_id: created.body["id"]
                .as_str()
                .or_else(|| created.body["token_id"].as_str())
                .expect("the new token's id")
                .to_owned(),
            server_uuid: server["server_uuid"]
                .as_str()
                .expect("server uuid")
                .to_owned(),
            jwt,
        }
    }

    /// `GET /v1/tokens/{id}/sync`.
    /// `GET /v1/tokens/{id}` as the token's administrator.
    pub async fn token(&self, token: &CreatedToken) -> Reply {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await
    }

    /// The account's public key (PEM), as its administrator `jwt` fetches it.
    pub async fn public_key(&self, jwt: &str) -> String {
        let pem = self
            .http
            .get(self.api("/v1/public-key"))
            .bearer_auth(jwt)
            .send()
            .await
            .expect("GET /v1/public-key")
            .text()
            .await
            .expect("a PEM");
        assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
        pem
    }

    pub async fn sync_status(&self, token: &CreatedToken) -> Value {
        let reply = self
            .call(
                Method::GET,
                &format!("/v1/tokens/{}/sync", token.token_id),
                &token.jwt,
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    /// Polls the run `run_id` until it is over; returns it.
    pub async fn wait_for_run(
        &self,
        token: &CreatedToken,
        run_id: &str,
        timeout: Duration,
    ) -> Value {
        let started = Instant::now();
        loop {
            let reply = self
                .call(
                    Method::GET,
                    &format!("/v1/tokens/{}/runs?limit=100", token.token_id),
                    &token.jwt,
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
            if let Some(run) = reply.body["runs"]
                .as_array()
                .and_then(|runs| runs.iter().find(|r| r["run_id"] == run_id))
                && matches!(
                    run["status"].as_str(),
                    Some("succeeded" | "failed" | "abandoned")
                )
            {
                return run.clone();
            }
            assert!(
                started.elapsed() < timeout,
                "run {run_id} not over after {timeout:?}: {}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the token has no running sync; returns the newest run.
    pub async fn wait_until_idle(&self, token: &CreatedToken, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let reply = self
                .call(
                    Method::GET,
                    &format!("/v1/tokens/{}/sync", token.token_id),
                    &token.jwt,
                    None,
                )
                .await;
            // A client polls on through a busy DynamoDB (the throttling
            // fault test): 503 says "retry", anything else must be 200.
            if reply.status == 503 && reply.body["error"] == "service_unavailable" {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            let status = reply.body;
            if status["state"] == "idle" {
                let reply = self
                    .call(
                        Method::GET,
                        &format!("/v1/tokens/{}/runs?limit=1", token.token_id),
                        &token.jwt,
                        None,
                    )
                    .await;
                return reply.body["runs"][0].clone();
            }
            assert!(
                started.elapsed() < timeout,
                "still syncing after {timeout:?}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Requests a manual sync of `kind`.
    pub async fn request_sync(&self, token: &CreatedToken, kind: &str) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/tokens/{}/sync", token.token_id),
            &token.jwt,
            Some(json!({ "kind": kind })),
        )
        .await
    }

    /// Every listed device of the token, following `next_cursor`.
    pub async fn all_devices(&self, token: &CreatedToken, filter: &str) -> Vec<Value> {
        let mut devices = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tokens/{}/devices?limit=1000{filter}", token.token_id);
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let reply = self.call(Method::GET, &path, &token.jwt, None).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            devices.extend(
                reply.body["devices"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return devices,
            }
        }
    }

    /// The simulator's devices of a server.
    pub async fn sim_devices(&self, server_uuid: &str) -> Vec<Value> {
        let body: Value = self
            .http
            .get(self.sim(&format!("/_sim/servers/{server_uuid}/devices")))
            .send()
            .await
            .expect("sim devices")
            .json()
            .await
            .expect("sim devices JSON");
        body["devices"]
            .as_array()
            .cloned()
            .or_else(|| body.as_array().cloned())
            .unwrap_or_default()
    }

    /// Releases the `index`-th device of the token's MDM server in Apple
    /// Business (Apple sends no event for it); returns its serial.
    pub async fn release_in_apple(&self, token: &CreatedToken, index: usize) -> String {
        let released = self.sim_devices(&token.server_uuid).await[index]["serial_number"]
            .as_str()
            .expect("a simulated device's serial")
            .to_owned();
        self.sim_post(
            &format!(
                "/_sim/servers/{}/devices/{released}/release",
                token.server_uuid
            ),
            serde_json::json!({}),
        )
        .await;
        released
    }

    /// Moves `serial` from the token's MDM server to a new one of the same
    /// organisation in Apple Business: the token's next delta says `deleted`.
    pub async fn move_to_another_server(&self, token: &CreatedToken, serial: &str) {
        let pem = self
            .http
            .get(self.api("/v1/public-key"))
            .bearer_auth(&token.jwt)
            .send()
            .await
            .expect("the public key")
            .text()
            .await
            .expect("the public key's text");
        let other = self
            .sim_post(
                "/_sim/servers",
                serde_json::json!({"name": "Other server", "public_key_pem": pem, "devices": 0}),
            )
            .await;
        self.sim_post(
            &format!(
                "/_sim/servers/{}/devices/{serial}/reassign",
                token.server_uuid
            ),
            serde_json::json!({"to_server_uuid": other["server_uuid"]}),
        )
        .await;
    }

    /// The simulator's request counts (`GET /_sim/stats`): `requests` by
    /// path, `by_method` by "METHOD path".
    pub async fn sim_stats(&self) -> Value {
        self.http
            .get(self.sim("/_sim/stats"))
            .send()
            .await
            .expect("sim stats")
            .json()
            .await
            .expect("sim stats JSON")
    }

    /// POSTs to the simulator's control API.
    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        self.sim_call(reqwest::Method::POST, path, body).await
    }

    /// `PATCH` on the simulator's control API (a merge-patch of a device).
    pub async fn sim_patch(&self, path: &str, body: Value) -> Value {
        self.sim_call(reqwest::Method::PATCH, path, body).await
    }

    async fn sim_call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, self.sim(path))
            .json(&body)
            .send()
            .await
            .expect("sim control call");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "sim {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}
