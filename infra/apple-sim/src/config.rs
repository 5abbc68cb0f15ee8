//! Start-up settings of a simulator. Most of the behaviour knobs can also be changed at run time
//! through `POST /_sim/config`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a simulator starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port (see [`crate::RunningSim::base_url`]).
    pub addr: SocketAddr,
    /// Seed for generated devices, so runs with the same seed and the same calls see the same
    /// serials. Credentials, session tokens and cursor keys are always truly random.
    pub seed: u64,
    /// Devices a new server gets when `POST /_sim/servers` does not say how many.
    pub default_device_count: usize,
    /// Behaviour that tests may also change while the simulator runs.
    pub behaviour: Behaviour,
    /// How many times faster than real time the simulator clock starts running (1 to 10,000;
    /// `POST /_sim/clock {speed}` changes it later). Pacing and fault delays follow it.
    pub clock_speed: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
            default_device_count: 0,
            behaviour: Behaviour::default(),
            clock_speed: 1.0,
        }
    }
}

/// Knobs for the parts of Apple's behaviour that are unknown or vary, so clients can be tested
/// against every plausible answer (docs/apple.md §2.3, §14).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Session lifetime on the simulator clock, counted from `/session`.
    pub session_ttl_seconds: u64,
    /// Issue a new `X-ADM-Auth-Session` response header every N uses of a session; `None`
    /// never rotates.
    pub rotate_session_every: Option<u32>,
    /// How many more requests a rotated-out session is accepted before it answers 401.
    pub rotation_grace_requests: u32,
    /// `limit.default` for fetch and sync, as advertised by `/account`.
    pub limit_default: u32,
    /// `limit.maximum` for fetch and sync; larger requests are clamped to it.
    pub limit_maximum: u32,
    /// Emit every Nth sync event twice in a row (Apple: "may return the same device more than
    /// once"); `None` never duplicates.
    pub duplicate_every: Option<u32>,
    /// Sync cursors older than this on the simulator clock answer `EXPIRED_CURSOR`.
    pub cursor_max_age_seconds: u64,
    /// Leave `profile_uuid` out of `PUT /profile/devices` answers (Apple's schema marks it
    /// optional).
    pub assign_omits_profile_uuid: bool,
    /// A new `/session` ends the server's older sessions (they answer 401), as nanodep's
    /// session store warns Apple may do; off, sessions live out their TTL.
    pub end_older_sessions: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            session_ttl_seconds: 30 * 60,
            rotate_session_every: None,
            rotation_grace_requests: 3,
            limit_default: 1000,
            limit_maximum: 5000,
            duplicate_every: None,
            cursor_max_age_seconds: 7 * 24 * 3600,
            assign_omits_profile_uuid: false,
            end_older_sessions: false,
        }
    }
}

impl Behaviour {
    pub(crate) fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_seconds)
    }
}
