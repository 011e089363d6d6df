//! Debezium change events ([`DatabaseEvent<T>`]): `before`, `after`, `source`, `op`,
//! `ts_ms`, from either the plain envelope or the `{schema, payload}` form that the JSON
//! converter writes with schemas enabled. A deleted row's tombstone (null value) decodes as
//! `None` when the handler takes `Option<DatabaseEvent<T>>`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// The operation that produced a change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Operation {
    /// `c`: a row was inserted.
    #[serde(rename = "c")]
    Create,
    /// `u`: a row was updated.
    #[serde(rename = "u")]
    Update,
    /// `d`: a row was deleted.
    #[serde(rename = "d")]
    Delete,
    /// `r`: a row was read by a snapshot.
    #[serde(rename = "r")]
    Read,
    /// `t`: a table was truncated.
    #[serde(rename = "t")]
    Truncate,
}

/// One Debezium change event for rows of type `T`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatabaseEvent<T> {
    /// The row before the change (updates and deletes).
    pub before: Option<T>,
    /// The row after the change (creates, updates, reads).
    pub after: Option<T>,
    /// Connector metadata (database, table, LSN...), kept as JSON.
    pub source: serde_json::Value,
    /// What happened.
    pub op: Operation,
    /// When the connector processed it, in milliseconds.
    pub ts_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    before: Option<T>,
    after: Option<T>,
    #[serde(default)]
    source: serde_json::Value,
    op: Operation,
    ts_ms: Option<i64>,
}

impl<T> From<Envelope<T>> for DatabaseEvent<T> {
    fn from(e: Envelope<T>) -> Self {
        DatabaseEvent {
            before: e.before,
            after: e.after,
            source: e.source,
            op: e.op,
            ts_ms: e.ts_ms,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for DatabaseEvent<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Accept both `{before, after, ...}` and `{schema, payload: {before, after, ...}}`.
        let mut value = serde_json::Value::deserialize(deserializer)?;
        if value_has_schema(&value)
            && let Some(payload) = value.get_mut("payload")
        {
            value = payload.take();
        }
        Envelope::<T>::deserialize(value)
            .map(DatabaseEvent::from)
            .map_err(serde::de::Error::custom)
    }
}

fn value_has_schema(value: &serde_json::Value) -> bool {
    value.get("schema").is_some() && value.get("op").is_none()
}

impl<T> DatabaseEvent<T> {
    /// The row as it is now: `after`, or `before` for a delete.
    pub fn current(&self) -> Option<&T> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, serde::Serialize, PartialEq)]
    struct User {
        id: u32,
        email: String,
    }

    #[test]
    fn plain_and_schema_envelopes_decode_alike() {
        let plain = r#"{"before":null,"after":{"id":1,"email":"a@x"},"source":{"table":"users"},"op":"c","ts_ms":1700000000000}"#;
        let wrapped = format!(r#"{{"schema":{{"type":"struct"}},"payload":{plain}}}"#);
        let a: DatabaseEvent<User> = serde_json::from_str(plain).unwrap();
        let b: DatabaseEvent<User> = serde_json::from_str(&wrapped).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.op, Operation::Create);
        assert_eq!(a.after.as_ref().unwrap().email, "a@x");
        assert_eq!(a.source["table"], "users");
        assert_eq!(a.ts_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn every_operation_and_deletes() {
        for (code, op) in [
            ("c", Operation::Create),
            ("u", Operation::Update),
            ("d", Operation::Delete),
            ("r", Operation::Read),
            ("t", Operation::Truncate),
        ] {
            let json = format!(r#"{{"before":{{"id":2,"email":"b"}},"after":null,"op":"{code}"}}"#);
            let event: DatabaseEvent<User> = serde_json::from_str(&json).unwrap();
            assert_eq!(event.op, op);
            assert_eq!(event.current().unwrap().id, 2);
        }
        let tombstone: Option<DatabaseEvent<User>> = serde_json::from_str("null").unwrap();
        assert!(tombstone.is_none());
        let bad = serde_json::from_str::<DatabaseEvent<User>>(r#"{"op":"x"}"#);
        assert!(bad.is_err());
    }
}
