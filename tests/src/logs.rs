//! Every log line of the test process, kept so tests can prove that no
//! secret is ever logged — by the functions, the runner or the simulator.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

fn lines() -> &'static Mutex<Vec<String>> {
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

/// Writes each formatted event into [`LINES`] (and to stderr when
/// `RUST_LOG` is set, for a human reading along).
#[derive(Clone, Copy)]
struct Capture {
    echo: bool,
}

struct Line {
    buffer: Vec<u8>,
    echo: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer).into_owned();
        if self.echo {
            eprint!("{text}");
        }
        if let Ok(mut lines) = lines().lock() {
            lines.push(text);
        }
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buffer: Vec::new(),
            echo: self.echo,
        }
    }
}

/// Starts capturing (once per process): debug for adesync's own crates and
/// the simulator, info for the rest.
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let echo = std::env::var_os("RUST_LOG").is_some();
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new(
                "info,adesync_service=debug,adesync_store=debug,adesync_apple=debug,adesync_local=debug,apple_sim=debug,aws_smithy_runtime=info",
            )
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Capture { echo })
            .try_init();
    });
}

/// How many lines were logged so far.
pub fn mark() -> usize {
    lines().lock().map(|l| l.len()).unwrap_or(0)
}

/// Lines logged since `mark`.
pub fn lines_since(mark: usize) -> Vec<String> {
    lines()
        .lock()
        .map(|l| l.iter().skip(mark).cloned().collect())
        .unwrap_or_default()
}

/// Lines logged since `mark` that look like a secret: OAuth credentials of
/// a server token (`CK_`/`CS_`/`AT_`/`AS_` + hex), private keys, OAuth
/// signatures, Apple session tokens.
pub fn secrets_since(mark: usize) -> Vec<String> {
    let lines = lines().lock().map(|l| l.clone()).unwrap_or_default();
    lines
        .into_iter()
        .skip(mark)
        .filter(|line| looks_secret(line))
        .collect()
}

/// Whether `text` carries something that must never be logged.
pub fn looks_secret(text: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "PRIVATE KEY",
        "oauth_signature",
        "auth_session_token",
        "X-ADM-Auth-Session:",
        "BEGIN MESSAGE",
    ];
    if MARKERS.iter().any(|m| text.contains(m)) {
        return true;
    }
    ["CK_", "CS_", "AT_", "AS_"].iter().any(|prefix| {
        text.match_indices(prefix).any(|(at, _)| {
            text[at + 3..]
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .count()
                >= 16
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_keys_look_secret_and_ordinary_lines_do_not() {
        assert!(looks_secret("consumer CK_9af2f8218b150c351ad802c6f3d66abe"));
        assert!(looks_secret("key: -----BEGIN PRIVATE KEY-----"));
        assert!(looks_secret("OAuth oauth_signature=\"abc\""));
        assert!(!looks_secret("sync started token=01M8BC run=01M8BD"));
        assert!(!looks_secret("AT_ the end"));
    }
}
