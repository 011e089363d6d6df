//! `kafkit serve`, the real binary, over real HTTP, against the test broker and the embedded one.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// A running gateway; killed on drop if the test did not stop it.
struct Gateway {
    child: Child,
    base: String,
    /// The JSON log line announcing readiness.
    ready: Value,
}

impl Gateway {
    fn start(brokers: Option<&str>) -> Gateway {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_kafkit"));
        for (name, _) in std::env::vars() {
            if name.starts_with("KAFKA_") || name.starts_with("KAFKIT_") {
                command.env_remove(name);
            }
        }
        if let Some(brokers) = brokers {
            command.env("KAFKA_BROKERS", brokers);
        }
        let mut child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("KAFKIT_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the readiness line, and keep draining the log afterwards.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = loop {
            let line = lines
                .next()
                .expect("gateway exited before it was ready")
                .unwrap();
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if entry["message"] == "kafkit gateway ready" {
                break entry;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            ready,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn send_and_send_batch_write_exactly_what_was_asked() {
    let topic = testkit::topic("gw", 3).await;
    let gateway = Gateway::start(Some(&testkit::brokers()));
    let http = reqwest::Client::new();

    // One JSON record with key, headers and explicit partition.
    let response = http
        .post(gateway.url("/kafka/send"))
        .json(&json!({
            "topic": topic, "key": "order-1", "partition": 2,
            "value": {"id": 1, "items": ["book"]},
            "headers": {"tenant-id": "acme"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent: Value = response.json().await.unwrap();
    assert_eq!(sent["partition"], 2);
    assert_eq!(sent["topic"], topic.as_str());

    // A batch mixing encodings, with one invalid record in the middle.
    let response = http
        .post(gateway.url("/kafka/send-batch"))
        .json(&json!({"messages": [
            {"topic": topic, "key": "k-text", "value": "hello", "encoding": "string"},
            {"topic": "bad topic!", "value": 1},
            {"topic": topic, "key": "k-bytes", "encoding": "base64",
             "value": base64::engine::general_purpose::STANDARD.encode([0u8, 159, 146, 150])},
        ]}))
        .send()
        .await
        .unwrap();
    // Partial failure is visible in the status and per record.
    assert_eq!(response.status(), 207);
    let batch: Value = response.json().await.unwrap();
    assert_eq!(batch["status"], "partial");
    assert_eq!(batch["succeeded"], 2);
    assert_eq!(batch["failed"], 1);
    assert_eq!(batch["results"][1]["error"]["code"], "invalid_record");
    assert!(batch["results"][0]["offset"].is_i64());
    assert!(batch["results"][2]["offset"].is_i64());

    // Reading the topic back gives exactly the three valid records.
    let mut messages = testkit::read(&topic, 4, Duration::from_secs(10)).await;
    messages.sort_by_key(|m| m.key.clone());
    assert_eq!(messages.len(), 3);
    let bytes = &messages[0];
    assert_eq!(bytes.key.as_deref(), Some(&b"k-bytes"[..]));
    assert_eq!(bytes.payload(), Some(&[0u8, 159, 146, 150][..]));
    assert_eq!(
        bytes.header_value("content-type"),
        Some(&b"application/octet-stream"[..])
    );
    let text = &messages[1];
    assert_eq!(text.payload(), Some(&b"hello"[..]));
    let order = &messages[2];
    assert_eq!(order.partition, 2);
    assert_eq!(order.key.as_deref(), Some(&b"order-1"[..]));
    assert_eq!(order.header_value("tenant-id"), Some(&b"acme"[..]));
    assert_eq!(
        order.json::<Value>().unwrap(),
        json!({"id": 1, "items": ["book"]})
    );
    assert_eq!(
        batch["results"][2]["partition"].as_i64().unwrap(),
        i64::from(bytes.partition)
    );

    // Metrics count the records and the requests under their route templates.
    let metrics = http
        .get(gateway.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "kafka_messages_sent_total{{status=\"success\",topic=\"{topic}\"}} 3"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(
        "kafkit_http_requests_total{method=\"POST\",route=\"/kafka/send-batch\",status=\"207\"} 1"
    ));

    // SIGTERM: the gateway drains and exits 0.
    assert!(gateway.terminate().success());
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_produce_nothing() {
    let topic = testkit::topic("gw-bad", 1).await;
    let gateway = Gateway::start(Some(&testkit::brokers()));
    let http = reqwest::Client::new();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            http.post(gateway.url("/kafka/send"))
                .header("content-type", "application/json")
                .body("{\"topic\": "),
            400,
            "malformed_json",
        ),
        (
            "missing topic",
            http.post(gateway.url("/kafka/send"))
                .json(&json!({"value": 1})),
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            http.post(gateway.url("/kafka/send"))
                .json(&json!({"topic": topic, "value": 1, "colour": "red"})),
            422,
            "invalid_body",
        ),
        (
            "not JSON",
            http.post(gateway.url("/kafka/send")).body("hello"),
            415,
            "unsupported_media_type",
        ),
        (
            "base64 that is not",
            http.post(gateway.url("/kafka/send"))
                .json(&json!({"topic": topic, "value": "***", "encoding": "base64"})),
            400,
            "invalid_base64",
        ),
        (
            "string encoding of a number",
            http.post(gateway.url("/kafka/send"))
                .json(&json!({"topic": topic, "value": 5, "encoding": "string"})),
            400,
            "invalid_value",
        ),
        (
            "empty batch",
            http.post(gateway.url("/kafka/send-batch"))
                .json(&json!({"messages": []})),
            400,
            "empty_batch",
        ),
        (
            "batch over the limit",
            http.post(gateway.url("/kafka/send-batch")).json(&json!({
                "messages": vec![json!({"topic": topic, "value": 1}); 1001]
            })),
            413,
            "batch_too_large",
        ),
    ];
    for (name, request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 3,
            "{name}"
        );
    }
    // A body announced over the 4 MiB limit is refused before it is read.
    let status_line = {
        use std::io::{Read, Write};
        let mut socket =
            std::net::TcpStream::connect(gateway.base.trim_start_matches("http://")).unwrap();
        write!(
            socket,
            "POST /kafka/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            5 * 1024 * 1024
        )
        .unwrap();
        let mut buffer = [0u8; 64];
        let read = socket.read(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    };
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // Nothing reached the topic.
    assert!(
        testkit::read(&topic, 1, Duration::from_secs(3))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn health_reports_liveness_and_readiness() {
    let gateway = Gateway::start(Some(&testkit::brokers()));
    let http = reqwest::Client::new();
    let live = http.get(gateway.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http.get(gateway.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["brokers"]["brokers"], 1);
    drop(gateway);

    // A gateway whose brokers are unreachable is live but not ready, and says why quickly.
    let dead = Gateway::start(Some("127.0.0.1:1"));
    let started = std::time::Instant::now();
    let ready = http.get(dead.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(10));
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["brokers"]["status"], "down");
}

#[tokio::test]
async fn serve_without_configuration_runs_on_the_embedded_broker() {
    // No KAFKA_BROKERS: the gateway starts the embedded broker and says where it is.
    let gateway = Gateway::start(None);
    assert_eq!(gateway.ready["embedded"], true);
    let address = gateway.ready["brokers"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let response = http
        .post(gateway.url("/kafka/send"))
        .json(&json!({"topic": "hello", "key": "k", "value": {"greeting": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // `kafkit consume` against that address shows the record.
    let output = Command::new(env!("CARGO_BIN_EXE_kafkit"))
        .args([
            "consume",
            "--topic",
            "hello",
            "--from-beginning",
            "--count",
            "1",
        ])
        .args(["--idle-timeout-ms", "20000"])
        .env("KAFKA_BROKERS", &address)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["value"], json!({"greeting": "hi"}));
    assert_eq!(record["key"], "k");
    assert!(gateway.terminate().success());
}
