//! Every example in `examples/` runs as a real process against the test broker, the way a reader
//! would run it: `KAFKA_BROKERS` names the broker and `TOPIC` gives the run topics of its own.
//! Producer examples are checked by reading their topics back (keys, partitions, values,
//! headers); consumer examples by what they print for each record, the topics they write
//! (dead letters, forwarded records), their group's committed offsets and a clean exit 0 on
//! SIGINT or SIGTERM.
//!
//! The examples are built first with `cargo build --workspace --examples`: a no-op after
//! `cargo test --workspace`, which already built them with the same features, and what keeps
//! the binaries current when only this test is run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafkit::codec::{CONTENT_TYPE_HEADER, JSON, TEXT};
use kafkit::partitioner::murmur2_partition;
use kafkit::producer::{CORRELATION_ID_HEADER, TIMESTAMP_HEADER};
use kafkit::rdkafka::TopicPartitionList;
use kafkit::rdkafka::consumer::{BaseConsumer, Consumer as _};
use kafkit::{Admin, Message, dead_letter};
use serde_json::{Value, json};

/// How long an example gets to do its work.
const WAIT: Duration = Duration::from_secs(45);
/// How long it gets to exit once signalled: its drain, commit and group leave included.
const EXIT: Duration = Duration::from_secs(15);

/// `target/<profile>/examples`, once every example of the workspace is built there.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This test runs as target/<profile>/deps/examples-<hash>.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // The whole workspace, as `cargo test --workspace` builds it: `-p kafkit` alone would
        // unify features differently and rebuild the dependencies.
        build
            .args(["build", "--workspace", "--examples"])
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("the target directory"))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
            None => panic!("unexpected test binary path {}", exe.display()),
        }
        let output = build.output().expect("run cargo build");
        assert!(
            output.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        profile_dir.join("examples")
    })
}

/// Lines a process printed, each with when it arrived (since the process started).
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<(Duration, String)>>>);

impl Output {
    /// Collects `stream` line by line on a thread of its own until it closes.
    fn collect(stream: impl Read + Send + 'static, started: Instant) -> (Self, JoinHandle<()>) {
        let output = Output::default();
        let lines = output.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.0.lock().unwrap().push((started.elapsed(), line));
            }
        });
        (output, reader)
    }

    fn lines(&self) -> Vec<String> {
        self.timed().into_iter().map(|(_, line)| line).collect()
    }

    fn timed(&self) -> Vec<(Duration, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// An example running as a child process. A test that fails shows its stdout and stderr; one
/// that ends early stops it with SIGTERM, then SIGKILL.
struct Example {
    name: &'static str,
    child: Child,
    stdout: Output,
    stderr: Output,
    readers: Vec<JoinHandle<()>>,
}

impl Example {
    /// Starts example `name` against the test broker with `TOPIC=topic`.
    fn start(name: &'static str, topic: &str) -> Self {
        Example::start_with(name, topic, &[])
    }

    /// [`Example::start`] with more environment variables.
    fn start_with(name: &'static str, topic: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(examples_dir().join(name));
        // Only the broker the test names: a developer's own KAFKA_* settings must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KAFKA_") {
                command.env_remove(key);
            }
        }
        let started = Instant::now();
        let mut child = command
            .env("KAFKA_BROKERS", testkit::brokers())
            .env("TOPIC", topic)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting example {name}: {e}"));
        let (stdout, out) = Output::collect(child.stdout.take().expect("piped"), started);
        let (stderr, err) = Output::collect(child.stderr.take().expect("piped"), started);
        Example {
            name,
            child,
            stdout,
            stderr,
            readers: vec![out, err],
        }
    }

    /// Waits until what it printed satisfies `done`; panics, saying `what` was awaited, when
    /// that takes longer than [`WAIT`] or the example exits first.
    async fn wait_until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.stdout.lines()) {
            if let Some(status) = self.child.try_wait().expect("poll the example") {
                panic!("{} exited ({status}) before {what}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{}: still waiting for {what} after {WAIT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the example to end by itself; asserts exit 0 and returns what it printed.
    async fn finish(mut self) -> Vec<String> {
        self.exit_within(WAIT).await;
        self.stdout.lines()
    }

    /// Sends `signal` (`-INT`, `-TERM`) and asserts a clean exit 0 within [`EXIT`]; returns
    /// what it printed.
    async fn stop(mut self, signal: &str) -> Vec<String> {
        self.signal(signal);
        self.exit_within(EXIT).await;
        self.stdout.lines()
    }

    async fn exit_within(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the example") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Everything it printed has been read once both pipes closed.
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        assert_eq!(status.code(), Some(0), "{} exited with {status}", self.name);
    }

    /// SIGKILL: no drain, no commit, no goodbye to the group or the transaction coordinator.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the example");
        self.child.wait().expect("reap the example");
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // A chance to leave its group, so that the next run's member is not kept waiting
            // for a dead one.
            self.signal("-TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let show = |output: &Output| {
                output
                    .timed()
                    .iter()
                    .map(|(at, line)| format!("  {:>6.2}s {line}\n", at.as_secs_f64()))
                    .collect::<String>()
            };
            eprintln!(
                "--- {} stdout:\n{}--- {} stderr:\n{}",
                self.name,
                show(&self.stdout),
                self.name,
                show(&self.stderr)
            );
        }
    }
}

fn admin() -> Admin {
    testkit::kafka().admin().expect("admin client")
}

/// Every record of `topic`, which must hold exactly `count`, sorted by partition and offset.
async fn read_exactly(topic: &str, count: usize) -> Vec<Message> {
    let mut records = testkit::read(topic, count, WAIT).await;
    assert_eq!(records.len(), count, "records read from {topic}");
    let stored = admin()
        .describe_topic(topic)
        .await
        .expect("describe topic")
        .record_count();
    assert_eq!(stored, count as i64, "records stored in {topic}");
    records.sort_by_key(|m| (m.partition, m.offset));
    records
}

fn header<'a, T>(message: &'a Message<T>, name: &str) -> &'a str {
    let value = message
        .header_value(name)
        .unwrap_or_else(|| panic!("no {name} header at offset {}", message.offset));
    std::str::from_utf8(value).expect("a UTF-8 header")
}

fn value(message: &Message) -> Value {
    message.json().expect("a JSON value")
}

/// `(partition, committed, end)` of every partition of `topic` in `group`.
type Positions = Vec<(i32, Option<i64>, i64)>;

/// Whether every partition that holds records has its end committed (and some hold records).
fn at_end(positions: &Positions) -> bool {
    positions.iter().any(|(_, _, end)| *end > 0)
        && positions
            .iter()
            .all(|(_, committed, end)| *end == 0 || *committed == Some(*end))
}

/// Asserts that `group` has committed the end of every partition of `topic` that holds records,
/// waiting up to `limit` for it.
async fn assert_committed_to_end(group: &str, topic: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let positions = testkit::committed(group, topic).await;
        if at_end(&positions) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} did not commit the end of {topic}: {positions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The numbers in `line` after each of `markers`, e.g. `numbers("user 1 -> partition 2",
/// ["user ", "partition "])` is `[1, 2]`.
fn numbers<const N: usize>(line: &str, markers: [&str; N]) -> Option<[i64; N]> {
    let mut found = [0; N];
    let mut rest = line;
    for (i, marker) in markers.iter().enumerate() {
        rest = &rest[rest.find(marker)? + marker.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '-')
            .unwrap_or(rest.len());
        found[i] = rest[..end].parse().ok()?;
    }
    Some(found)
}

#[tokio::test]
async fn simple_producer_sends_keyed_json_with_standard_headers_where_it_reports() {
    // Three partitions, so that where a key lands says something.
    let topic = testkit::topic("user-events", 3).await;
    let stdout = Example::start("simple_producer", &topic).finish().await;

    // Users 1 to 3, keyed by id, on the partition the Java client picks for the key, as JSON
    // with the standard headers.
    let records = read_exactly(&topic, 3).await;
    let mut report = Vec::new();
    for user_id in 1..=3u64 {
        let key = user_id.to_string();
        let record = records
            .iter()
            .find(|m| m.key_str() == Some(key.as_str()))
            .unwrap_or_else(|| panic!("no record keyed {key}"));
        assert_eq!(record.partition, murmur2_partition(key.as_bytes(), 3));
        assert_eq!(
            value(record),
            json!({"user_id": user_id, "email": format!("user{user_id}@example.com")})
        );
        assert_eq!(header(record, CONTENT_TYPE_HEADER), JSON);
        assert_eq!(header(record, CORRELATION_ID_HEADER).len(), 36);
        assert!(header(record, TIMESTAMP_HEADER).parse::<u64>().is_ok());
        report.push(format!(
            "user {user_id} -> partition {} offset {}",
            record.partition, record.offset
        ));
    }
    // It reported where each one landed.
    assert_eq!(stdout, report);
}

#[tokio::test]
async fn batch_producer_delivers_every_record_of_both_topics() {
    let orders = testkit::topic("orders", 3).await;
    let stdout = Example::start("batch_producer", &orders).finish().await;
    assert_eq!(stdout, ["2000 records delivered, 0 failed"]);

    // 1000 orders, each keyed by its order id and on that key's partition.
    let records = read_exactly(&orders, 1000).await;
    let mut seen = BTreeSet::new();
    for record in &records {
        let order = value(record)["order"].as_i64().expect("an order number");
        let key = format!("order-{order}");
        assert_eq!(record.key_str(), Some(key.as_str()));
        assert_eq!(record.partition, murmur2_partition(key.as_bytes(), 3));
        seen.insert(order);
    }
    assert_eq!(seen, (0..1000).collect());

    // 1000 audit lines, each with the trace id of its order.
    let audit = read_exactly(&format!("{orders}-audit"), 1000).await;
    let mut seen = BTreeSet::new();
    for record in &audit {
        let trace = header(record, "trace-id");
        let order: i64 = trace["trace-".len()..].parse().expect("trace-N");
        assert_eq!(
            record.payload(),
            Some(format!("order {order} placed").as_bytes())
        );
        assert_eq!(header(record, CONTENT_TYPE_HEADER), TEXT);
        seen.insert(order);
    }
    assert_eq!(seen, (0..1000).collect());
}

/// Every record `topic` holds for a reader with `isolation`, in offset order.
async fn read_isolated(topic: &str, isolation: kafkit::config::Isolation) -> Vec<Message> {
    let reader = testkit::kafka()
        .reader()
        .expect("reader")
        .isolation(isolation);
    let mut reading = reader
        .open(topic, None, kafkit::reader::Start::Beginning)
        .await
        .expect("open");
    let records = reading
        .collect(&kafkit::reader::Limits::to_end(usize::MAX).timeout(WAIT))
        .await
        .expect("read");
    assert!(reading.at_end(), "{topic}: the end was not reached");
    records
}

#[tokio::test]
async fn transactional_producer_commits_three_transfers_and_aborts_the_fourth() {
    let payments = testkit::topic("payments", 1).await;
    let notifications = format!("{payments}-notifications");
    admin()
        .ensure_topics(&[kafkit::TopicSpec::new(&notifications, 1)])
        .await
        .expect("create the notifications topic");
    let stdout = Example::start("transactional_producer", &payments)
        .finish()
        .await;
    assert_eq!(
        stdout,
        [
            "transfer 1 committed",
            "transfer 2 committed",
            "transfer 3 committed",
            "transfer 4 aborted: invalid record: 5000 is over the limit of 1000",
        ]
    );
    // Read committed: the debits and notifications of transfers 1-3, each once.
    let debits: Vec<Value> = read_isolated(&payments, kafkit::config::Isolation::ReadCommitted)
        .await
        .iter()
        .map(value)
        .collect();
    assert_eq!(
        debits,
        [
            json!({"transfer": 1, "debit": 250}),
            json!({"transfer": 2, "debit": 40}),
            json!({"transfer": 3, "debit": 999}),
        ]
    );
    let notes: Vec<String> =
        read_isolated(&notifications, kafkit::config::Isolation::ReadCommitted)
            .await
            .iter()
            .map(|m| String::from_utf8(m.payload().expect("a payload").to_vec()).expect("text"))
            .collect();
    assert_eq!(
        notes,
        [
            "transfer 1 of 250 done",
            "transfer 2 of 40 done",
            "transfer 3 of 999 done",
        ]
    );
    // Read uncommitted: the aborted transfer's debit was written, and stays invisible above.
    let written = read_isolated(&payments, kafkit::config::Isolation::ReadUncommitted).await;
    assert_eq!(written.len(), 4);
    assert_eq!(value(&written[3]), json!({"transfer": 4, "debit": 5000}));
}

#[tokio::test]
async fn tenant_partitioner_keeps_each_tenant_on_its_header_hash_partition() {
    // The example creates the topic itself, with six partitions.
    let topic = testkit::unique("tenant-events");
    let stdout = Example::start("tenant_partitioner", &topic).finish().await;
    let described = admin().describe_topic(&topic).await.expect("created");
    assert_eq!(described.partitions.len(), 6);

    // Each tenant's three records on the partition its tenant-id hashes to, in order, where
    // the example said they went.
    let records = read_exactly(&topic, 9).await;
    let mut report = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        let partition = murmur2_partition(tenant.as_bytes(), 6);
        let ns: Vec<_> = records
            .iter()
            .filter(|m| header(m, "tenant-id") == tenant)
            .inspect(|m| assert_eq!(m.partition, partition, "{tenant}'s partition"))
            .map(|m| value(m)["n"].as_i64().expect("n"))
            .collect();
        assert_eq!(ns, [0, 1, 2], "{tenant}'s records in order");
        report.extend((0..3).map(|n| format!("{tenant} #{n} -> partition {partition}")));
    }
    assert_eq!(stdout, report);
}

#[tokio::test]
async fn simple_consumer_handles_every_user_event_then_commits_and_exits_on_sigint() {
    // On a real broker the example only consumes: the test produces its input.
    let topic = testkit::topic("user-events", 3).await;
    let producer = testkit::kafka().producer().expect("producer");
    let mut expected = BTreeSet::new();
    for user_id in 1..=3 {
        let email = format!("u{user_id}@example.com");
        let delivery = producer
            .send_json(
                &topic,
                Some(&user_id.to_string()),
                &json!({"user_id": user_id, "email": email}),
            )
            .await
            .expect("delivered");
        expected.insert(format!(
            "user {user_id} <{email}> (partition {}, offset {})",
            delivery.partition, delivery.offset
        ));
    }
    producer.shutdown().await.expect("flush");

    let mut example = Example::start("simple_consumer", &topic);
    example
        .wait_until("a line per user", |lines| {
            lines.iter().filter(|l| l.starts_with("user ")).count() >= 3
        })
        .await;
    let stdout = example.stop("-INT").await;
    assert_eq!(stdout[0], format!("consuming {topic}; Ctrl-C to stop"));
    // Each user exactly once, with the partition and offset it was stored at.
    let handled: BTreeSet<_> = stdout[1..].iter().cloned().collect();
    assert_eq!(handled, expected);
    assert_eq!(stdout.len(), 4, "a user handled twice: {stdout:?}");
    // It committed what it handled on the way out.
    assert_committed_to_end("user-service", &topic, Duration::ZERO).await;
}

#[tokio::test]
async fn batch_consumer_stores_all_metrics_in_bounded_batches() {
    let topic = testkit::topic("metrics", 1).await;
    let mut example = Example::start("batch_consumer", &topic);
    // "stored N cpu points (sum S)" per batch.
    let batches = |lines: &[String]| -> Vec<[i64; 2]> {
        lines
            .iter()
            .filter_map(|l| numbers(l, ["stored ", "(sum "]))
            .collect()
    };
    example
        .wait_until("batches of all 250 metrics", |lines| {
            batches(lines).iter().map(|[n, _]| n).sum::<i64>() >= 250
        })
        .await;
    let stdout = example.stop("-TERM").await;

    // Every metric once, in batches of at most 100: the values 0..250 sum to 31125.
    let batches = batches(&stdout);
    assert!(
        batches.iter().all(|[n, _]| (1..=100).contains(n)),
        "{batches:?}"
    );
    assert_eq!(batches.iter().map(|[n, _]| n).sum::<i64>(), 250);
    assert_eq!(batches.iter().map(|[_, sum]| sum).sum::<i64>(), 31125);
    assert_committed_to_end("metrics-writer", &topic, Duration::ZERO).await;
}

#[tokio::test]
async fn cdc_handler_sees_create_update_delete_and_tombstone() {
    let topic = testkit::topic("dbserver1.public.users", 1).await;
    let mut example = Example::start("cdc_handler", &topic);
    example
        .wait_until("tombstone", |lines| {
            lines.iter().any(|l| l.starts_with("tombstone"))
        })
        .await;
    let stdout = example.stop("-INT").await;
    // Both envelopes decoded, in order; the tombstone as `None`.
    assert_eq!(
        stdout,
        [
            r#"insert Some(User { id: 1, email: "a@x.io" })"#,
            r#"update Some(User { id: 1, email: "a@x.io" }) -> Some(User { id: 1, email: "b@x.io" })"#,
            r#"delete Some((1, "b@x.io"))"#,
            r#"tombstone for key Some("1")"#,
        ]
    );
    assert_committed_to_end("user-projection", &topic, Duration::ZERO).await;
}

#[tokio::test]
async fn circuit_breaker_pauses_while_open_then_sends_everything_once() {
    let topic = testkit::topic("notifications", 1).await;
    let mut example = Example::start("circuit_breaker", &topic);
    let sent = |lines: &[String]| -> Vec<i64> {
        lines
            .iter()
            .filter_map(|l| numbers(l, ["sent notification "]))
            .map(|[n]| n)
            .collect()
    };
    let closed = format!("circuits: {{{topic:?}: Closed}}");
    example
        .wait_until(
            "all 20 notifications sent and the circuit closed",
            |lines| {
                let first = lines.iter().position(|l| l.starts_with("sent "));
                sent(lines).len() >= 20 && first.is_some_and(|i| lines[i..].contains(&closed))
            },
        )
        .await;
    let timed = example.stdout.timed();
    let stdout = example.stop("-INT").await;

    // Every notification exactly once, in order, once the dependency recovered.
    assert_eq!(sent(&stdout), (0..20).collect::<Vec<_>>());
    // The circuit was seen open, and its two 5 s pauses (the five failures, then the failed
    // probe) held the first success back: without them the retries alone take about 6 s.
    assert!(
        stdout.contains(&format!("circuits: {{{topic:?}: Open}}")),
        "never open"
    );
    let first_sent = timed
        .iter()
        .find(|(_, l)| l.starts_with("sent "))
        .map(|(at, _)| *at)
        .expect("sent");
    assert!(
        first_sent >= Duration::from_secs(10),
        "first notification after {first_sent:?}"
    );
    assert_committed_to_end("notifier", &topic, Duration::ZERO).await;
}

#[tokio::test]
async fn dead_letter_retries_charges_good_orders_and_dead_letters_the_rest() {
    let topic = testkit::topic("orders", 1).await;
    let dlt = format!("{topic}_dlt");
    let mut example = Example::start("dead_letter_retries", &topic);

    // Orders 2 (not JSON), 3 (fails validation) and 4 (times out three times) dead-lettered,
    // in order, with the original payload and the failure in headers.
    let dead = read_exactly(&dlt, 3).await;
    assert_eq!(dead[0].payload(), Some(&b"{this is not json"[..]));
    assert_eq!(value(&dead[1]), json!({"id": 3, "amount": -5}));
    assert_eq!(value(&dead[2]), json!({"id": 4, "amount": 99_999}));
    let failures = [
        ("1", "invalid", "1"),
        ("2", "invalid", "1"),
        ("3", "transient", "3"),
    ];
    for (record, (offset, kind, attempts)) in dead.iter().zip(failures) {
        assert_eq!(header(record, dead_letter::ORIGINAL_TOPIC), topic);
        assert_eq!(header(record, dead_letter::ORIGINAL_PARTITION), "0");
        assert_eq!(header(record, dead_letter::ORIGINAL_OFFSET), offset);
        assert_eq!(header(record, dead_letter::CONSUMER_GROUP), "payments");
        assert_eq!(header(record, dead_letter::ERROR_KIND), kind);
        assert_eq!(header(record, dead_letter::ATTEMPTS), attempts, "{kind}");
    }
    example
        .wait_until("order 1 charged", |lines| {
            lines.iter().any(|l| l == "order 1 charged")
        })
        .await;
    let stdout = example.stop("-INT").await;
    // Only the good order was charged, once.
    assert_eq!(
        stdout,
        [
            format!("consuming {topic}; failures go to {dlt}; Ctrl-C to stop"),
            "order 1 charged".to_owned(),
        ]
    );
    assert_committed_to_end("payments", &topic, Duration::ZERO).await;
}

#[tokio::test]
async fn graceful_shutdown_forwards_commits_and_leaves_its_group_on_sigterm() {
    let topic = testkit::topic("page-views", 1).await;
    let example = Example::start("graceful_shutdown", &topic);

    // Each page view forwarded with its key and value, in order.
    let forwarded = read_exactly(&format!("{topic}-enriched"), 5).await;
    for (n, record) in forwarded.iter().enumerate() {
        assert_eq!(record.key_str(), Some(format!("user-{n}").as_str()));
        assert_eq!(value(record), json!({"page": "/", "n": n}));
    }
    // SIGTERM: it drains, commits, leaves its group, flushes and exits 0.
    let stdout = example.stop("-TERM").await;
    assert_eq!(
        stdout,
        [
            "running; Ctrl-C to shut down gracefully",
            "all consumers committed and left their groups; producers flushed",
        ]
    );
    assert_committed_to_end("enricher", &topic, Duration::ZERO).await;
    // It left the group rather than letting its session run out.
    let group = admin()
        .describe_group("enricher")
        .await
        .expect("describe group");
    assert!(
        group.as_ref().is_none_or(|g| g.members.is_empty()),
        "{group:?}"
    );
}

#[tokio::test]
async fn manual_commit_books_every_invoice_and_commits_each_while_running() {
    let topic = testkit::topic("invoices", 1).await;
    let mut example = Example::start("manual_commit", &topic);
    let booked = |lines: &[String]| -> Vec<[i64; 2]> {
        lines
            .iter()
            .filter_map(|l| numbers(l, ["invoice ", "offset "]))
            .collect()
    };
    example
        .wait_until("5 invoices booked", |lines| booked(lines).len() >= 5)
        .await;
    // The offsets are committed while it runs, not only on shutdown.
    assert_committed_to_end("bookkeeping", &topic, WAIT).await;
    let stdout = example.stop("-INT").await;
    // Invoice i is the record at offset i, booked once.
    assert_eq!(booked(&stdout), (0..5).map(|i| [i, i]).collect::<Vec<_>>());
}

/// The outputs a read-committed reader of `fees` sees, as how many fee records each payment
/// (by the partition and offset it was read from) has.
async fn fees_by_source(fees: &str) -> BTreeMap<(i64, i64), usize> {
    let mut found = BTreeMap::new();
    for fee in read_isolated(fees, kafkit::config::Isolation::ReadCommitted).await {
        let fee = value(&fee);
        let source = (
            fee["source_partition"].as_i64().expect("source_partition"),
            fee["source_offset"].as_i64().expect("source_offset"),
        );
        *found.entry(source).or_insert(0) += 1;
    }
    found
}

/// The dead-letter copies a read-committed reader of `dlt` sees, per original offset.
async fn dead_letters_by_source(dlt: &str) -> BTreeMap<(i64, i64), usize> {
    let mut found = BTreeMap::new();
    for copy in read_isolated(dlt, kafkit::config::Isolation::ReadCommitted).await {
        let number = |name: &str| header(&copy, name).parse::<i64>().expect("a number");
        let source = (
            number(dead_letter::ORIGINAL_PARTITION),
            number(dead_letter::ORIGINAL_OFFSET),
        );
        *found.entry(source).or_insert(0) += 1;
    }
    found
}

/// Payments for the exactly-once pipeline example (every 1,000th has amount 0 and is
/// invalid), and what a read-committed reader of its outputs must see.
struct FeeRun {
    payments: String,
    fees: String,
    dlt: String,
    count: u64,
    /// Where each payment landed (partition, offset), valid or not.
    valid: BTreeSet<(i64, i64)>,
    invalid: BTreeSet<(i64, i64)>,
    /// Asks the group's committed offsets and never joins it. Read uncommitted: it does not
    /// ask for stable offsets, which would keep it waiting while a transaction is open.
    offsets: BaseConsumer,
    partitions: TopicPartitionList,
}

impl FeeRun {
    /// `count` payments on `partitions` partitions, and the fees topic.
    async fn new(prefix: &str, count: u64, partitions: i32) -> Self {
        let payments = testkit::topic(prefix, partitions).await;
        let fees = format!("{payments}-fees");
        admin()
            .ensure_topics(&[kafkit::TopicSpec::new(&fees, partitions)])
            .await
            .expect("create the fees topic");
        let records = (0..count).map(|id| {
            let amount = if id % 1_000 == 0 { 0 } else { id % 997 + 1 };
            kafkit::Record::to(&payments)
                .key(id.to_string())
                .json(&json!({"id": id, "amount": amount}))
                .expect("JSON")
        });
        testkit::send(records.collect()).await;
        let mut valid = BTreeSet::new();
        let mut invalid = BTreeSet::new();
        for payment in read_exactly(&payments, count as usize).await {
            let source = (i64::from(payment.partition), payment.offset);
            if value(&payment)["amount"] == 0 {
                invalid.insert(source);
            } else {
                valid.insert(source);
            }
        }
        let offsets: BaseConsumer = kafkit::KafkaConfig {
            isolation: kafkit::config::Isolation::ReadUncommitted,
            ..testkit::config()
        }
        .to_consumer_config(&fees)
        .create()
        .expect("offsets client");
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(&payments, partition);
        }
        FeeRun {
            dlt: format!("{payments}.dlq"),
            payments,
            fees,
            count,
            valid,
            invalid,
            offsets,
            partitions: list,
        }
    }

    /// The group's committed offset per partition (0 before any commit).
    fn committed(&self) -> BTreeMap<i64, i64> {
        let committed = self
            .offsets
            .committed_offsets(self.partitions.clone(), Duration::from_secs(30))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    kafkit::rdkafka::Offset::Offset(offset) => offset,
                    _ => 0,
                };
                (i64::from(e.partition()), offset)
            })
            .collect()
    }

    /// Payments done in all partitions.
    fn done(&self) -> i64 {
        self.committed().values().sum()
    }

    /// Outputs and offsets go together: every payment below the committed offsets read before
    /// reading the outputs has its fee (or its dead-letter copy) once, and none at or above
    /// those read after has any. With members still running, the transaction markers reach
    /// the outputs and the offsets at slightly different moments: looks again for up to 10 s
    /// before failing. An output twice fails at once.
    async fn assert_exactly_once(&self, step: &str) -> (usize, usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = self.committed();
            let fees = fees_by_source(&self.fees).await;
            let copies = dead_letters_by_source(&self.dlt).await;
            let after = self.committed();
            let twice: Vec<_> = fees
                .iter()
                .chain(&copies)
                .filter(|(_, n)| **n > 1)
                .collect();
            assert!(
                twice.is_empty(),
                "{step}: written more than once: {twice:?}"
            );
            let below = |positions: &BTreeMap<i64, i64>, source: &(i64, i64)| {
                source.1 < positions.get(&source.0).copied().unwrap_or(0)
            };
            let problem = [(&self.valid, &fees), (&self.invalid, &copies)]
                .into_iter()
                .find_map(|(sources, written)| {
                    let missing: Vec<_> = sources
                        .iter()
                        .filter(|s| below(&before, s) && !written.contains_key(s))
                        .collect();
                    let ahead: Vec<_> = written
                        .keys()
                        .filter(|s| !sources.contains(s) || !below(&after, s))
                        .collect();
                    (!missing.is_empty() || !ahead.is_empty()).then(|| {
                        format!(
                            "{step}: committed {before:?}..{after:?}; missing {missing:?}; \
                             written beyond the committed offsets {ahead:?}"
                        )
                    })
                });
            match problem {
                None => return (fees.len(), copies.len()),
                Some(problem) if Instant::now() > deadline => panic!("{problem}"),
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Takes transactional id `id` over, as the next instance does when it starts: what the killed
/// one left open is aborted, what it committed is completed.
async fn take_over(id: &str) {
    testkit::kafka()
        .transactional_producer(id)
        .await
        .expect("take the transactional id over")
        .shutdown()
        .await
        .expect("close the transactional producer");
}

/// A cheap pseudo-random source for kill points, seeded from the clock.
fn randomness() -> impl FnMut(u64) -> u64 {
    let mut seed = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    ) | 1;
    move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    }
}

#[tokio::test]
async fn exactly_once_pipeline_writes_each_fee_once_across_sigkills() {
    // Given 20,000 payments on 3 partitions; every 1,000th has amount 0 and is invalid.
    let run = FeeRun::new("eos-payments", 20_000, 3).await;
    assert_eq!(run.invalid.len(), 20);

    // When the pipeline is SIGKILLed at random moments, and started again each time with the
    // same transactional id (and the same static group member, so it takes its partitions back
    // at once), in transactions of 100 payments.
    let id = testkit::unique("eos-fees");
    let env = [
        ("KAFKA_TRANSACTIONAL_ID", id.as_str()),
        ("KAFKA_LIBRDKAFKA_GROUP_INSTANCE_ID", "fees-1"),
        ("TRANSACTION_RECORDS", "100"),
    ];
    let mut random = randomness();
    let mut kills = 0;
    loop {
        let before = run.done();
        if before as u64 >= run.count {
            break;
        }
        let pipeline = Example::start_with("exactly_once_pipeline", &run.payments, &env);
        // Let it commit some transactions (600 to 1,800 payments), then kill it at once or
        // a little later: inside a transaction, between two, or while it starts.
        let step = 600 + random(1_200) as i64;
        let deadline = Instant::now() + WAIT;
        while run.done() < before + step && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(random(150))).await;
        pipeline.kill();
        kills += 1;
        // Then, once its transactional id is taken over, exactly the committed payments have
        // their output.
        take_over(&id).await;
        run.assert_exactly_once(&format!("after kill {kills}"))
            .await;
        assert!(kills < 40, "no progress: {:?}", run.committed());
    }
    assert!(
        kills >= 10,
        "only {kills} kills before every payment was done"
    );

    // And a last run to the end leaves every payment's output exactly once.
    let mut pipeline = Example::start_with("exactly_once_pipeline", &run.payments, &env);
    pipeline
        .wait_until("it runs", |lines| {
            lines.iter().any(|line| line.starts_with("transforming"))
        })
        .await;
    assert_committed_to_end(&run.fees, &run.payments, WAIT).await;
    pipeline.stop("-TERM").await;
    let (fees, copies) = run.assert_exactly_once("at the end").await;
    assert_eq!(fees + copies, run.count as usize);
}

#[tokio::test]
async fn exactly_once_pipeline_writes_each_fee_once_across_sigkills_of_two_members() {
    // Given 10,000 payments on 4 partitions, and two instances of the pipeline in one group
    // without static membership, each with a transactional id of its own, a short session
    // (6 s, the broker's minimum) and transactions of 10 payments (slow enough for the kills
    // to come while there is work left).
    let run = FeeRun::new("eos-members", 10_000, 4).await;
    let ids = [
        testkit::unique("eos-member-a"),
        testkit::unique("eos-member-b"),
    ];
    let start = |member: usize| {
        let env = [
            ("KAFKA_TRANSACTIONAL_ID", ids[member].as_str()),
            ("TRANSACTION_RECORDS", "10"),
            ("KAFKA_SESSION_TIMEOUT", "6000"),
            ("KAFKA_HEARTBEAT_INTERVAL", "1000"),
        ];
        Example::start_with("exactly_once_pipeline", &run.payments, &env)
    };
    let mut members = [Some(start(0)), Some(start(1))];

    // When one of them, at random, is SIGKILLed once 150 to 600 more payments are done, and
    // started again: every kill and every restart moves partitions between live members.
    let mut random = randomness();
    let mut kills = 0;
    loop {
        let before = run.done();
        if before as u64 >= run.count {
            break;
        }
        let step = 150 + random(450) as i64;
        let deadline = Instant::now() + WAIT;
        while run.done() < before + step && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let victim = random(2) as usize;
        members[victim].take().expect("running").kill();
        kills += 1;
        // Then, while the other member goes on, a read-committed reader sees each committed
        // payment's output once and nothing of what is not committed.
        take_over(&ids[victim]).await;
        run.assert_exactly_once(&format!("after kill {kills}"))
            .await;
        members[victim] = Some(start(victim));
        assert!(kills < 30, "no progress: {:?}", run.committed());
    }
    assert!(
        kills >= 6,
        "only {kills} kills before every payment was done"
    );

    // And once both stop, every payment's output is there exactly once.
    for mut member in members.into_iter().flatten() {
        // A member just started again may still be registering its transactional id, before
        // its signal handler is in place.
        member
            .wait_until("it runs", |lines| {
                lines.iter().any(|line| line.starts_with("transforming"))
            })
            .await;
        member.stop("-TERM").await;
    }
    let (fees, copies) = run.assert_exactly_once("at the end").await;
    assert_eq!(fees + copies, run.count as usize);
}

#[tokio::test]
async fn exactly_once_pipeline_stops_cleanly_on_sigterm_while_it_starts() {
    // The signal comes while the pipeline is still joining its group: its handler must be in
    // place already, or the process dies of the signal instead of exiting 0.
    let payments = testkit::topic("eos-early-stop", 1).await;
    let mut pipeline = Example::start_with(
        "exactly_once_pipeline",
        &payments,
        &[(
            "KAFKA_TRANSACTIONAL_ID",
            testkit::unique("eos-early").as_str(),
        )],
    );
    pipeline
        .wait_until("it starts", |lines| {
            lines.iter().any(|line| line.starts_with("transforming"))
        })
        .await;
    let stdout = pipeline.stop("-TERM").await;
    assert!(
        stdout.iter().any(|line| line.starts_with("stopped after")),
        "{stdout:?}"
    );
}
