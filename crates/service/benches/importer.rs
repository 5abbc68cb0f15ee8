//! The importer's CPU path, one core, no I/O: a device-batch message body
//! as the sync worker sends it (the largest that fits an SQS message) →
//! decoded → grouped per serial → decided against the stored devices →
//! the DynamoDB write requests. Throughput is in devices (records).
//!
//! - `first sync`: nothing stored; every device becomes a put in
//!   `BatchWriteItem` calls of 25.
//! - `unchanged re-sync`: every device stored (the `BatchGetItem` answer's
//!   items are parsed here too, as the importer does), every record a newer
//!   snapshot of the same attributes: the change detection that saves the
//!   writes, and no write requests.
//!
//! `cargo bench -p adesync-service --bench importer`

use std::collections::HashMap;
use std::hint::black_box;

use adesync_core::device::Stored;
use adesync_core::device::{self, AppleAttributes, DeviceRecord, Observation, Version};
use adesync_core::ids::{AccountId, RunId, Serial, TokenId};
use adesync_core::run::import::{Refreshes, decide_writes};
use adesync_core::run::messages::{BatchMessage, DeviceBatch};
use adesync_queue::batches;
use adesync_store::devices::{create_requests, device_from_item, device_item};
use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A record as Apple's fetch returns it for a Mac (the simulator's fields).
fn record(i: usize, fetched_at: DateTime<Utc>) -> DeviceRecord {
    DeviceRecord {
        serial: Serial::parse(&format!("C02BENCH{i:07}")).expect("serial"),
        observation: Observation::Snapshot,
        version: Version::for_snapshot(fetched_at, i as u64),
        attributes: AppleAttributes {
            model: Some("MacBook Pro 14\"".into()),
            description: Some("MBP 14 SPACE GRAY/M3/16GB/512GB-USA".into()),
            color: Some("SPACE GRAY".into()),
            os: Some("OSX".into()),
            device_family: Some("Mac".into()),
            profile_status: Some("empty".into()),
            device_assigned_by: Some("admin@acme.example".into()),
            device_assigned_date: Some("2026-10-16T01:55:30Z".into()),
            ..AppleAttributes::default()
        },
        released_by_replacement: false,
    }
}

/// The first (full-size) device batch of a snapshot fetched at `fetched_at`.
fn message_body(fetched_at: DateTime<Utc>) -> (String, usize) {
    let header = DeviceBatch {
        account_id: AccountId::parse("acme").expect("account"),
        token_id: TokenId::parse("01JD8X3Q5V7N2M4K6P8R0T2W4Y").expect("token"),
        run_id: RunId::new_at(fetched_at),
        seq: 0,
        snapshot: true,
        records: Vec::new(),
    };
    let records = (0..5_000).map(|i| record(i, fetched_at)).collect();
    let batch = batches::split(header, records)
        .expect("split")
        .into_iter()
        .next()
        .expect("a batch");
    let devices = batch.records.len();
    let body = serde_json::to_string(&BatchMessage::Devices(batch)).expect("encode");
    assert!(body.len() <= batches::MAX_MESSAGE_BYTES);
    (body, devices)
}

/// Decode → group → decide → write requests; returns how many puts.
fn import(body: &str, stored: &HashMap<Serial, Stored>, now: DateTime<Utc>) -> usize {
    let BatchMessage::Devices(batch) = batches::decode(body).expect("decode") else {
        unreachable!("a device batch")
    };
    let groups = device::group_by_serial(batch.records);
    let writes = decide_writes(&groups, stored, Refreshes::Skip, now);
    let (new, existing): (Vec<_>, Vec<_>) = writes.into_iter().partition(|w| w.expected.is_none());
    assert!(existing.is_empty(), "nothing changed for stored devices");
    create_requests(&batch.token_id, &new)
        .expect("requests")
        .iter()
        .map(Vec::len)
        .sum()
}

fn importer(c: &mut Criterion) {
    let first = DateTime::from_timestamp(1_893_492_000, 0).expect("time");
    let week_later = first + chrono::Duration::days(7);
    let (body, devices) = message_body(first);
    let token = TokenId::parse("01JD8X3Q5V7N2M4K6P8R0T2W4Y").expect("token");

    let mut group = c.benchmark_group("importer CPU path");
    group.throughput(Throughput::Elements(devices as u64));

    let none = HashMap::new();
    assert_eq!(
        import(&body, &none, first),
        devices,
        "every device is a put"
    );
    group.bench_function(format!("first sync, {devices} devices per message"), |b| {
        b.iter(|| import(black_box(&body), &none, first))
    });

    // What the first sync stored, as DynamoDB items (the read answer).
    let items: Vec<_> = {
        let BatchMessage::Devices(batch) = batches::decode(&body).expect("decode") else {
            unreachable!()
        };
        batch
            .records
            .iter()
            .map(|r| {
                let device = device::decide(None, r, first)
                    .into_write()
                    .expect("a new device");
                device_item(&token, &device, 1)
            })
            .collect()
    };
    let (resync_body, _) = message_body(week_later);
    group.bench_function(
        format!("unchanged re-sync, {devices} devices per message"),
        |b| {
            b.iter(|| {
                let stored: HashMap<Serial, Stored> = black_box(&items)
                    .iter()
                    .map(|item| {
                        let stored = device_from_item(item).expect("item");
                        (stored.device.serial.clone(), stored)
                    })
                    .collect();
                let puts = import(black_box(&resync_body), &stored, week_later);
                assert_eq!(puts, 0, "an unchanged device costs no write");
                puts
            })
        },
    );
    group.finish();
}

criterion_group!(benches, importer);
criterion_main!(benches);
