//! Push delivery end to end: the real `kafkit serve --subscriptions FILE`, the test broker, and
//! a real Node.js endpoint (`interop/push-endpoint.js`, plain `node:http`, signatures checked
//! by the `standardwebhooks` npm package). The endpoint only behaves and logs each request;
//! the assertions here are the oracle.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::endpoint::Endpoint;
use common::kafkit;
use kafkit::{Message, Record};
use serde_json::{Value, json};

/// `kafkit serve --subscriptions FILE` against the test broker; killed on drop.
struct Serve {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(subscriptions: &str) -> Serve {
        Serve::start_with(subscriptions, &[])
    }

    fn start_with(subscriptions: &str, env: &[(&str, &str)]) -> Serve {
        let file = std::env::temp_dir().join(format!("{}.toml", testkit::unique("subs")));
        std::fs::write(&file, subscriptions).unwrap();
        let port = testkit::free_port();
        let mut child = kafkit()
            .env("KAFKA_BROKERS", testkit::brokers())
            .envs(env.iter().copied())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--subscriptions")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("kafkit exited before ready: {:?}", log.lock().unwrap()))
                .unwrap();
            let ready = line.contains("kafkit gateway ready");
            log.lock().unwrap().push(line);
            if ready {
                break;
            }
        }
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in lines.map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            }
        });
        Serve { child, port, log }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = client()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn header<'a>(message: &'a Message, name: &str) -> &'a str {
    std::str::from_utf8(message.header_value(name).unwrap_or_default()).unwrap()
}

/// Records `{"id": i}` with key `keys(i)` and a `tenant-id` header.
async fn produce(topic: &str, count: usize, keys: impl Fn(usize) -> String) {
    testkit::send(
        (0..count)
            .map(|i| {
                Record::to(topic)
                    .key(keys(i))
                    .header("tenant-id", "acme")
                    .json(&json!({ "id": i }))
                    .unwrap()
            })
            .collect(),
    )
    .await;
}

/// Asserts the endpoint saw each key's records in offset order, never two at once, and
/// returns the largest number of requests it had in flight at one time.
fn assert_key_order(requests: &[Value]) -> usize {
    let mut by_key: HashMap<String, Vec<(u64, i64)>> = HashMap::new();
    for r in requests {
        assert_eq!(
            r["overlap"], false,
            "two requests of key {} at once",
            r["key"]
        );
        by_key
            .entry(r["key"].as_str().unwrap().to_owned())
            .or_default()
            .push((r["at"].as_u64().unwrap(), r["offset"].as_i64().unwrap()));
    }
    for (key, mut seen) in by_key {
        seen.sort();
        let offsets: Vec<i64> = seen.iter().map(|(_, o)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "key {key} out of order: {offsets:?}"
        );
    }
    // Most requests in flight at once, from the [at, done] intervals.
    let mut edges: Vec<(u64, i64)> = requests
        .iter()
        .flat_map(|r| {
            [
                (r["at"].as_u64().unwrap(), 1),
                (r["done"].as_u64().unwrap(), -1),
            ]
        })
        .collect();
    edges.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// Asserts that every record of `topic` below a committed offset was delivered with a 2xx or
/// is in the DLT (`dead`, by its original partition and offset); returns how many were checked.
fn assert_delivered_or_dead(
    topic: &str,
    delivered: &BTreeSet<String>,
    committed: &[(i32, Option<i64>, i64)],
    dead: &[Message],
    when: &str,
) -> usize {
    let dead: BTreeSet<String> = dead
        .iter()
        .map(|m| {
            format!(
                "{topic}/{}/{}",
                header(m, "original-partition"),
                header(m, "original-offset")
            )
        })
        .collect();
    let mut below = 0;
    for (partition, offset, _) in committed {
        for o in 0..offset.unwrap_or(0) {
            let id = format!("{topic}/{partition}/{o}");
            assert!(
                delivered.contains(&id) || dead.contains(&id),
                "{when}{id} is below the committed offset {} but was neither delivered nor dead-lettered",
                offset.unwrap_or(0)
            );
            below += 1;
        }
    }
    below
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_signed_with_metadata_in_key_order_and_4xx_is_dead_lettered() {
    // Given 400 records over 20 keys in 2 partitions, and one record of key `bad` that the
    // endpoint refuses with a 422.
    let topic = testkit::topic("push", 2).await;
    produce(&topic, 400, |i| format!("key-{}", i % 20)).await;
    testkit::send(vec![
        Record::to(&topic)
            .key("bad")
            .json(&json!({"id": -1}))
            .unwrap(),
    ])
    .await;
    // An endpoint that checks the bearer token and the Standard Webhooks signature with the
    // second of the two secrets kafkit signs with (a rotation in progress), and is slowish.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let endpoint = Endpoint::start(json!({
        "delay_ms": [2, 10],
        "secret": secret,
        "bearer": "t0k3n",
        "status_by_key": {"bad": 422},
    }));
    let serve = Serve::start_with(
        &format!(
            r#"
            [[subscription]]
            name = "billing"
            topics = ["{topic}"]
            endpoint = "{url}"
            max_in_flight = 8
            auth = {{ bearer = "${{PUSH_TOKEN}}", webhook_secrets = ["whsec_b2xkLXNlY3JldA==", "{secret}"] }}
            "#,
            url = endpoint.url("/hooks/orders"),
        ),
        &[("PUSH_TOKEN", "t0k3n")],
    );

    // Every good record is delivered with a 2xx.
    let all_delivered = testkit::eventually(Duration::from_secs(60), || {
        endpoint.delivered().len() == 400
    })
    .await;
    assert!(
        all_delivered,
        "{} of 400 delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );

    // The 422 went to the dead-letter topic at once, with the status and the body excerpt.
    let dead = testkit::read(&format!("{topic}.dlq"), 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some(&b"bad"[..]));
    assert_eq!(header(&dead[0], "error-kind"), "permanent");
    assert_eq!(
        header(&dead[0], "error-message"),
        r#"HTTP 422 Unprocessable Entity: {"error":"rejected bad"}"#
    );
    assert_eq!(header(&dead[0], "attempts"), "1");
    let requests = endpoint.requests();
    let bad: Vec<&Value> = requests.iter().filter(|r| r["key"] == "bad").collect();
    assert_eq!(bad.len(), 1, "a 4xx is not retried");

    // Each request: POST, the value as body, JSON content type, the record's metadata and
    // headers, the delivery id, the attempt; signed and authenticated.
    for r in &requests {
        assert_eq!(r["method"], "POST");
        assert_eq!(r["verified"], true, "standardwebhooks refused {}", r["id"]);
        let h = &r["headers"];
        let id = format!("{topic}/{}/{}", r["partition"], r["offset"]);
        assert_eq!(h["kafkit-delivery-id"], id.as_str());
        assert_eq!(h["webhook-id"], id.as_str());
        assert_eq!(h["kafkit-attempt"], "1");
        assert_eq!(h["kafka-topic"], topic.as_str());
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["authorization"], "Bearer t0k3n");
        assert!(
            h["kafka-timestamp"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 0
        );
        if r["key"] != "bad" {
            assert_eq!(h["kafka-header-tenant-id"], "acme");
            let value: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            let id = value["id"].as_u64().unwrap();
            assert_eq!(r["key"], format!("key-{}", id % 20).as_str());
        }
    }

    // Each key's records in offset order, one at a time; keys of a partition concurrently.
    let most = assert_key_order(&requests);
    assert!(
        most > 2,
        "at most {most} requests in flight: key order is not concurrent"
    );

    // The API and the metrics show the subscription.
    let (status, body) = serve.get("/subscriptions").await;
    assert_eq!(status, 200);
    let subscriptions: Value = serde_json::from_str(&body).unwrap();
    let billing = &subscriptions[0];
    assert_eq!(billing["name"], "billing");
    assert_eq!(billing["order"], "key");
    assert_eq!(billing["group"], "kafkit-push-billing");
    assert_eq!(billing["endpoint"], endpoint.url("/hooks/orders").as_str());
    assert_eq!(billing["signed"], true);
    assert_eq!(billing["deliveries"]["delivered"], 400);
    assert_eq!(billing["deliveries"]["failed"], 1);
    assert!(
        !body.contains("t0k3n") && !body.contains("MfKQ"),
        "secrets leak: {body}"
    );
    let (_, metrics) = serve.get("/metrics").await;
    assert!(
        metrics.contains(r#"kafkit_push_delivered_total{subscription="billing"} 400"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kafkit_push_failed_total{class="4xx",subscription="billing"} 1"#));
    assert!(
        metrics
            .contains(r#"kafkit_push_request_duration_seconds_count{subscription="billing"} 401"#)
    );

    // SIGTERM: drains, commits everything and exits cleanly.
    assert!(serve.terminate().success());
    let committed = testkit::committed("kafkit-push-billing", &topic).await;
    for (partition, offset, high) in committed {
        assert_eq!(
            offset,
            Some(high),
            "partition {partition} not fully committed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_holds_back_only_that_key_and_5xx_backs_off() {
    // Given one partition: records of key `slow` (answered 429 with Retry-After: 2 once each),
    // of key `flaky` (answered 500 three times each), and of other keys, interleaved.
    let topic = testkit::topic("push-ra", 1).await;
    let key = |i: usize| match i % 10 {
        0 => "slow".to_owned(),
        5 => "flaky".to_owned(),
        n => format!("key-{n}"),
    };
    produce(&topic, 30, key).await;
    let endpoint = Endpoint::start(json!({
        "retry_after": {"slow": 2},
        "fail_first": {"flaky": 3},
    }));
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "ra"
        topics = ["{topic}"]
        endpoint = "{url}"
        retry = {{ max_attempts = 5, initial_delay = "200ms", jitter = 0.2 }}
        "#,
        url = endpoint.url("/"),
    ));
    let all =
        testkit::eventually(Duration::from_secs(60), || endpoint.delivered().len() == 30).await;
    assert!(
        all,
        "{} of 30 delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );
    let requests = endpoint.requests();
    let attempts = |id: &str| -> Vec<&Value> {
        let mut a: Vec<&Value> = requests.iter().filter(|r| r["id"] == id).collect();
        a.sort_by_key(|r| r["attempt"].as_u64());
        a
    };
    let id = |offset: usize| format!("{topic}/0/{offset}");

    for offset in (0..30).filter(|o| o % 10 == 0) {
        // No second request of a `slow` record before its Retry-After passed.
        let tries = attempts(&id(offset));
        assert_eq!(tries.len(), 2, "{tries:?}");
        assert_eq!(tries[0]["status"], 429);
        assert_eq!(tries[1]["attempt"], 2);
        let waited = tries[1]["at"].as_u64().unwrap() - tries[0]["done"].as_u64().unwrap();
        // Date.now() is whole milliseconds: one may be lost in rounding.
        assert!(
            waited >= 1999,
            "retried after {waited} ms despite Retry-After: 2"
        );
        // Only that key waited: the next records of other keys were delivered meanwhile.
        let next = attempts(&id(offset + 1));
        assert!(
            next[0]["done"].as_u64() < tries[1]["at"].as_u64(),
            "key-1 waited for the slow key"
        );
    }
    for offset in (0..30).filter(|o| o % 10 == 5) {
        // 500 three times, then delivered; the waits grow (200 ms doubling, ±20%).
        let tries = attempts(&id(offset));
        let statuses: Vec<u64> = tries
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, [500, 500, 500, 200]);
        let gaps: Vec<u64> = tries
            .windows(2)
            .map(|w| w[1]["at"].as_u64().unwrap() - w[0]["done"].as_u64().unwrap())
            .collect();
        assert!((159..400).contains(&gaps[0]), "{gaps:?}");
        assert!((319..700).contains(&gaps[1]), "{gaps:?}");
        assert!((639..1300).contains(&gaps[2]), "{gaps:?}");
    }
    assert_key_order(&requests);
    let (_, metrics) = serve.get("/metrics").await;
    assert!(
        metrics.contains(r#"kafkit_push_failed_total{class="429",subscription="ra"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kafkit_push_failed_total{class="5xx",subscription="ra"} 9"#));
    assert!(metrics.contains(r#"kafkit_push_retries_total{subscription="ra"} 12"#));
    assert!(serve.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing() {
    // Given 6,000 records over 300 keys in 4 partitions, a slow endpoint that fails 20% of
    // requests with a 500 and refuses every 50th record with a 422.
    let topic = testkit::topic("push-kill", 4).await;
    let total = 6_000;
    produce(&topic, total, |i| format!("key-{}", i % 300)).await;
    let endpoint = Endpoint::start(json!({
        "delay_ms": [20, 80],
        "fail_rate": 0.2,
        "reject_every": 50,
    }));
    let subscriptions = format!(
        r#"
        [[subscription]]
        name = "kill"
        topics = ["{topic}"]
        endpoint = "{url}"
        max_in_flight = 4
        retry = {{ max_attempts = 4, initial_delay = "50ms" }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        url = endpoint.url("/"),
    );
    let group = "kafkit-push-kill";
    let dlt = format!("{topic}.dlq");

    let check = |committed: Vec<(i32, Option<i64>, i64)>, dead: &[Message]| {
        assert_delivered_or_dead(&topic, &endpoint.delivered(), &committed, dead, "")
    };

    // Kill kafkit three times while it delivers, checking the promise after each kill.
    let mut progress = Vec::new();
    // A killed member holds its partitions until its session times out, or, killed while
    // joining, until the rebalance timeout (max.poll.interval.ms): keep both short.
    let session = [
        ("KAFKA_SESSION_TIMEOUT", "12000"),
        ("KAFKA_HEARTBEAT_INTERVAL", "2000"),
        ("KAFKA_LIBRDKAFKA_MAX_POLL_INTERVAL_MS", "15000"),
    ];
    for round in 0..3 {
        let serve = Serve::start_with(&subscriptions, &session);
        let before = endpoint.requests().len();
        let busy = testkit::eventually(Duration::from_secs(60), || {
            endpoint.requests().len() > before + 300
        })
        .await;
        // Kill at a different moment each round, with requests and retries in flight.
        tokio::time::sleep(Duration::from_millis(1_500 + 700 * round)).await;
        assert!(busy, "round {round}: no deliveries; log: {}", serve.log());
        serve.kill();
        let committed = testkit::committed(group, &topic).await;
        let dead = testkit::read(&dlt, total, Duration::from_secs(3)).await;
        progress.push(check(committed, &dead));
    }
    eprintln!("records checked below the committed offsets after each kill: {progress:?}");
    assert!(
        progress[2] > 0,
        "nothing was committed across the kills: {progress:?}"
    );

    // Then a run to the end: everything delivered or dead-lettered, all committed.
    let serve = Serve::start_with(&subscriptions, &session);
    let mut all_committed = false;
    for _ in 0..240 {
        let committed = testkit::committed(group, &topic).await;
        if committed.iter().all(|(_, o, high)| *o == Some(*high)) {
            all_committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(all_committed, "not all committed; log: {}", serve.log());
    assert!(serve.terminate().success());
    let committed = testkit::committed(group, &topic).await;
    let dead = testkit::read(&dlt, total, Duration::from_secs(3)).await;
    assert_eq!(check(committed, &dead), total);
    // Every 50th record was refused: each is in the DLT with its 422.
    let refused: BTreeMap<String, String> = dead
        .iter()
        .filter(|m| header(m, "error-kind") == "permanent")
        .map(|m| {
            (
                header(m, "original-offset").to_owned(),
                header(m, "error-message").to_owned(),
            )
        })
        .collect();
    assert!(
        refused.values().all(|e| e.starts_with("HTTP 422")),
        "{refused:?}"
    );
    assert!(refused.len() >= total / 50 - 5, "{} refused", refused.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_retry_loses_nothing() {
    // Given 1,600 records over 100 keys in 4 partitions, and an endpoint that answers every
    // 5th record (all the records of 20 keys) with a 500 for 3 s after its first request:
    // with retries in place for up to ~10 s, records are mid-retry whenever partitions move.
    let topic = testkit::topic("push-rebalance", 4).await;
    let total = 1_600;
    produce(&topic, total, |i| format!("key-{}", i % 100)).await;
    let endpoint = Endpoint::start(json!({
        "delay_ms": [5, 30],
        "fail_for": {"every": 5, "ms": 3000},
    }));
    let group = testkit::unique("kafkit-push-rebalance");
    let subscriptions = format!(
        r#"
        [[subscription]]
        name = "rebalance"
        topics = ["{topic}"]
        group = "{group}"
        endpoint = "{url}"
        max_in_flight = 16
        retry = {{ max_attempts = 12, initial_delay = "200ms", max_delay = "1s", jitter = 0.1 }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        url = endpoint.url("/"),
    );
    let dlt = format!("{topic}.dlq");
    // Short sessions, so that the SIGKILLed member's partitions move soon (see
    // sigkill_under_load_loses_nothing).
    let session = [
        ("KAFKA_SESSION_TIMEOUT", "12000"),
        ("KAFKA_HEARTBEAT_INTERVAL", "2000"),
        ("KAFKA_LIBRDKAFKA_MAX_POLL_INTERVAL_MS", "15000"),
    ];
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // After each membership change: every record below a committed offset was delivered with
    // a 2xx or is in the DLT.
    let mut changes: Vec<(&str, u64)> = Vec::new();
    let mut progress = Vec::new();
    macro_rules! check_after {
        ($what:expr) => {{
            let committed = testkit::committed(&group, &topic).await;
            let dead = testkit::read(&dlt, total, Duration::from_secs(3)).await;
            let when = format!("after {}: ", $what);
            progress.push(assert_delivered_or_dead(
                &topic,
                &endpoint.delivered(),
                &committed,
                &dead,
                &when,
            ));
        }};
    }

    // A starts, and is delivering and retrying.
    let a = Serve::start_with(&subscriptions, &session);
    let retrying = testkit::eventually(Duration::from_secs(60), || {
        let requests = endpoint.requests();
        requests.len() > 200 && requests.iter().any(|r| r["status"] == 500)
    })
    .await;
    assert!(retrying, "A delivers nothing; log: {}", a.log());
    // B joins.
    let b = Serve::start_with(&subscriptions, &session);
    changes.push(("B joined", now_ms()));
    tokio::time::sleep(Duration::from_secs(6)).await;
    check_after!("B joined");
    // B leaves on SIGTERM: it drains and commits.
    changes.push(("B got SIGTERM", now_ms()));
    let log = b.log();
    assert!(b.terminate().success(), "B: {log}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    check_after!("B got SIGTERM");
    // C joins.
    let c = Serve::start_with(&subscriptions, &session);
    changes.push(("C joined", now_ms()));
    tokio::time::sleep(Duration::from_secs(6)).await;
    check_after!("C joined");
    // A is SIGKILLed: its partitions move to C when its session times out.
    changes.push(("A got SIGKILL", now_ms()));
    a.kill();
    tokio::time::sleep(Duration::from_secs(15)).await;
    check_after!("A got SIGKILL");
    eprintln!("records checked below the committed offsets after each change: {progress:?}");

    // C runs to the end: everything delivered or dead-lettered, all committed.
    let mut all_committed = false;
    for _ in 0..240 {
        let committed = testkit::committed(&group, &topic).await;
        if committed.iter().all(|(_, o, high)| *o == Some(*high)) {
            all_committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(all_committed, "not all committed; log: {}", c.log());
    assert!(c.terminate().success());
    check_after!("the end");
    assert_eq!(progress.last(), Some(&total));

    // The retries did span the changes: for each change, records failed before it and were
    // delivered after it; and records abandoned mid-retry were started again (attempt 1 after
    // a failed attempt) by their partition's next owner.
    let requests = endpoint.requests();
    let mut by_id: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in &requests {
        by_id.entry(r["id"].as_str().unwrap()).or_default().push(r);
    }
    for (what, at) in &changes {
        let spanning = by_id
            .values()
            .filter(|tries| {
                let failed_before = tries
                    .iter()
                    .any(|r| r["status"] == 500 && r["done"].as_u64().unwrap() < *at);
                let delivered_after = tries
                    .iter()
                    .any(|r| r["status"] == 200 && r["at"].as_u64().unwrap() > *at);
                failed_before && delivered_after
            })
            .count();
        assert!(spanning > 0, "no record was mid-retry when {what}");
    }
    let restarted = by_id
        .values()
        .filter(|tries| {
            let mut tries = tries.to_vec();
            tries.sort_by_key(|r| r["at"].as_u64());
            tries
                .windows(2)
                .any(|w| w[0]["status"] == 500 && w[1]["attempt"] == 1)
        })
        .count();
    eprintln!("records whose retry was cut by a rebalance and started again: {restarted}");
    assert!(restarted > 0, "no retry was cut by a rebalance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_topics_take_a_failing_record_off_its_partition_until_due_then_to_the_dlt() {
    // Given one partition: records of key `doomed` (always answered 500), of key `late`
    // (answered 500 four times each) and of other keys, interleaved; 3 attempts in place,
    // then retry topics of 1 s and 2 s.
    let topic = testkit::topic("push-tiers", 1).await;
    let key = |i: usize| match i % 10 {
        0 => "doomed".to_owned(),
        5 => "late".to_owned(),
        n => format!("key-{n}"),
    };
    produce(&topic, 20, key).await;
    let endpoint = Endpoint::start(json!({
        "status_by_key": {"doomed": 500},
        "fail_first": {"late": 4},
    }));
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "tiers"
        topics = ["{topic}"]
        endpoint = "{url}"
        retry = {{ max_attempts = 3, initial_delay = "50ms", jitter = 0.0, topics = ["1s", "2s"] }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        url = endpoint.url("/"),
    ));
    let (tier1, tier2) = (format!("{topic}.retry.1"), format!("{topic}.retry.2"));

    // The doomed records end in the DLT, naming their source record, after 5 attempts.
    let dlt = format!("{topic}.dlq");
    let dead = testkit::read(&dlt, 2, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 2, "log: {}", serve.log());
    let all =
        testkit::eventually(Duration::from_secs(30), || endpoint.delivered().len() == 18).await;
    let tries_of_5: Vec<Value> = endpoint
        .requests()
        .into_iter()
        .filter(|r| r["offset"] == 5)
        .map(|r| {
            json!([
                r["attempt"],
                r["status"],
                r["headers"]["kafkit-retry-topic"]
            ])
        })
        .collect();
    assert!(
        all,
        "{} of 18 delivered; offset 5 (key late) had [attempt, status, retry topic]: {tries_of_5:?}",
        endpoint.delivered().len()
    );
    let mut dead_offsets: Vec<&str> = dead
        .iter()
        .map(|m| {
            assert_eq!(m.key.as_deref(), Some(&b"doomed"[..]));
            assert_eq!(header(m, "original-topic"), topic.as_str());
            assert_eq!(header(m, "original-partition"), "0");
            assert_eq!(header(m, "attempts"), "5");
            assert_eq!(header(m, "error-kind"), "transient");
            header(m, "original-offset")
        })
        .collect();
    dead_offsets.sort();
    assert_eq!(dead_offsets, ["0", "10"]);

    let requests = endpoint.requests();
    let attempts = |offset: usize| -> Vec<&Value> {
        let id = format!("{topic}/0/{offset}");
        let mut a: Vec<&Value> = requests.iter().filter(|r| r["id"] == id.as_str()).collect();
        a.sort_by_key(|r| r["at"].as_u64());
        a
    };
    let tier_of = |r: &Value| {
        r["headers"]["kafkit-retry-topic"]
            .as_str()
            .map(str::to_owned)
    };
    for (offset, last) in [(0, 500), (10, 500), (5, 200), (15, 200)] {
        // In place three times, then once on each tier: attempts counted on, the source
        // record's coordinates and delivery id throughout, the tier named.
        let tries = attempts(offset);
        let numbers: Vec<u64> = tries
            .iter()
            .map(|r| r["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5], "offset {offset}: {tries:?}");
        let statuses: Vec<u64> = tries
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, [500, 500, 500, 500, last], "offset {offset}");
        let tiers: Vec<Option<String>> = tries.iter().map(|r| tier_of(r)).collect();
        assert_eq!(
            tiers,
            [None, None, None, Some(tier1.clone()), Some(tier2.clone())],
            "offset {offset}"
        );
        for r in &tries {
            assert_eq!(r["headers"]["kafka-topic"], topic.as_str());
            assert_eq!(r["offset"], offset);
            assert!(
                r["headers"]["kafka-header-retry-tier"].is_null()
                    && r["headers"]["kafka-header-original-offset"].is_null(),
                "failure headers leak to the endpoint: {r}"
            );
        }
        // Never before due: 1 s after the last attempt in place, 2 s after the first tier's.
        // (Date.now() is whole milliseconds: one may be lost in rounding.)
        let gap = |a: usize, b: usize| {
            tries[b]["at"].as_u64().unwrap() - tries[a]["done"].as_u64().unwrap()
        };
        assert!(
            gap(2, 3) >= 999,
            "offset {offset}: tier 1 after {} ms",
            gap(2, 3)
        );
        assert!(
            gap(3, 4) >= 1999,
            "offset {offset}: tier 2 after {} ms",
            gap(3, 4)
        );
    }
    // The partition was not held back: every other record was delivered before the first
    // retry topic's first request.
    let first_tier = requests
        .iter()
        .filter(|r| tier_of(r).is_some())
        .map(|r| r["at"].as_u64().unwrap())
        .min()
        .unwrap();
    for r in &requests {
        let key = r["key"].as_str().unwrap();
        if key.starts_with("key-") {
            assert!(
                r["done"].as_u64().unwrap() <= first_tier,
                "{} of key {key} waited for the retry topics",
                r["id"]
            );
        }
    }

    // GET /subscriptions shows the tiers.
    let (_, body) = serve.get("/subscriptions").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        view[0]["retry_topics"],
        json!([
            {"source": topic, "topic": tier1, "delay_ms": 1000},
            {"source": topic, "topic": tier2, "delay_ms": 2000},
        ])
    );
    assert!(serve.terminate().success());
    let committed = testkit::committed("kafkit-push-tiers", &topic).await;
    assert_eq!(committed, [(0, Some(20), 20)]);
}

#[test]
fn a_bad_subscriptions_file_fails_the_start_naming_the_field() {
    let file = std::env::temp_dir().join(format!("{}.toml", testkit::unique("bad-subs")));
    std::fs::write(
        &file,
        "[[subscription]]\nname = \"billing\"\ntopics = [\"orders\"]\nendpoint = \"http://127.0.0.1:1/\"\nmax_in_flight = 0\n",
    )
    .unwrap();
    let output = kafkit()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KAFKIT_SUBSCRIPTIONS", &file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("subscription \"billing\": max_in_flight: must be at least 1"),
        "{stderr}"
    );
}

/// Percent-decoding, the HTTP binding's way (for the values the npm SDK hands back raw).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_binary_mode_is_read_by_the_cloudevents_sdk() {
    // Given plain JSON records, a text record whose key needs percent-encoding, and a record
    // that already is a CloudEvent in the Kafka binding's binary mode (ce_* headers).
    let topic = testkit::topic("push-ce", 1).await;
    let at = 1_764_000_000_250; // 2025-11-24T16:00:00.250Z
    let mut records: Vec<Record> = (0..5)
        .map(|i| {
            Record::to(&topic)
                .key(format!("order-{i}"))
                .timestamp(at)
                .header("tenant-id", "acme")
                .json(&json!({ "id": i }))
                .unwrap()
        })
        .collect();
    records.push(
        Record::to(&topic)
            .key("Zoë 100%")
            .timestamp(at)
            .text("hello"),
    );
    records.push(
        Record::to(&topic)
            .key("k")
            .timestamp(at)
            .header("ce_specversion", "1.0")
            .header("ce_id", "evt-42")
            .header("ce_source", "/shop/checkout")
            .header("ce_type", "com.shop.order.paid")
            .header("ce_time", "2024-01-02T03:04:05Z")
            .header(
                "ce_traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .json(&json!({ "paid": true }))
            .unwrap(),
    );
    testkit::send(records).await;
    let endpoint = Endpoint::start(json!({ "cloudevents": true }));
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "ce"
        topics = ["{topic}"]
        endpoint = "{url}"
        format = "cloudevents"
        cloudevents = {{ type = "com.shop.record" }}
        "#,
        url = endpoint.url("/events"),
    ));
    let all =
        testkit::eventually(Duration::from_secs(60), || endpoint.delivered().len() == 7).await;
    assert!(
        all,
        "{} of 7 delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );

    let requests = endpoint.requests();
    let by_offset = |o: i64| requests.iter().find(|r| r["offset"] == o).unwrap();
    for offset in 0..5 {
        // The SDK accepts each request as a valid CloudEvent with kafkit's attributes.
        let r = by_offset(offset);
        assert_eq!(r["event_error"], Value::Null, "{r}");
        let event = &r["event"];
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], format!("{topic}/0/{offset}").as_str());
        assert_eq!(event["source"], format!("kafka://{topic}").as_str());
        assert_eq!(event["type"], "com.shop.record");
        assert_eq!(event["time"], "2025-11-24T16:00:00.250Z");
        assert_eq!(event["subject"], format!("order-{offset}").as_str());
        assert_eq!(event["partitionkey"], format!("order-{offset}").as_str());
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["data"], json!({ "id": offset }));
        // The plain request's headers are there too.
        assert_eq!(r["headers"]["kafkit-delivery-id"], event["id"]);
        assert_eq!(r["headers"]["kafka-header-tenant-id"], "acme");
    }

    // A key outside printable ASCII is percent-encoded as the HTTP binding requires.
    let text = by_offset(5);
    assert_eq!(text["event_error"], Value::Null, "{text}");
    assert_eq!(text["headers"]["ce-subject"], "Zo%C3%AB%20100%25");
    assert_eq!(
        percent_decode(text["headers"]["ce-subject"].as_str().unwrap()),
        "Zoë 100%"
    );
    assert_eq!(
        text["event"]["datacontenttype"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(text["event"]["data"], "hello");

    // A record that is a CloudEvent keeps its own attributes, extensions included.
    let own = by_offset(6);
    assert_eq!(own["event_error"], Value::Null, "{own}");
    let event = &own["event"];
    assert_eq!(event["id"], "evt-42");
    assert_eq!(event["source"], "/shop/checkout");
    assert_eq!(event["type"], "com.shop.order.paid");
    assert_eq!(event["time"], "2024-01-02T03:04:05.000Z");
    assert_eq!(
        event["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(event["data"], json!({ "paid": true }));
    assert_eq!(
        own["headers"]["kafkit-delivery-id"],
        format!("{topic}/0/6").as_str()
    );

    let (_, body) = serve.get("/subscriptions").await;
    let subscriptions: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(subscriptions[0]["format"], "cloudevents");
    assert!(serve.terminate().success());
}

/// The share of 503 answers among `requests`.
fn shed_fraction(requests: &[Value]) -> f64 {
    let shed = requests.iter().filter(|r| r["status"] == 503).count();
    shed as f64 / requests.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_converges_to_what_the_endpoint_takes() {
    // Given 600 records of distinct keys in one partition (up to 64 requests in flight), and an
    // endpoint that takes 8 requests at once and answers 503 to any beyond.
    let topic = testkit::topic("push-aimd", 1).await;
    let total = 600;
    produce(&topic, total, |i| format!("key-{i}")).await;
    let k = 8;
    let endpoint = Endpoint::start(json!({ "overload": k, "delay_ms": [10, 20] }));
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "aimd"
        topics = ["{topic}"]
        endpoint = "{url}"
        max_in_flight = 64
        concurrency = "adaptive"
        retry = {{ max_attempts = 1000, initial_delay = "20ms", max_delay = "200ms", jitter = 0.5 }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        url = endpoint.url("/"),
    ));
    let all = testkit::eventually(Duration::from_secs(120), || {
        endpoint.delivered().len() == total
    })
    .await;
    assert!(
        all,
        "{} of {total} delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );
    // The endpoint's own log: the share of 503s over all requests, and in the later half.
    let requests = endpoint.requests();
    let (first, second) = requests.split_at(requests.len() / 2);
    let (overall, early, late) = (
        shed_fraction(&requests),
        shed_fraction(first),
        shed_fraction(second),
    );
    let (_, body) = serve.get("/subscriptions").await;
    let subscriptions: Value = serde_json::from_str(&body).unwrap();
    let concurrency = &subscriptions[0]["concurrency"];
    let limit = concurrency["limit"].as_u64().unwrap();
    eprintln!(
        "requests {}, 503s {:.1}% (first half {:.1}%, second half {:.1}%), limit {limit}",
        requests.len(),
        overall * 100.0,
        early * 100.0,
        late * 100.0
    );
    assert!(
        late < 0.10,
        "{:.1}% of the later requests were shed (503): the limit did not follow the endpoint",
        late * 100.0
    );
    assert!(overall < 0.20, "{:.1}% shed overall", overall * 100.0);
    assert!(
        (2..=k + 2).contains(&limit),
        "limit {limit}, the endpoint takes {k}: {concurrency}"
    );
    assert_eq!(concurrency["mode"], "adaptive");
    assert_eq!(concurrency["max"], 1000);
    let (_, metrics) = serve.get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            r#"kafkit_push_concurrency_limit{{subscription="aimd"}} {limit}"#
        )),
        "{metrics}"
    );
    // Only held back, never reordered or lost: each key once delivered, in order.
    assert_key_order(&requests);
    assert!(serve.terminate().success());
    let committed = testkit::committed("kafkit-push-aimd", &topic).await;
    assert!(
        committed
            .iter()
            .all(|(_, offset, high)| *offset == Some(*high))
    );
}

/// Each record of each batch request the endpoint answered, with the request's times:
/// `(at, done, record)`.
fn batch_items(requests: &[Value]) -> Vec<(u64, u64, Value)> {
    requests
        .iter()
        .flat_map(|r| {
            let (at, done) = (r["at"].as_u64().unwrap(), r["done"].as_u64().unwrap());
            r["batch"]
                .as_array()
                .unwrap_or_else(|| panic!("not a batch request: {r}"))
                .iter()
                .map(move |item| (at, done, item.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_many_records_and_each_records_result_is_applied() {
    // Given 200 JSON records over 20 keys in 2 partitions: the endpoint answers the records of
    // key `again` "retry after 1 s" on their first request, those of key `doomed`
    // "dead_letter"; and a text record.
    let topic = testkit::topic("push-batch", 2).await;
    produce(&topic, 200, key_of).await;
    testkit::send(vec![Record::to(&topic).key("text").text("hello")]).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let endpoint = Endpoint::start(json!({
        "delay_ms": [5, 15],
        "secret": secret,
        "batch_outcomes": {
            "again": {"retry_first": 1, "retry_after": 1},
            "doomed": "dead_letter",
        },
    }));
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "batch"
        topics = ["{topic}"]
        endpoint = "{url}"
        max_in_flight = 32
        batch = {{ max_records = 16, max_wait = "50ms" }}
        retry = {{ max_attempts = 5, initial_delay = "100ms" }}
        circuit_breaker = {{ failure_threshold = 0 }}
        auth = {{ webhook_secrets = ["{secret}"] }}
        "#,
        url = endpoint.url("/batch"),
    ));

    // Every record but the doomed ones is delivered; those are dead-lettered, each with the
    // endpoint's reason, after one request.
    let all = testkit::eventually(Duration::from_secs(60), || {
        endpoint.delivered().len() == 191
    })
    .await;
    assert!(
        all,
        "{} of 191 delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );
    let dead = testkit::read(&format!("{topic}.dlq"), 10, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 10);
    for m in &dead {
        assert_eq!(m.key.as_deref(), Some(&b"doomed"[..]));
        assert_eq!(header(m, "error-kind"), "permanent");
        assert_eq!(
            header(m, "error-message"),
            "HTTP 200 OK: dead-letter: poison doomed"
        );
        assert_eq!(header(m, "attempts"), "1");
    }

    // Each request: a signed JSON array of at most 16 records; some carried many.
    let requests = endpoint.requests();
    let mut largest = 0;
    for r in &requests {
        assert_eq!(r["status"], 200);
        assert_eq!(r["verified"], true, "standardwebhooks refused a batch");
        assert_eq!(r["headers"]["content-type"], "application/json");
        let size = r["batch"].as_array().unwrap().len();
        assert_eq!(r["headers"]["kafkit-batch-size"], size.to_string().as_str());
        assert!((1..=16).contains(&size), "{size} records in one request");
        largest = largest.max(size);
    }
    assert!(largest > 1, "no request carried more than one record");

    // Each record as sent, and the requests it took: one for a record answered done or
    // dead_letter, two for one answered retry (the second no sooner than 1 s after).
    let items = batch_items(&requests);
    let mut by_id: BTreeMap<String, Vec<(u64, u64, Value)>> = BTreeMap::new();
    for (at, done, item) in &items {
        by_id
            .entry(item["id"].as_str().unwrap().to_owned())
            .or_default()
            .push((*at, *done, item.clone()));
    }
    assert_eq!(by_id.len(), 201, "every record was sent");
    for (id, mut tries) in by_id {
        tries.sort_by_key(|(at, _, _)| *at);
        let first = &tries[0].2;
        assert_eq!(
            id,
            format!("{topic}/{}/{}", first["partition"], first["offset"])
        );
        assert_eq!(first["topic"], topic.as_str());
        let outcomes: Vec<&str> = tries
            .iter()
            .map(|(_, _, i)| i["outcome"].as_str().unwrap())
            .collect();
        let attempts: Vec<u64> = tries
            .iter()
            .map(|(_, _, i)| i["attempt"].as_u64().unwrap())
            .collect();
        match first["key"].as_str().unwrap() {
            "text" => {
                assert_eq!(first["content_type"], "text/plain; charset=utf-8");
                assert_eq!(first["value_base64"], "aGVsbG8=");
                assert_eq!(outcomes, ["done"]);
            }
            key => {
                let value = &first["value"];
                assert_eq!(key, key_of(value["id"].as_u64().unwrap() as usize));
                assert_eq!(first["headers"]["tenant-id"], "acme");
                assert_eq!(first["content_type"], "application/json");
                match key {
                    "again" => {
                        assert_eq!(outcomes, ["retry", "done"], "{id}");
                        assert_eq!(attempts, [1, 2], "{id}");
                        let waited = tries[1].0 - tries[0].1;
                        assert!(waited >= 999, "{id} retried after {waited} ms");
                    }
                    "doomed" => assert_eq!(outcomes, ["dead_letter"], "{id}"),
                    _ => {
                        assert_eq!(outcomes, ["done"], "{id}");
                        assert_eq!(attempts, [1], "{id}");
                    }
                }
            }
        }
    }

    // Key order across batches: never a key in two requests at once, nor twice in one; each
    // key's offsets in order from request to request.
    for r in &requests {
        assert_eq!(r["overlap"], false, "a key in two requests at once: {r}");
    }
    let mut by_key: HashMap<String, Vec<(u64, i64)>> = HashMap::new();
    for (at, _, item) in &items {
        by_key
            .entry(item["key"].as_str().unwrap().to_owned())
            .or_default()
            .push((*at, item["offset"].as_i64().unwrap()));
    }
    for (key, mut seen) in by_key {
        seen.sort();
        let offsets: Vec<i64> = seen.iter().map(|(_, o)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "key {key} out of order: {offsets:?}"
        );
    }

    // The API and the metrics count records: 191 delivered; 10 retried and 10 dead-lettered
    // by their results inside 200 answers.
    let (_, body) = serve.get("/subscriptions").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        view[0]["batch"],
        json!({"max_records": 16, "max_bytes": 1048576, "max_wait": "50ms"})
    );
    assert_eq!(view[0]["deliveries"]["delivered"], 191);
    let (_, metrics) = serve.get("/metrics").await;
    assert!(
        metrics.contains(r#"kafkit_push_delivered_total{subscription="batch"} 191"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kafkit_push_failed_total{class="result",subscription="batch"} 20"#)
    );
    assert!(metrics.contains(&format!(
        r#"kafkit_push_request_duration_seconds_count{{subscription="batch"}} {}"#,
        requests.len()
    )));

    // Offsets moved for every record, done or dead-lettered.
    assert!(serve.terminate().success());
    let committed = testkit::committed("kafkit-push-batch", &topic).await;
    for (partition, offset, high) in committed {
        assert_eq!(
            offset,
            Some(high),
            "partition {partition} not fully committed"
        );
    }
}

/// The key of record `{"id": i}` in the batch test.
fn key_of(i: usize) -> String {
    match i % 20 {
        3 => "again".to_owned(),
        7 => "doomed".to_owned(),
        n => format!("key-{n}"),
    }
}

/// A private CA and, signed by it, a server certificate for `localhost` and a client
/// certificate (common name `kafkit-push`), as PEM files in a new directory: `ca.pem`,
/// `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`.
fn private_pki() -> std::path::PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let dir = std::env::temp_dir().join(testkit::unique("push-pki"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "kafkit test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, names, cn, usage) in [
        (
            "server",
            vec!["localhost".to_owned()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "client",
            vec![],
            "kafkit-push",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_of_a_private_ca_that_requires_a_client_certificate() {
    // Given an HTTPS endpoint (Node's https) whose certificate a private CA signed, and that
    // requires a client certificate signed by that CA; 20 records for a subscription with the
    // CA and a client certificate, 5 for one with the CA only.
    let pki = private_pki();
    let path = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let endpoint = Endpoint::start(json!({
        "tls": {"cert": path("server.pem"), "key": path("server-key.pem"), "ca": path("ca.pem")},
    }));
    let (mtls, anonymous) = (
        testkit::topic("push-mtls", 1).await,
        testkit::topic("push-anon", 1).await,
    );
    produce(&mtls, 20, |i| format!("key-{}", i % 4)).await;
    produce(&anonymous, 5, |i| format!("key-{i}")).await;
    let url = endpoint.url("/secure");
    assert!(url.starts_with("https://localhost:"), "{url}");
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "mtls"
        topics = ["{mtls}"]
        endpoint = "{url}"
        tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }}

        [[subscription]]
        name = "anonymous"
        topics = ["{anonymous}"]
        endpoint = "{url}"
        tls = {{ ca = "{ca}" }}
        retry = {{ max_attempts = 1000, initial_delay = "100ms", max_delay = "200ms" }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        ca = path("ca.pem"),
        cert = path("client.pem"),
        key = path("client-key.pem"),
    ));

    // The subscription with the client certificate delivers everything over TLS, the endpoint
    // seeing its certificate.
    let all =
        testkit::eventually(Duration::from_secs(60), || endpoint.delivered().len() == 20).await;
    let view = || async {
        let (_, body) = serve.get("/subscriptions").await;
        serde_json::from_str::<Value>(&body).unwrap()
    };
    assert!(
        all,
        "{} of 20 delivered; subscriptions: {}; log: {}",
        endpoint.delivered().len(),
        view().await,
        serve.log()
    );
    let requests = endpoint.requests();
    for r in &requests {
        assert_eq!(r["client_cn"], "kafkit-push", "{r}");
        assert_eq!(r["headers"]["kafka-topic"], mtls.as_str());
    }

    // The one without a client certificate never reaches the handler: each attempt fails
    // the handshake, and is retried.
    let mut failed = 0;
    for _ in 0..60 {
        failed = view().await[1]["deliveries"]["failed"].as_u64().unwrap();
        if failed >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let anonymous_view = &view().await[1];
    assert!(failed >= 3, "{anonymous_view}");
    let refused = anonymous_view["deliveries"]["recent_failures"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        refused.contains("CertificateRequired"),
        "without a client certificate: {refused}"
    );
    assert_eq!(anonymous_view["deliveries"]["delivered"], 0);
    assert!(
        endpoint
            .requests()
            .iter()
            .all(|r| r["headers"]["kafka-topic"] == mtls.as_str()),
        "a request without a client certificate reached the handler"
    );
    assert!(serve.terminate().success());
    assert_eq!(
        testkit::committed("kafkit-push-mtls", &mtls).await,
        [(0, Some(20), 20)]
    );
}

/// The requests of record `offset` of partition 0 of `topic`, in the order they arrived.
fn tries_of(requests: &[Value], topic: &str, offset: i64) -> Vec<Value> {
    let id = format!("{topic}/0/{offset}");
    let mut tries: Vec<Value> = requests
        .iter()
        .filter(|r| r["id"] == id.as_str())
        .cloned()
        .collect();
    tries.sort_by_key(|r| r["at"].as_u64());
    tries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_tier_delays_a_record_on_its_retry_topics() {
    // Given one partition: records of key `busy`, answered 429 with Retry-After: 3 on their
    // first two requests; one attempt in place, then retry topics of 1 s and 1 s.
    let topic = testkit::topic("push-tier-ra", 1).await;
    let key = |i: usize| match i % 5 {
        0 => "busy".to_owned(),
        n => format!("key-{n}"),
    };
    produce(&topic, 10, key).await;
    let endpoint = Endpoint::start(json!({ "retry_after_times": {"busy": [3, 2]} }));
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "tier-ra"
        topics = ["{topic}"]
        endpoint = "{url}"
        retry = {{ max_attempts = 1, topics = ["1s", "1s"] }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        url = endpoint.url("/"),
    ));
    let all =
        testkit::eventually(Duration::from_secs(60), || endpoint.delivered().len() == 10).await;
    assert!(
        all,
        "{} of 10 delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );

    // Each busy record: in place, then tier 1, then tier 2, each request no sooner than the
    // 3 s the endpoint asked for (the tiers' own delay is 1 s).
    let requests = endpoint.requests();
    for offset in [0, 5] {
        let tries = tries_of(&requests, &topic, offset);
        let seen: Vec<(u64, u64, Value)> = tries
            .iter()
            .map(|r| {
                (
                    r["attempt"].as_u64().unwrap(),
                    r["status"].as_u64().unwrap(),
                    r["headers"]["kafkit-retry-topic"].clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (1, 429, Value::Null),
                (2, 429, json!(format!("{topic}.retry.1"))),
                (3, 200, json!(format!("{topic}.retry.2"))),
            ],
            "offset {offset}"
        );
        for pair in tries.windows(2) {
            let waited = pair[1]["at"].as_u64().unwrap() - pair[0]["done"].as_u64().unwrap();
            // Date.now() is whole milliseconds: one may be lost in rounding.
            assert!(
                waited >= 2999,
                "offset {offset}: a retry topic's request {waited} ms after a Retry-After: 3"
            );
        }
    }
    assert!(serve.terminate().success());
    assert_eq!(
        testkit::committed("kafkit-push-tier-ra", &topic).await,
        [(0, Some(10), 10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_waiting_on_a_retry_topic_survives_a_sigkill() {
    // Given one partition: records of key `later` answered 500 on their first request; one
    // attempt in place, then a retry topic of 8 s.
    let topic = testkit::topic("push-tier-kill", 1).await;
    let key = |i: usize| match i % 5 {
        0 => "later".to_owned(),
        n => format!("key-{n}"),
    };
    produce(&topic, 10, key).await;
    let endpoint = Endpoint::start(json!({ "fail_first": {"later": 1} }));
    let subscriptions = format!(
        r#"
        [[subscription]]
        name = "tier-kill"
        topics = ["{topic}"]
        endpoint = "{url}"
        retry = {{ max_attempts = 1, topics = ["8s"] }}
        circuit_breaker = {{ failure_threshold = 0 }}
        "#,
        url = endpoint.url("/"),
    );
    let session = [
        ("KAFKA_SESSION_TIMEOUT", "12000"),
        ("KAFKA_HEARTBEAT_INTERVAL", "2000"),
        ("KAFKA_LIBRDKAFKA_MAX_POLL_INTERVAL_MS", "15000"),
    ];
    let group = "kafkit-push-tier-kill";
    let tier = format!("{topic}.retry.1");
    let serve = Serve::start_with(&subscriptions, &session);

    // Both `later` records failed and wait on the retry topic; the others are delivered.
    let copies = testkit::read(&tier, 2, Duration::from_secs(60)).await;
    assert_eq!(copies.len(), 2, "log: {}", serve.log());
    let delivered =
        testkit::eventually(Duration::from_secs(60), || endpoint.delivered().len() == 8).await;
    assert!(delivered, "{:?}", endpoint.delivered());
    // The source's offsets moved past them (their copies are stored): only the retry topic
    // holds them now.
    let mut moved = false;
    for _ in 0..40 {
        if testkit::committed(group, &topic).await == [(0, Some(10), 10)] {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(moved, "{:?}", testkit::committed(group, &topic).await);
    // SIGKILL while they wait (their tier request is due 8 s after their failure).
    serve.kill();
    let requests = endpoint.requests();
    assert!(
        requests.iter().all(|r| r["attempt"] == 1),
        "a retry topic's request before the kill: the test did not kill during the wait"
    );

    // After the kill: every source record below the committed offset was delivered or has
    // its copy on the retry topic.
    let committed = testkit::committed(group, &topic).await;
    let waiting: BTreeSet<String> = copies
        .iter()
        .map(|m| format!("{topic}/0/{}", header(m, "original-offset")))
        .collect();
    let delivered = endpoint.delivered();
    for o in 0..committed[0].1.unwrap_or(0) {
        let id = format!("{topic}/0/{o}");
        assert!(
            delivered.contains(&id) || waiting.contains(&id),
            "{id} is below the committed offset but neither delivered nor on the retry topic"
        );
    }

    // A new instance delivers both from the retry topic, no sooner than due; nothing is lost.
    let serve = Serve::start_with(&subscriptions, &session);
    let all =
        testkit::eventually(Duration::from_secs(90), || endpoint.delivered().len() == 10).await;
    assert!(
        all,
        "{} of 10 delivered after the restart; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );
    let requests = endpoint.requests();
    for offset in [0, 5] {
        let tries = tries_of(&requests, &topic, offset);
        assert_eq!(tries.len(), 2, "offset {offset}: {tries:?}");
        assert_eq!(tries[0]["status"], 500);
        assert_eq!(
            (tries[1]["attempt"].as_u64(), tries[1]["status"].as_u64()),
            (Some(2), Some(200))
        );
        assert_eq!(tries[1]["headers"]["kafkit-retry-topic"], tier.as_str());
        let waited = tries[1]["at"].as_u64().unwrap() - tries[0]["done"].as_u64().unwrap();
        assert!(
            waited >= 7999,
            "offset {offset}: delivered {waited} ms after failing"
        );
    }
    assert!(serve.terminate().success());
    assert_eq!(testkit::committed(group, &topic).await, [(0, Some(10), 10)]);
    assert_eq!(testkit::committed(group, &tier).await, [(0, Some(2), 2)]);
}

/// Milliseconds since the Unix epoch, the clock the Node endpoint stamps its lines with.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_pauses_the_subscription_while_its_endpoint_is_down() {
    // Given 20 records over 4 keys in one partition, and an endpoint that is down for its first
    // 5 requests (503, no Retry-After): the first record of each key (4 requests at once, which
    // open the breaker at its threshold of 4), then the first probe; up from then on.
    let topic = testkit::topic("push-breaker", 1).await;
    produce(&topic, 20, |i| format!("key-{}", i % 4)).await;
    let endpoint = Endpoint::start(json!({"unavailable_first": 5}));
    let open_ms = 3_000;
    let serve = Serve::start(&format!(
        r#"
        [[subscription]]
        name = "breaker"
        topics = ["{topic}"]
        endpoint = "{url}"
        retry = {{ max_attempts = 20, initial_delay = "1s", max_delay = "1s", jitter = 0.0 }}
        circuit_breaker = {{ failure_threshold = 4, open_duration = "{open_ms}ms" }}
        "#,
        url = endpoint.url("/"),
    ));

    // Meanwhile GET /subscriptions shows the circuit open, and readiness names it (an endpoint
    // that is down does not make the process unready).
    let mut seen_open = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen_open.is_none() && std::time::Instant::now() < deadline {
        let (_, body) = serve.get("/subscriptions").await;
        let view: Value = serde_json::from_str(&body).unwrap();
        if view[0]["consumer"]["circuits"][&topic] == "open" {
            let (ready_status, ready) = serve.get("/health/ready").await;
            seen_open = Some((view[0].clone(), ready_status, ready));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (view, ready_status, ready) =
        seen_open.unwrap_or_else(|| panic!("the circuit never showed open; log: {}", serve.log()));
    assert_eq!(view["status"], "failing", "{view}");
    let problem = format!("circuit of {topic} is open");
    assert!(
        view["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == problem.as_str()),
        "{view}"
    );
    assert_eq!(ready_status, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let checked = &ready["checks"]["subscriptions"]["breaker"];
    assert_eq!(checked["status"], "failing", "{ready}");
    assert!(
        checked["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == problem.as_str()),
        "{ready}"
    );

    // Once the endpoint is up, every record is delivered, once.
    let all =
        testkit::eventually(Duration::from_secs(60), || endpoint.delivered().len() == 20).await;
    assert!(
        all,
        "{} of 20 delivered; log: {}",
        endpoint.delivered().len(),
        serve.log()
    );
    let mut requests = endpoint.requests();
    requests.sort_by_key(|r| r["at"].as_u64());
    let at = |r: &Value| r["at"].as_u64().unwrap();
    let done = |r: &Value| r["done"].as_u64().unwrap();
    let ids = |rs: &[Value]| -> Vec<String> {
        rs.iter()
            .map(|r| format!("{}@{}:{}", r["id"], r["at"], r["status"]))
            .collect()
    };
    assert_eq!(
        requests.len(),
        25,
        "5 failed and 20 delivered: {:?}",
        ids(&requests)
    );

    // The first record of each key, at once: all 503; the last answer opens the circuit.
    let (burst, after) = requests.split_at(4);
    assert!(
        burst
            .iter()
            .all(|r| r["status"] == 503 && r["attempt"] == 1),
        "{:?}",
        ids(burst)
    );
    let keys: BTreeSet<&str> = burst.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 4, "{:?}", ids(burst));
    let opened = burst.iter().map(done).max().unwrap();
    // No request while it is open (retries were due after 1 s): the next one is the half-open
    // probe, alone, no sooner than open_duration after the answer that opened it.
    // (Date.now() is whole milliseconds: one may be lost in rounding.)
    let probe = &after[0];
    assert!(
        at(probe) + 1 >= opened + open_ms,
        "a request {} ms after the circuit opened, before its {open_ms} ms: {:?}",
        at(probe) - opened,
        ids(&requests)
    );
    assert_eq!(probe["status"], 503, "{:?}", ids(&requests));
    assert!(probe["attempt"].as_u64().unwrap() >= 2);
    // The probe failed: open again for open_duration; the second probe, alone, succeeds.
    let second = &after[1];
    assert!(
        at(second) + 1 >= done(probe) + open_ms,
        "a request {} ms after the failed probe, before the circuit's {open_ms} ms: {:?}",
        at(second) - done(probe),
        ids(&requests)
    );
    assert_eq!(second["status"], 200, "{:?}", ids(&requests));
    // Closed by that success: the rest flow, every request a 2xx, only then.
    let rest = &after[2..];
    assert!(
        rest.iter()
            .all(|r| at(r) >= done(second) && r["status"] == 200),
        "{:?}",
        ids(&requests)
    );
    // Each key's records in offset order, never two at once.
    assert_key_order(&requests);

    // Closed again, and everything committed.
    let (_, body) = serve.get("/subscriptions").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view[0]["consumer"]["circuits"][&topic], "closed", "{view}");
    assert_eq!(view[0]["status"], "ok", "{view}");
    assert!(serve.terminate().success());
    let committed = testkit::committed("kafkit-push-breaker", &topic).await;
    assert_eq!(committed, vec![(0, Some(20), 20)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_requests_in_flight_finish_then_commit() {
    // Given 18 records over 6 keys in one partition, and an endpoint that takes 3 s a request:
    // the first record of each key (offsets 0-5) goes out at once, the rest wait for their key.
    let topic = testkit::topic("push-drain", 1).await;
    produce(&topic, 18, |i| format!("key-{}", i % 6)).await;
    let slow = Endpoint::start(json!({"delay_ms": [3000, 3000]}));
    let subscriptions = |url: String| {
        format!(
            r#"
            [[subscription]]
            name = "drain"
            topics = ["{topic}"]
            endpoint = "{url}"
            commit_interval = "60s"
            circuit_breaker = {{ failure_threshold = 0 }}
            "#
        )
    };
    let serve = Serve::start(&subscriptions(slow.url("/")));
    let mut sending = false;
    for _ in 0..300 {
        let view: Value = serde_json::from_str(&serve.get("/subscriptions").await.1).unwrap();
        if view[0]["concurrency"]["in_flight"] == 6 {
            sending = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sending, "6 requests never in flight; log: {}", serve.log());
    // Let them reach the endpoint, well before their answers.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(slow.requests().is_empty(), "answered too soon");

    // SIGTERM with 6 requests in flight: the process waits for them, commits, exits 0.
    let signalled = now_ms();
    let log = serve.log.clone();
    let exit = serve.terminate();
    let exited = now_ms();
    let log = log.lock().unwrap().join("\n");
    assert!(exit.success(), "{exit}; log: {log}");
    // The 6 offsets are committed (the periodic commit is 60 s away: the shutdown did it).
    let committed = testkit::committed("kafkit-push-drain", &topic).await;
    assert_eq!(committed, vec![(0, Some(6), 18)], "log: {log}");
    assert!(
        exited - signalled < 10_000,
        "exited {} ms after SIGTERM, beyond the 10 s drain bound",
        exited - signalled
    );
    assert!(!log.contains("drain timeout"), "{log}");
    // The endpoint answered exactly those 6, each in flight across the signal, its answer
    // written to an open connection before the process exited; nothing else was sent.
    let mut requests = slow.requests();
    requests.sort_by_key(|r| r["offset"].as_i64());
    let offsets: Vec<i64> = requests
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, (0..6).collect::<Vec<_>>(), "{requests:?}");
    for r in &requests {
        let (at, done) = (r["at"].as_u64().unwrap(), r["done"].as_u64().unwrap());
        assert!(at < signalled && signalled < done && done <= exited, "{r}");
        assert_eq!(r["status"], 200);
        assert_eq!(r["closed"], false, "kafkit gave up on {}", r["id"]);
    }

    // A new instance delivers the 12 records that were not in flight, and none of the 6 again.
    let fast = Endpoint::start(json!({}));
    let serve = Serve::start(&subscriptions(fast.url("/")));
    let all = testkit::eventually(Duration::from_secs(60), || fast.delivered().len() == 12).await;
    assert!(
        all,
        "{} of 12 delivered; log: {}",
        fast.delivered().len(),
        serve.log()
    );
    assert!(serve.terminate().success());
    let again: Vec<i64> = fast
        .requests()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(again, (6..18).collect::<Vec<_>>());
    assert_eq!(fast.requests().len(), 12);
    let committed = testkit::committed("kafkit-push-drain", &topic).await;
    assert_eq!(committed, vec![(0, Some(18), 18)]);
}
