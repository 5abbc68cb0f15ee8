//! Typed access to DynamoDB attribute maps.
//!
//! Times are stored as epoch milliseconds (`N`) so conditions can compare
//! them; TTL attributes, which DynamoDB reads in epoch seconds, are the one
//! exception and say so in their name's writer ([`ttl_seconds`]).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::StoreError;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn millis(at: DateTime<Utc>) -> AttributeValue {
    n(at.timestamp_millis())
}

/// A TTL attribute: DynamoDB expects epoch seconds.
pub fn ttl_seconds(at: DateTime<Utc>) -> AttributeValue {
    n(at.timestamp())
}

pub fn bool(value: bool) -> AttributeValue {
    AttributeValue::Bool(value)
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn get_i64(item: &Item, name: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Malformed(format!("{name} is not an integer"))),
        Some(_) => Err(StoreError::Malformed(format!("{name} is not a number"))),
    }
}

pub fn get_u64(item: &Item, name: &str) -> Result<Option<u64>, StoreError> {
    get_i64(item, name)?
        .map(|v| u64::try_from(v).map_err(|_| StoreError::Malformed(format!("{name} < 0"))))
        .transpose()
}

pub fn get_time(item: &Item, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_i64(item, name)?
        .map(|ms| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| StoreError::Malformed(format!("{name} is out of range")))
        })
        .transpose()
}

pub fn get_bool(item: &Item, name: &str) -> bool {
    matches!(item.get(name), Some(AttributeValue::Bool(true)))
}

/// The condition under which `:me` may take a holder slot on an item (one
/// assigner per token, one renewer of its Apple session): nobody holds it,
/// its holder's deadline `until` has passed (Lambda killed it), or `:me`
/// holds it already (a retried write DynamoDB applied but answered with an
/// error). Needs the values `:now` and `:me`.
pub fn slot_free_or_mine(holder: &str, until: &str) -> String {
    format!("(attribute_not_exists({until}) OR {until} <= :now OR {holder} = :me)")
}

/// A string set, None for an empty list: DynamoDB stores no empty set, so
/// "no tags" is the attribute's absence.
pub fn string_set(values: &[String]) -> Option<AttributeValue> {
    (!values.is_empty()).then(|| AttributeValue::Ss(values.to_vec()))
}

/// A string set's members, sorted (absent: none). A list of strings reads
/// the same, so an item written either way reads alike.
pub fn get_string_set(item: &Item, name: &str) -> Result<Vec<String>, StoreError> {
    let mut values = match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Vec::new(),
        Some(AttributeValue::Ss(values)) => values.clone(),
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| {
                v.as_s()
                    .cloned()
                    .map_err(|_| StoreError::Malformed(format!("{name} holds a non-string")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(StoreError::Malformed(format!("{name} is not a string set"))),
    };
    values.sort();
    values.dedup();
    Ok(values)
}
