use std::collections::{BTreeMap, HashMap};

/// What a secret belongs to: the KMS encryption context of its data key and the associated data
/// of its AES-GCM ciphertext.
///
/// The same context must be given to [`Vault::open`](crate::Vault::open) as to
/// [`Vault::seal`](crate::Vault::seal); any other context fails with
/// [`VaultError::Tampered`](crate::VaultError::Tampered). Keys and values are identifiers, not
/// secrets: KMS writes the encryption context to CloudTrail in the clear.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(BTreeMap<String, String>);

impl Context {
    /// Context key naming the account a secret belongs to.
    pub const ACCOUNT: &'static str = "adesync:account";
    /// Context key naming what the secret is (`token-credentials`, `account-key`).
    pub const PURPOSE: &'static str = "adesync:purpose";
    /// Context key naming the server token a secret belongs to.
    pub const TOKEN: &'static str = "adesync:token";

    /// An empty context; add entries with [`Context::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one entry.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The context of a server token's OAuth credentials (the decrypted `.p7m` JSON).
    pub fn token_credentials(account: impl Into<String>, token: impl Into<String>) -> Self {
        Self::new()
            .with(Self::ACCOUNT, account)
            .with(Self::PURPOSE, "token-credentials")
            .with(Self::TOKEN, token)
    }

    /// The context of an account's RSA private key (PKCS#8 DER).
    pub fn account_key(account: impl Into<String>) -> Self {
        Self::new()
            .with(Self::ACCOUNT, account)
            .with(Self::PURPOSE, "account-key")
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The form the KMS API takes; `None` for an empty context, which KMS treats the same way.
    pub(crate) fn to_kms(&self) -> Option<HashMap<String, String>> {
        (!self.0.is_empty()).then(|| self.0.clone().into_iter().collect())
    }

    /// Canonical bytes for the GCM associated data: entries in key order, each key and value
    /// prefixed by its length, so no two different contexts share an encoding (a plain
    /// `key=value;` join would let `{"a": "b;c=d"}` collide with `{"a": "b", "c": "d"}`).
    pub(crate) fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.0 {
            for part in [key, value] {
                out.extend_from_slice(&(part.len() as u64).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_ignore_insertion_order() {
        let a = Context::new().with("x", "1").with("y", "2");
        let b = Context::new().with("y", "2").with("x", "1");
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn canonical_bytes_keep_entry_boundaries() {
        let joined = Context::new().with("a", "b;c=d");
        let split = Context::new().with("a", "b").with("c", "d");
        assert_ne!(joined.canonical_bytes(), split.canonical_bytes());
        let shifted = Context::new().with("ab", "c");
        let unshifted = Context::new().with("a", "bc");
        assert_ne!(shifted.canonical_bytes(), unshifted.canonical_bytes());
    }

    #[test]
    fn product_contexts_name_account_purpose_and_token() {
        let token = Context::token_credentials("acc-1", "tok-9");
        assert_eq!(
            token.iter().collect::<Vec<_>>(),
            [
                ("adesync:account", "acc-1"),
                ("adesync:purpose", "token-credentials"),
                ("adesync:token", "tok-9"),
            ]
        );
        let key = Context::account_key("acc-1");
        assert_eq!(
            key.iter().collect::<Vec<_>>(),
            [
                ("adesync:account", "acc-1"),
                ("adesync:purpose", "account-key")
            ]
        );
    }

    #[test]
    fn empty_context_is_omitted_from_kms_calls() {
        assert_eq!(Context::new().to_kms(), None);
        let kms = Context::account_key("a").to_kms().unwrap_or_default();
        assert_eq!(kms.get(Context::ACCOUNT).map(String::as_str), Some("a"));
    }
}
