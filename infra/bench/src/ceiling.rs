//! The ceilings the pipeline is measured against: what this machine's local
//! DynamoDB and SQS do with the simplest possible client at the importer's
//! parallelism, with the importer's item and message sizes.

use std::time::Instant;

use adesync_core::device::{self, AppleAttributes, Device, DeviceRecord, Observation, Version};
use adesync_core::ids::{Serial, TokenId};
use adesync_local::template::Template;
use adesync_runtime::aws::Clients;
use adesync_store::devices::{WRITE_CONCURRENCY, device_item};
use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::{Put, PutRequest, TransactWriteItem, WriteRequest};
use futures::{StreamExt, TryStreamExt};

/// A device as the importer writes it after a first sync (made by the
/// importer's own rule, so the item has every field a real one has).
pub fn sample_device(i: usize) -> Result<Device> {
    let record = DeviceRecord {
        serial: Serial::parse(&format!("C02BENCH{i:07}")).context("serial")?,
        observation: Observation::Snapshot,
        version: Version::for_snapshot(chrono::Utc::now(), i as u64),
        attributes: AppleAttributes {
            model: Some("MacBook Pro".into()),
            description: Some("MBP 13.3 SPACE GRAY/2.0GHZ/8GB/256GB-USA".into()),
            color: Some("SPACE GRAY".into()),
            os: Some("OSX".into()),
            device_family: Some("Mac".into()),
            profile_status: Some("empty".into()),
            device_assigned_by: Some("admin@acme.example".into()),
            device_assigned_date: Some("2026-10-16T01:55:30Z".into()),
            ..AppleAttributes::default()
        },
        released_by_replacement: false,
    };
    device::decide(None, &record, chrono::Utc::now())
        .into_write()
        .context("a new device is written")
}

/// Devices an importer-sized SQS message carries (a 240 KiB batch).
pub const DEVICES_PER_MESSAGE: f64 = 700.0;
/// The way the importer writes new devices: the ceiling it is held to.
pub const BATCH_WRITE: &str = "BatchWriteItem, 25 items per call";

/// Items per second for one way of writing `items` devices.
pub struct Rate {
    pub what: &'static str,
    pub per_second: f64,
}

/// Writes `items` devices into a fresh devices table three ways, at the
/// importer's parallelism.
pub async fn dynamodb(clients: &Clients, template: &Template, items: usize) -> Result<Vec<Rate>> {
    let stage = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let deployed = template.deploy(clients, &stage).await?;
    let table = deployed.tables["DevicesTable"].clone();
    let token = TokenId::parse("bench-token").context("token id")?;
    let mut rates = Vec::new();

    for (what, chunk) in [
        (BATCH_WRITE, 25usize),
        ("TransactWriteItems, 100 conditional puts per call", 100),
        ("PutItem, one conditional put per call", 1),
    ] {
        let offset = rates.len() * items;
        let started = Instant::now();
        let chunks: Vec<Vec<usize>> = (offset..offset + items)
            .collect::<Vec<_>>()
            .chunks(chunk)
            .map(<[usize]>::to_vec)
            .collect();
        // One call in flight per importer write slot; single puts get the
        // slots' worth of calls each, as a per-device writer would.
        let concurrency = if chunk == 1 {
            WRITE_CONCURRENCY * 8
        } else {
            WRITE_CONCURRENCY
        };
        futures::stream::iter(chunks)
            .map(|indices| {
                let table = table.clone();
                let token = token.clone();
                async move {
                    let items = indices
                        .iter()
                        .map(|i| Ok(device_item(&token, &sample_device(*i)?, 1)))
                        .collect::<Result<Vec<_>>>()?;
                    match chunk {
                        25 => {
                            let mut requests = Vec::with_capacity(items.len());
                            for item in items {
                                let put = PutRequest::builder().set_item(Some(item)).build()?;
                                requests.push(WriteRequest::builder().put_request(put).build());
                            }
                            let output = clients
                                .dynamodb
                                .batch_write_item()
                                .request_items(&table, requests)
                                .send()
                                .await?;
                            anyhow::ensure!(
                                output.unprocessed_items().is_none_or(|u| u.is_empty()),
                                "unprocessed items"
                            );
                        }
                        100 => {
                            let mut puts = Vec::with_capacity(items.len());
                            for item in items {
                                let put = Put::builder()
                                    .table_name(&table)
                                    .set_item(Some(item))
                                    .condition_expression("attribute_not_exists(serial)")
                                    .build()?;
                                puts.push(TransactWriteItem::builder().put(put).build());
                            }
                            clients
                                .dynamodb
                                .transact_write_items()
                                .set_transact_items(Some(puts))
                                .send()
                                .await?;
                        }
                        _ => {
                            for item in items {
                                clients
                                    .dynamodb
                                    .put_item()
                                    .table_name(&table)
                                    .set_item(Some(item))
                                    .condition_expression("attribute_not_exists(serial)")
                                    .send()
                                    .await?;
                            }
                        }
                    }
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await?;
        rates.push(Rate {
            what,
            per_second: items as f64 / started.elapsed().as_secs_f64(),
        });
    }
    deployed.destroy(clients).await?;
    Ok(rates)
}

/// Sends and receives `messages` messages of the importer's size through a
/// fresh FIFO queue in one group (as one token's batches travel).
pub async fn sqs(clients: &Clients, template: &Template, messages: usize) -> Result<(f64, f64)> {
    let stage = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let deployed = template.deploy(clients, &stage).await?;
    let url = deployed.queues["DeviceBatchesQueue"].clone();
    let body = "x".repeat(240 * 1024);
    let started = Instant::now();
    for i in 0..messages {
        clients
            .sqs
            .send_message()
            .queue_url(&url)
            .message_body(&body)
            .message_group_id("bench")
            .message_deduplication_id(i.to_string())
            .send()
            .await?;
    }
    let send = messages as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut received = 0;
    while received < messages {
        let output = clients
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(1)
            .send()
            .await?;
        for message in output.messages() {
            received += 1;
            clients
                .sqs
                .delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }
    let receive = messages as f64 / started.elapsed().as_secs_f64();
    deployed.destroy(clients).await?;
    Ok((send, receive))
}
