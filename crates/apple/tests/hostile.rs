//! The client against a hostile Apple: whatever bytes come back — random,
//! huge, deeply nested, wrong types, invalid UTF-8 — under any status, every
//! call returns (an error or a value) and never panics or hangs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adesync_apple::{AppleClient, AppleConfig, Credentials, RetryPolicy};
use axum::Router;
use axum::body::Body;
use axum::http::{Response, StatusCode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

#[derive(Clone, Default)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// A server answering `/session` properly and everything else with the
/// answer the test sets.
async fn hostile_apple(answer: Arc<Mutex<Answer>>) -> SocketAddr {
    let app = Router::new().fallback(move |request: axum::extract::Request| {
        let answer = answer.lock().unwrap().clone();
        async move {
            if request.uri().path() == "/session" {
                return Response::new(Body::from(r#"{"auth_session_token":"s1"}"#));
            }
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn credentials() -> Credentials {
    Credentials {
        consumer_key: "CK_1".to_owned().into(),
        consumer_secret: "CS_1".to_owned().into(),
        access_token: "AT_1".to_owned().into(),
        access_secret: "AS_1".to_owned().into(),
    }
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let json_like = prop_oneof![
        Just(br#"{"cursor": 5, "devices": "x", "more_to_follow": "yes"}"#.to_vec()),
        Just(br#"{"devices":[{"serial_number": null}], "cursor": "c", "more_to_follow": false}"#.to_vec()),
        Just(br#"{"devices":[{"serial_number":"\u0000\u202e../x","op_date":"not a date"}],"cursor":"","more_to_follow":true}"#.to_vec()),
        Just(br#"{"server_name": ["a"], "urls": [{"uri": 1, "limit": {"maximum": -5}}]}"#.to_vec()),
        Just(br#"{"devices": {"SER": 17}, "retry_after_seconds": 1e309}"#.to_vec()),
        Just(b"\xff\xfe\x00garbage\xc3\x28".to_vec()),
        Just(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
        Just(format!("\"{}\"", "A".repeat(1 << 20)).into_bytes()),
        "[a-zA-Z0-9_\"{}:,\\[\\] ]{0,400}".prop_map(String::into_bytes),
    ];
    prop_oneof![json_like, proptest::collection::vec(any::<u8>(), 0..4096)]
}

fn statuses() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(400),
        Just(401),
        Just(403),
        Just(404),
        Just(429),
        Just(500),
        Just(503),
        100u16..600,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_makes_a_call_panic_or_hang() {
    let answer = Arc::new(Mutex::new(Answer::default()));
    let addr = hostile_apple(answer.clone()).await;
    let client = AppleClient::new(AppleConfig {
        base_url: format!("http://{addr}"),
        request_timeout: Duration::from_secs(2),
        retry: RetryPolicy::none(),
        ..AppleConfig::default()
    })
    .unwrap();

    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let strategy = (statuses(), bodies());
    let mut tried = 0;
    for _ in 0..300 {
        let (status, body) = strategy.new_tree(&mut runner).unwrap().current();
        *answer.lock().unwrap() = Answer { status, body };
        let session = client.session("fuzz", credentials(), None);
        let calls = async {
            let _ = session.account().await;
            let _ = session.fetch_devices(None, Some(100)).await;
            let _ = session.sync_devices("cursor", Some(100)).await;
            let _ = session.device_details(&["SER1".to_owned()]).await;
            let _ = session.assign_profile("P1", &["SER1".to_owned()]).await;
            let _ = session.disown_devices(&["SER1".to_owned()]).await;
        };
        tokio::time::timeout(Duration::from_secs(30), calls)
            .await
            .unwrap_or_else(|_| panic!("a call hung on status {status}"));
        tried += 1;
    }
    assert_eq!(tried, 300);
    // Read by `adesync-local reliability` for docs/reliability.md (shown
    // with --nocapture).
    println!("cases tried: {tried}");
}
