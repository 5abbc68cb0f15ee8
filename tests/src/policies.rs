//! Steps for enrollment policies, assignment and enrollment tests: each goes through
//! the real API, the simulator's control API or the scheduler, never around them.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::flows::CreatedToken;
use crate::{Reply, TestService};

/// Valid settings for a new policy named `name`.
pub fn policy_body(name: &str) -> Value {
    json!({"name": name, "url": "https://mdm.acme.test/enroll"})
}

impl TestService {
    /// `POST /v1/tokens/{id}/policies` with `body`.
    pub async fn create_policy(&self, token: &CreatedToken, body: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/tokens/{}/policies", token.token_id),
            &token.jwt,
            Some(body),
        )
        .await
    }

    /// A new policy named `name`; returns its id.
    pub async fn new_policy(&self, token: &CreatedToken, name: &str) -> String {
        let reply = self.create_policy(token, policy_body(name)).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body["policy_id"]
            .as_str()
            .expect("a policy id")
            .to_owned()
    }

    /// `GET /v1/tokens/{id}/policies/{policy}`.
    pub async fn policy(&self, token: &CreatedToken, policy: &str) -> Value {
        let reply = self
            .call(
                Method::GET,
                &format!("/v1/tokens/{}/policies/{policy}", token.token_id),
                &token.jwt,
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    /// `POST /v1/tokens/{id}/policies/{policy}/devices`.
    pub async fn assign(&self, token: &CreatedToken, policy: &str, serials: &[&str]) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/tokens/{}/policies/{policy}/devices", token.token_id),
            &token.jwt,
            Some(json!({ "serials": serials })),
        )
        .await
    }

    /// `PUT /v1/tokens/{id}/default-policy`.
    pub async fn set_default_policy(&self, token: &CreatedToken, policy: &str) -> Reply {
        self.call(
            Method::PUT,
            &format!("/v1/tokens/{}/default-policy", token.token_id),
            &token.jwt,
            Some(json!({ "policy_id": policy })),
        )
        .await
    }

    /// `GET /v1/tokens/{id}/devices/{serial}`.
    pub async fn device(&self, token: &CreatedToken, serial: &str) -> Value {
        let reply = self
            .call(
                Method::GET,
                &format!("/v1/tokens/{}/devices/{serial}", token.token_id),
                &token.jwt,
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    /// Polls the device until `done` holds; returns it.
    pub async fn wait_for_device(
        &self,
        token: &CreatedToken,
        serial: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let device = self.device(token, serial).await;
            if done(&device) {
                return device;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{serial}: still not {what}: {device}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the token's devices until every one satisfies `done`; returns them.
    pub async fn wait_for_devices(
        &self,
        token: &CreatedToken,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let devices = self.all_devices(token, "").await;
            if !devices.is_empty() && devices.iter().all(&done) {
                return devices;
            }
            let left = devices.iter().filter(|d| !done(d)).count();
            assert!(
                started.elapsed() < timeout,
                "{left} of {} devices still not {what}",
                devices.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Assign requests the simulator answered so far (`/profile/devices`, any method).
    pub async fn sim_assign_requests(&self) -> u64 {
        self.sim_stats().await["requests"]["/profile/devices"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Define-profile requests the simulator answered so far.
    pub async fn sim_define_requests(&self) -> u64 {
        self.sim_stats().await["by_method"]["POST /profile"]
            .as_u64()
            .unwrap_or(0)
    }

    /// One simulated device as Apple holds it.
    pub async fn sim_device(&self, server_uuid: &str, serial: &str) -> Value {
        self.http
            .get(self.sim(&format!("/_sim/servers/{server_uuid}/devices/{serial}")))
            .send()
            .await
            .expect("sim device")
            .json()
            .await
            .expect("sim device JSON")
    }

    /// Runs the scheduler's hourly assignment sweep now, as EventBridge
    /// would, and waits for the assignment jobs it queued.
    pub async fn fire_assignment_sweep(&self) {
        self.sweep("assignments").await;
    }

    /// The serial numbers of the token's listed devices, sorted.
    pub async fn serials(&self, token: &CreatedToken) -> Vec<String> {
        let mut serials: Vec<String> = self
            .all_devices(token, "")
            .await
            .iter()
            .filter_map(|d| d["serial_number"].as_str().map(str::to_owned))
            .collect();
        serials.sort();
        serials
    }
}
