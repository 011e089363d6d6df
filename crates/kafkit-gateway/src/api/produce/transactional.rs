//! The gateway's transactional producer, for `/kafka/send-batch` with `"transactional": true`:
//! created on the first transactional batch (a gateway that never gets one never registers a
//! transactional id), shared by every request, one transaction at a time (a librdkafka producer
//! has one).
//!
//! Its transactional id must be unique per gateway instance: two gateways with one id fence
//! each other. It is `KAFKA_TRANSACTIONAL_ID` with its `KAFKA_TRANSACTIONAL_ID_SUFFIX` when
//! set (use `hostname` for replicas with stable host names, so a restarted instance fences its
//! predecessor and aborts what that left open at once), else `<KAFKA_CLIENT_ID>-gateway-<random>`,
//! unique per process (a crashed process's open transaction then holds read-committed readers
//! back until the transaction timeout, `KAFKA_TRANSACTION_TIMEOUT`).

use std::sync::Arc;

use kafkit::{Kafka, metrics::Metrics, transaction::TransactionalProducer};
use tokio::sync::Mutex;

/// The gateway's transactional producer, made when first needed.
#[derive(Clone, Debug)]
pub struct Transactions {
    kafka: Arc<Kafka>,
    id: Arc<str>,
    metrics: Metrics,
    producer: Arc<Mutex<Option<TransactionalProducer>>>,
}

impl Transactions {
    /// Transactions for a gateway on `kafka`, recording into `metrics`. Nothing is created
    /// yet; a malformed `KAFKA_TRANSACTIONAL_ID_SUFFIX` is an error now.
    pub fn new(kafka: &Kafka, metrics: Metrics) -> kafkit::Result<Self> {
        let config = kafka.config();
        let id = match config.instance_transactional_id()? {
            Some(id) => id,
            None => format!(
                "{}-gateway-{}",
                config.client_id,
                uuid::Uuid::new_v4().simple()
            ),
        };
        Ok(Transactions {
            kafka: Arc::new(kafka.clone()),
            id: id.into(),
            metrics,
            producer: Arc::default(),
        })
    }

    /// The transactional id the gateway registers (or will).
    pub fn transactional_id(&self) -> &str {
        &self.id
    }

    /// The producer, created and registered on first use. A fenced one (another process took
    /// the id) is replaced: the newest registration wins, and the fencing is logged.
    pub async fn producer(&self) -> kafkit::Result<TransactionalProducer> {
        let mut slot = self.producer.lock().await;
        if let Some(producer) = slot.as_ref() {
            if !producer.is_fenced() {
                return Ok(producer.clone());
            }
            tracing::error!(transactional_id = %self.id,
                "the gateway's transactional producer was fenced: another process uses its \
                 transactional id (set KAFKA_TRANSACTIONAL_ID_SUFFIX); registering again");
        }
        let producer = self
            .kafka
            .producer_builder()
            .enqueue_timeout(crate::ENQUEUE_TIMEOUT)
            .metrics(self.metrics.clone())
            .build_transactional(self.id.as_ref())
            .await?;
        *slot = Some(producer.clone());
        Ok(producer)
    }

    /// Waits for the running transaction, if any, and flushes; a no-op when none was created.
    pub async fn shutdown(&self) -> kafkit::Result<()> {
        let producer = self.producer.lock().await.clone();
        match producer {
            Some(producer) => producer.shutdown().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use kafkit::{config::Isolation, reader::Limits, reader::Start};
    use serde_json::{Value, json};

    use crate::router;
    use crate::testing::{call, post, state};

    /// The values a reader with `isolation` sees in `topic`, to its end as of now.
    async fn values(topic: &str, isolation: Isolation) -> Vec<Value> {
        let reader = testkit::kafka().reader().unwrap().isolation(isolation);
        let mut reading = reader.open(topic, None, Start::Beginning).await.unwrap();
        let messages = reading
            .collect(&Limits::to_end(usize::MAX).timeout(Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(reading.at_end(), "{topic}: the end was not reached in time");
        messages.iter().map(|m| m.json().unwrap()).collect()
    }

    fn transactional(messages: Value) -> Value {
        json!({"transactional": true, "messages": messages})
    }

    #[tokio::test]
    async fn a_transactional_batch_is_committed_whole_or_not_at_all() {
        let orders = testkit::topic("gw-tx-orders", 2).await;
        let audit = testkit::topic("gw-tx-audit", 1).await;
        let app = router(state());

        // Three records over two topics: one transaction, every record answered with its place.
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &transactional(json!([
                    {"topic": orders, "key": "o-1", "value": 1},
                    {"topic": orders, "key": "o-2", "value": 2},
                    {"topic": audit, "value": 3},
                ])),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["status"], "ok");
        assert_eq!(answer.body["succeeded"], 3);
        assert_eq!(answer.body["results"][2]["topic"], audit.as_str());
        let mut committed = values(&orders, Isolation::ReadCommitted).await;
        committed.sort_by_key(|v| v.as_i64());
        assert_eq!(committed, [json!(1), json!(2)]);
        assert_eq!(values(&audit, Isolation::ReadCommitted).await, [json!(3)]);

        // One invalid record refuses the batch: one error status, nothing written at all.
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &transactional(json!([
                    {"topic": audit, "value": 4},
                    {"topic": "not a topic", "value": 5},
                ])),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        assert_eq!(answer.body["status"], "failed");
        assert_eq!(answer.body["succeeded"], 0);
        assert_eq!(answer.body["error"]["code"], "invalid_record");
        assert_eq!(
            answer.body["results"][0]["error"]["code"],
            "transaction_not_sent"
        );
        assert_eq!(answer.body["results"][1]["error"]["code"], "invalid_record");
        assert_eq!(values(&audit, Isolation::ReadUncommitted).await, [json!(3)]);

        // A record the broker refuses (no partition 7) aborts the transaction: the record
        // sent with it is never visible to read-committed readers.
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &transactional(json!([
                    {"topic": audit, "value": 6},
                    {"topic": audit, "partition": 7, "value": 7},
                ])),
            ),
        )
        .await;
        assert!(answer.status.is_client_error() || answer.status.is_server_error());
        assert_eq!(answer.body["status"], "failed", "{}", answer.text);
        assert_eq!(answer.body["succeeded"], 0);
        assert!(
            answer.body["results"][0].get("error").is_some(),
            "{}",
            answer.text
        );
        assert!(
            answer.body["results"][1].get("error").is_some(),
            "{}",
            answer.text
        );

        // And the gateway's transactions go on: the next batch is visible, the aborted one not.
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &transactional(json!([{"topic": audit, "value": 8}])),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(
            values(&audit, Isolation::ReadCommitted).await,
            [json!(3), json!(8)]
        );
    }

    #[tokio::test]
    async fn idempotency_keys_replay_transactional_batches() {
        let topic = testkit::topic("gw-tx-idem", 1).await;
        let app = router(state());
        let batch = |values: &[(&str, i32)]| {
            transactional(json!(
                values
                    .iter()
                    .map(|(key, n)| json!({"topic": topic, "value": n, "idempotency_key": key}))
                    .collect::<Vec<_>>()
            ))
        };
        let with_key = |body: &Value, key: &str| {
            let mut request = post("/kafka/send-batch", body);
            request
                .headers_mut()
                .insert("idempotency-key", key.parse().unwrap());
            request
        };
        // A request key: the retry replays the answer and commits nothing more.
        let first = call(&app, with_key(&batch(&[("a", 1), ("b", 2)]), "req-1")).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        let retry = call(&app, with_key(&batch(&[("a", 1), ("b", 2)]), "req-1")).await;
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        assert_eq!(retry.body, first.body);
        // Record keys: a new request with one more record commits that record only.
        let more = call(
            &app,
            post("/kafka/send-batch", &batch(&[("a", 1), ("b", 2), ("c", 3)])),
        )
        .await;
        assert_eq!(more.status, StatusCode::OK, "{}", more.text);
        assert_eq!(more.body["results"][0], first.body["results"][0]);
        assert_eq!(more.body["results"][1], first.body["results"][1]);
        assert_eq!(
            values(&topic, Isolation::ReadCommitted).await,
            [json!(1), json!(2), json!(3)]
        );
        // A record key of a refused transactional batch is released: it may be sent again.
        let refused = call(
            &app,
            post(
                "/kafka/send-batch",
                &transactional(json!([
                    {"topic": topic, "value": 4, "idempotency_key": "d"},
                    {"topic": "not a topic", "value": 5},
                ])),
            ),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        let again = call(&app, post("/kafka/send-batch", &batch(&[("d", 4)]))).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert!(again.headers.get("idempotent-replayed").is_none());
        assert_eq!(
            values(&topic, Isolation::ReadCommitted).await,
            [json!(1), json!(2), json!(3), json!(4)]
        );
    }
}
