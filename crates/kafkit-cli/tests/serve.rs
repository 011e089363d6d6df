//! `kafkit serve`, the real binary, over real HTTP, against the test broker and the embedded one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::{kafkit, run};
use serde_json::{Value, json};

/// A running gateway; killed on drop if the test did not stop it.
struct Gateway {
    child: Child,
    base: String,
    /// The JSON log line announcing readiness.
    ready: Value,
    /// Log lines, collected as the gateway writes them.
    log: Arc<Mutex<Vec<String>>>,
}

/// reqwest is built with rustls and no bundled crypto provider: install ring, once.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client.
fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

/// `kafkit serve` with no `KAFKA_*` / `KAFKIT_*` variable but the brokers, logging JSON.
fn serve_command(brokers: Option<&str>) -> Command {
    let mut command = kafkit();
    if let Some(brokers) = brokers {
        command.env("KAFKA_BROKERS", brokers);
    }
    command.arg("serve");
    command
}

impl Gateway {
    fn start(brokers: Option<&str>) -> Gateway {
        Gateway::start_with(brokers, &[], &[])
    }

    /// `kafkit serve` with extra arguments and environment, on a free loopback port (plain
    /// HTTP, or HTTPS when `--tls-cert` is among `args`).
    fn start_with(brokers: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let mut command = serve_command(brokers);
        let mut child = command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the readiness line, and keep collecting the log afterwards.
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = loop {
            let line = lines
                .next()
                .expect("gateway exited before it was ready")
                .unwrap();
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            log.lock().unwrap().push(line);
            if entry["message"] == "kafkit gateway ready" {
                break entry;
            }
        };
        std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in lines.map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            }
        });
        // HTTPS goes to the name the test certificate is for.
        let base = if args.contains(&"--tls-cert") {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        Gateway {
            child,
            base,
            ready,
            log,
        }
    }

    /// Every log line so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
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
    let http = client();

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
    let http = client();
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
    let http = client();
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
    let http = client();
    let response = http
        .post(gateway.url("/kafka/send"))
        .json(&json!({"topic": "hello", "key": "k", "value": {"greeting": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // `kafkit consume` against that address shows the record.
    let output = run(
        kafkit()
            .args([
                "consume",
                "--topic",
                "hello",
                "--from-beginning",
                "--count",
                "1",
            ])
            .args(["--idle-timeout-ms", "20000"])
            .env("KAFKA_BROKERS", &address),
        "",
    );
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["value"], json!({"greeting": "hi"}));
    assert_eq!(record["key"], "k");

    // Consumer groups need an API the embedded broker lacks: 501 at once, saying so.
    for path in ["/groups", "/groups/some-group"] {
        let started = std::time::Instant::now();
        let response = http.get(gateway.url(path)).send().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "{path}");
        assert_eq!(response.status(), 501, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unsupported_by_broker", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("embedded development broker"),
            "{body}"
        );
    }
    assert!(gateway.terminate().success());
}

#[tokio::test]
async fn api_keys_are_enforced_and_never_logged() {
    let allowed = testkit::topic("gw-auth", 1).await;
    let other = testkit::topic("gw-auth-no", 1).await;
    let secret = "k-3f9a-very-secret";
    let keys = format!("{secret}:write={allowed},read=*");
    // Debug logs on, so that a leak would show.
    let gateway = Gateway::start_with(
        Some(&testkit::brokers()),
        &[],
        &[("KAFKIT_API_KEYS", &keys), ("RUST_LOG", "debug")],
    );
    assert_eq!(gateway.ready["authenticated"], true);
    let http = client();
    let send = |topic: &str, key: Option<&str>| {
        let request = http
            .post(gateway.url("/kafka/send"))
            .json(&json!({"topic": topic, "value": 1}));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    };
    // No key, a wrong key: 401. A topic outside the key's list: 403.
    assert_eq!(send(&allowed, None).send().await.unwrap().status(), 401);
    assert_eq!(
        send(&allowed, Some("guess")).send().await.unwrap().status(),
        401
    );
    let forbidden = send(&other, Some(secret)).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let body: Value = forbidden.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    // The right key and topic: 200, whatever the case of the scheme. Health stays open.
    assert_eq!(
        send(&allowed, Some(secret)).send().await.unwrap().status(),
        200
    );
    let lowercase = http
        .post(gateway.url("/kafka/send"))
        .header("authorization", format!("bearer {secret}"))
        .json(&json!({"topic": allowed, "value": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200);
    let live = http.get(gateway.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    // Exactly the two authorized records were written.
    assert_eq!(
        testkit::read(&allowed, 3, Duration::from_secs(3))
            .await
            .len(),
        2
    );
    assert!(
        testkit::read(&other, 1, Duration::from_secs(2))
            .await
            .is_empty()
    );
    let log = gateway.log();
    assert!(gateway.terminate().success());
    assert!(log.contains("key#1"), "the key's name is logged: {log}");
    assert!(!log.contains(secret), "the key leaked into the log");
}

#[test]
fn a_public_address_needs_keys_or_an_explicit_opt_out() {
    let brokers = testkit::brokers();
    // Without keys on 0.0.0.0 the gateway refuses to start, and says why.
    let output = serve_command(Some(&brokers))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve"), "{stderr}");
    assert!(stderr.contains("KAFKIT_API_KEYS"), "{stderr}");
    // A malformed key list is refused too, without echoing the key.
    let output = serve_command(Some(&brokers))
        .env("KAFKIT_API_KEYS", "topsecret:delete=*")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KAFKIT_API_KEYS: key#1: unknown grant"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"), "{stderr}");
    // With the explicit opt-out it starts.
    let mut child = serve_command(Some(&brokers))
        .args(["--listen", "0.0.0.0:0"])
        .env("KAFKIT_ALLOW_UNAUTHENTICATED", "true")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("kafkit gateway ready"));
    let _ = child.kill();
    let _ = child.wait();
    let ready: Value = serde_json::from_str(&ready.expect("started")).unwrap();
    assert_eq!(ready["authenticated"], false);
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    // A self-signed certificate for localhost, written where the gateway can read it.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(testkit::unique("kafkit-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let gateway = Gateway::start_with(
        Some(&testkit::brokers()),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(gateway.ready["tls"], true);
    // A client trusting that certificate talks HTTPS.
    install_crypto_provider();
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let topic = testkit::topic("gw-tls", 1).await;
    let response = https
        .post(gateway.url("/kafka/send"))
        .json(&json!({"topic": topic, "value": {"over": "tls"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let read = testkit::read(&topic, 1, Duration::from_secs(10)).await;
    assert_eq!(read[0].json::<Value>().unwrap(), json!({"over": "tls"}));
    // Plain HTTP on the same port fails the TLS handshake: no HTTP answer at all.
    let plain = client()
        .get(gateway.url("/health/live").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    assert!(gateway.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_acknowledged_record() {
    let topic = testkit::topic("gw-load", 3).await;
    let gateway = Gateway::start(Some(&testkit::brokers()));
    let http = client();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Eight clients send unique keys until the gateway stops answering (or a bound is hit).
    let mut clients = Vec::new();
    for client in 0..8 {
        let (http, url, topic, stop) = (
            http.clone(),
            gateway.url("/kafka/send"),
            topic.clone(),
            Arc::clone(&stop),
        );
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..20_000 {
                let key = format!("c{client}-{i}");
                let response = http
                    .post(&url)
                    .json(&json!({"topic": topic, "key": key, "value": i}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap();
                        let partition = body["partition"].as_i64().unwrap() as i32;
                        acknowledged.push((key, partition, body["offset"].as_i64().unwrap()));
                    }
                    // Refused or cut off by the shutdown: stop this client.
                    _ if stop.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Ok(r) => panic!("{key}: {} before shutdown", r.status()),
                    Err(e) => panic!("{key}: {e} before shutdown"),
                }
            }
            acknowledged
        }));
    }
    // SIGTERM mid-load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let status = tokio::task::spawn_blocking(move || gateway.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert!(!acknowledged.is_empty());
    // Every acknowledged record is in Kafka at the partition and offset it was answered with,
    // and nothing else is: the topic holds exactly as many records as were acknowledged.
    let stored = testkit::kafka()
        .admin()
        .unwrap()
        .describe_topic(&topic)
        .await
        .unwrap()
        .record_count();
    assert_eq!(stored, acknowledged.len() as i64);
    let read = testkit::read(&topic, acknowledged.len(), Duration::from_secs(30)).await;
    let found: std::collections::HashSet<(String, i32, i64)> = read
        .iter()
        .map(|m| {
            let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
            (key, m.partition, m.offset)
        })
        .collect();
    for record in &acknowledged {
        assert!(
            found.contains(record),
            "{record:?} acknowledged but not in Kafka"
        );
    }
}

/// DNS rebinding: a web page whose name is made to resolve to 127.0.0.1 reaches the loopback
/// gateway with its own name in `Host`, and the browser lets it read the answers. The gateway
/// answers only the names it is known by (loopback names and the bound address by default,
/// `--allowed-hosts` otherwise), and refuses state-changing requests from another site's page
/// (`Origin`).
#[tokio::test]
async fn unexpected_hosts_and_foreign_origins_are_refused() {
    let topic = testkit::topic("gw-rebind", 1).await;
    let gateway = Gateway::start(Some(&testkit::brokers()));
    let port = gateway.base.rsplit(':').next().unwrap().to_owned();
    let http = client();
    let get = |host: &str| http.get(gateway.url("/topics")).header("host", host).send();
    // A rebound name is refused, on reads as on the console.
    let rebound = get(&format!("rebind.example:{port}")).await.unwrap();
    assert_eq!(rebound.status(), 403);
    let body: Value = rebound.json().await.unwrap();
    assert_eq!(body["error"]["code"], "host_not_allowed");
    let console = http
        .get(gateway.url("/console"))
        .header("host", "rebind.example")
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 403);
    // The loopback names answer, with or without the port.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get(&host).await.unwrap().status(), 200, "{host}");
    }
    // A send from another site's page is refused and produces nothing; one from the
    // gateway's own origin, or without Origin (curl, services), is served.
    let send = |origin: Option<&str>, value: i64| {
        let request = http
            .post(gateway.url("/kafka/send"))
            .json(&json!({"topic": topic, "value": value}));
        match origin {
            Some(origin) => request.header("origin", origin),
            None => request,
        }
        .send()
    };
    let foreign = send(Some("http://rebind.example"), 1).await.unwrap();
    assert_eq!(foreign.status(), 403);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    assert_eq!(send(Some("null"), 2).await.unwrap().status(), 403);
    let own = format!("http://127.0.0.1:{port}");
    assert_eq!(send(Some(&own), 3).await.unwrap().status(), 200);
    assert_eq!(send(None, 4).await.unwrap().status(), 200);
    let written: Vec<String> = testkit::read(&topic, 3, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(written, ["3", "4"]);
    drop(gateway);

    // --allowed-hosts names the hosts instead.
    let gateway = Gateway::start_with(
        Some(&testkit::brokers()),
        &["--allowed-hosts", "gw.example,*.internal.example"],
        &[],
    );
    let status = |host: &'static str| {
        let request = http.get(gateway.url("/health/live")).header("host", host);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status("gw.example").await, 200);
    assert_eq!(status("a.internal.example:8080").await, 200);
    assert_eq!(status("127.0.0.1").await, 403);
    assert_eq!(status("internal.example").await, 403);
    assert_eq!(
        gateway.ready["allowed_hosts"],
        "gw.example,*.internal.example"
    );
}

/// A guessable API key is refused at start, saying the rule and naming the key by position,
/// never echoing it.
#[test]
fn weak_api_keys_are_refused_at_start() {
    let brokers = testkit::brokers();
    for weak in ["x", "aaaaaaaaaaaaaaaaaaaaaaaa", "short-key-12"] {
        let keys = format!("Zx81-strong-key-0123:read=*;{weak}:read=*");
        let mut child = serve_command(Some(&brokers))
            .args(["--listen", "127.0.0.1:0"])
            .env("KAFKIT_API_KEYS", &keys)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A refused start exits at once; one still running after 20 s accepted the key.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{weak:?} was accepted: the gateway started");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success(), "{weak} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("KAFKIT_API_KEYS: key#2 is too weak: an API key has at least 16 characters, at least 8 of them different"),
            "{stderr}"
        );
        assert!(!stderr.contains(&keys), "{stderr}");
    }
}

/// A record crafted to blow up when pretty-printed: 900 kB of JSON (under the producer's
/// 1 MB limit), 127 arrays deep around 450,000 numbers; indented it would be about 115 MB.
fn nested_json_bomb() -> Vec<u8> {
    let depth = 127;
    let numbers = (900_000 - 2 * depth) / 2;
    let mut value = "[".repeat(depth);
    value.push_str(&"0,".repeat(numbers - 1));
    value.push('0');
    value.push_str(&"]".repeat(depth));
    value.into_bytes()
}

/// The console bounds what it renders, not only what it reads: a value that would
/// pretty-print to a hundred times its size is shown as stored, saying why, on the browse
/// page, in the JSON export and on the dead-letter page.
#[tokio::test]
async fn a_crafted_json_record_cannot_make_the_console_render_gigabytes() {
    // Three such records in a topic, and one in its dead-letter topic.
    let topic = testkit::topic("gw-bomb", 1).await;
    let dlt = testkit::empty_dead_letter_topic(&topic, 1).await;
    let bomb = nested_json_bomb();
    assert!(serde_json::from_slice::<Value>(&bomb).is_ok(), "valid JSON");
    let mut records: Vec<_> = (0..3)
        .map(|_| kafkit::Record::to(&topic).bytes(bomb.clone()))
        .collect();
    records.push(
        kafkit::Record::to(&dlt)
            .header(kafkit::dead_letter::ORIGINAL_TOPIC, topic.as_str())
            .bytes(bomb.clone()),
    );
    testkit::send(records).await;
    let gateway = Gateway::start(Some(&testkit::brokers()));
    let http = client();
    let fetch = |path: String| {
        let request = http.get(gateway.url(&path));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    // The browse page ("auto" and "json" views) and the JSON export hold about the records'
    // own bytes (2.7 MB), not the 345 MB of their indentation; the page says why it shows them
    // as stored.
    let limit = 8 << 20;
    for format in ["auto", "json"] {
        let page = fetch(format!(
            "/console/topics/{topic}?from=oldest&format={format}"
        ))
        .await;
        assert!(
            page.len() < limit,
            "{format}: a page of {} bytes",
            page.len()
        );
        assert_eq!(
            page.matches("shown as stored: indented it would be over")
                .count(),
            3,
            "{format}"
        );
    }
    let export = fetch(format!("/console/topics/{topic}?from=oldest&export=json")).await;
    assert!(export.len() < limit, "an export of {} bytes", export.len());
    // One record a line, all three (129 levels deep, past what serde_json parses).
    assert_eq!(
        export
            .lines()
            .filter(|l| l.starts_with("{\"topic\""))
            .count(),
        3
    );
    // The dead-letter page too.
    let page = fetch(format!("/console/dead-letters/{dlt}")).await;
    assert!(
        page.len() < limit,
        "a dead-letter page of {} bytes",
        page.len()
    );
    assert!(page.contains("shown as stored: indented it would be over"));
}

/// Keys can come from a file (a flag's value shows in `ps`), and keys on plain HTTP on a
/// non-loopback address are warned about at start.
#[tokio::test]
async fn api_keys_come_from_a_file_and_plain_http_on_a_public_address_is_warned() {
    let topic = testkit::topic("gw-keyfile", 1).await;
    let secret = "file-key-0123456789abcdef";
    let file = std::env::temp_dir().join(testkit::unique("kafkit-keys"));
    std::fs::write(
        &file,
        format!("# the producer\n{secret}:write={topic}\n\nviewer-key-0123456789:read=*\n"),
    )
    .unwrap();
    let port = testkit::free_port();
    let mut child = serve_command(Some(&testkit::brokers()))
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .arg("--api-keys-file")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let ready = line.contains("kafkit gateway ready");
        log.push(line);
        if ready {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let log = log.join("\n");
    // Killed on drop, even when an assertion fails.
    let _gateway = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        ready: Value::Null,
        log: Arc::default(),
    };
    assert!(log.contains("kafkit gateway ready"), "{log}");
    assert!(
        log.contains("API keys travel in clear over plain HTTP"),
        "{log}"
    );
    assert!(!log.contains(secret), "{log}");
    // The file's keys are the gateway's: the first may write the topic, a request without
    // a key is refused.
    let http = client();
    let send = |key: Option<&str>| {
        let request = http
            .post(format!("http://127.0.0.1:{port}/kafka/send"))
            .json(&json!({"topic": topic, "value": 1}));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    };
    assert_eq!(send(Some(secret)).send().await.unwrap().status(), 200);
    assert_eq!(send(None).send().await.unwrap().status(), 401);
    let _ = std::fs::remove_file(&file);
}
