//! Token items.

use adesync_core::ids::{AccountId, TokenId};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use crate::{Store, StoreError};

/// The plain (non-secret) fields of a new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub account: AccountId,
    pub token: TokenId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Stores a token item that does not exist yet.
    ///
    /// Returns false if a token with this id already exists.
    pub async fn insert_token(&self, token: &NewToken) -> Result<bool, StoreError> {
        let item: Item = [
            ("account_id", attrs::s(token.account.as_str())),
            ("token_id", attrs::s(token.token.as_str())),
            ("name", attrs::s(token.name.as_str())),
            ("created_at", attrs::millis(token.created_at)),
            ("device_count", attrs::n(0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.tokens)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(token_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::dynamo("PutItem(token)", e)),
        }
    }
}
