//! `kafkit-bench push`: push delivery end to end. Records go to a fresh topic; a real endpoint
//! process (`kafkit-bench endpoint`, an HTTP server over loopback answering 200 after a fixed
//! delay) receives them from the real `kafkit serve --subscriptions FILE` binary, one
//! subscription per case, and from a KafkaJS `eachMessage` consumer calling it with `fetch`
//! (`interop/bench-push-kafkajs.js`), the consumer a team writes by hand today. A case ends when
//! the endpoint has answered 200 to every record's delivery id; it is timed by the endpoint's
//! clock from the first request it received to that last 200 (process start and group join left
//! out; shown apart, from spawning the client).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use kafkit::{Record, TopicSpec};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::BenchArgs;
use crate::produce::send_batches;

/// The header that names a delivery (`topic/partition/offset`); the KafkaJS baseline sends it
/// too, so the endpoint counts distinct records the same way for both.
const DELIVERY_ID: &str = "kafkit-delivery-id";

/// `kafkit-bench push`: what to produce, which endpoint delays, which clients.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Records of the no-op endpoint cases (`--records` is that of the delayed cases).
    #[arg(long, default_value_t = 20_000)]
    pub fast_records: usize,
    /// Milliseconds the delayed endpoint waits before answering 200.
    #[arg(long, default_value_t = 10)]
    pub delay_ms: u64,
    /// Distinct record keys (`key-0` ..).
    #[arg(long, default_value_t = 1_000)]
    pub keys: usize,
    /// The `kafkit` binary (default: `kafkit` beside this binary).
    #[arg(long)]
    pub kafkit: Option<PathBuf>,
    /// The KafkaJS baseline script (`interop/bench-push-kafkajs.js`); unset: no baseline.
    #[arg(long)]
    pub kafkajs: Option<PathBuf>,
    /// Seconds a case may take before the run fails.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// `kafkit-bench endpoint`: the benchmark's endpoint process.
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Milliseconds to wait before answering 200.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Distinct delivery ids after which it prints its completion line.
    #[arg(long)]
    pub expect: usize,
}

/// Who consumes and calls the endpoint.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// `kafkit serve` with one subscription: its `order` and `max_in_flight`.
    Kafkit(&'static str, usize),
    /// The KafkaJS script with `partitionsConsumedConcurrently` this many.
    KafkaJs(usize),
}

impl Client {
    fn name(self) -> String {
        match self {
            Client::Kafkit("partition", _) => "kafkit serve, partition order".to_string(),
            Client::Kafkit(order, in_flight) => {
                format!("kafkit serve, {order} order, max_in_flight {in_flight}")
            }
            Client::KafkaJs(1) => "KafkaJS 2.2.4 eachMessage + fetch (defaults)".to_string(),
            Client::KafkaJs(n) => {
                format!("KafkaJS 2.2.4 eachMessage + fetch, partitionsConsumedConcurrently {n}")
            }
        }
    }
}

/// What one case measured.
struct Measured {
    /// From the endpoint's first request to its 200 for the last distinct record.
    elapsed: Duration,
    /// From spawning the client to the endpoint's completion line (start and group join in).
    wall: Duration,
    /// Requests the endpoint answered by then (distinct records plus re-deliveries).
    requests: usize,
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let (kafka, admin) = args.common.connect()?;
    let brokers = kafka.cluster().bootstrap_servers().to_string();
    let kafkit = match &args.kafkit {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("kafkit"),
    };
    anyhow::ensure!(
        kafkit.is_file(),
        "{} missing: cargo build --release -p kafkit-cli",
        kafkit.display()
    );
    let work = std::env::temp_dir().join(format!("kafkit-bench-push-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let partitions = args.common.partitions;
    println!(
        "# push delivery: {} (no-op endpoint) and {} ({} ms endpoint) JSON records of ~{} bytes over {} keys, {partitions} partitions, broker {brokers}; one round per case",
        args.fast_records, args.common.records, args.delay_ms, args.common.size, args.keys
    );
    println!(
        "# seconds: the endpoint's clock, first request to the 200 of the last record; wall: from spawning the client (process start and group join included)"
    );
    println!("| case | records | endpoint | seconds | records/s | wall seconds | requests |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    let fast = [
        Client::Kafkit("key", 64),
        Client::Kafkit("partition", 64),
        Client::KafkaJs(1),
    ];
    let slow = [
        Client::Kafkit("partition", 64),
        Client::Kafkit("key", 64),
        Client::Kafkit("key", 256),
        Client::KafkaJs(1),
        Client::KafkaJs(partitions as usize),
    ];
    let mut results = Vec::new();
    for (label, records, delay, clients) in [
        ("no-op", args.fast_records, 0, &fast[..]),
        ("slow", args.common.records, args.delay_ms, &slow[..]),
    ] {
        let topic = format!("bench-push-{}-{label}", std::process::id());
        admin
            .ensure_topics(&[TopicSpec::new(&topic, partitions)])
            .await?;
        // A producer created after the topic: one that cached the metadata before it failed
        // every record (see `ordering`).
        let producer = kafka.producer_builder().standard_headers(false).build()?;
        let body = "x".repeat(args.common.size.saturating_sub(30));
        let keys = args.keys;
        let failed = send_batches(&producer, records, |id| {
            Record::to(&topic)
                .key(format!("key-{}", id % keys))
                .json(&serde_json::json!({"id": id, "body": body}))
                .expect("encodable")
        })
        .await?;
        anyhow::ensure!(failed == 0, "{failed} records not written");
        let endpoint = if delay == 0 {
            "no-op (200 at once)".to_string()
        } else {
            format!("{delay} ms, then 200")
        };
        for (index, &client) in clients.iter().enumerate() {
            if matches!(client, Client::KafkaJs(_)) && args.kafkajs.is_none() {
                continue;
            }
            let case = Case {
                topic: &topic,
                group: format!("{topic}-{index}"),
                records,
                delay,
                brokers: &brokers,
                work: &work,
                timeout: Duration::from_secs(args.timeout),
            };
            let measured = case.run(client, &kafkit, args.kafkajs.as_deref()).await?;
            let rate = records as f64 / measured.elapsed.as_secs_f64();
            println!(
                "| {} | {records} | {endpoint} | {:.2} | {rate:.0} | {:.2} | {} |",
                client.name(),
                measured.elapsed.as_secs_f64(),
                measured.wall.as_secs_f64(),
                measured.requests
            );
            results.push((label, client, rate));
        }
    }
    let rate = |label: &str, wanted: &dyn Fn(Client) -> bool| {
        results
            .iter()
            .find(|(l, c, _)| *l == label && wanted(*c))
            .map(|(_, _, rate)| *rate)
    };
    let key = |c: Client| matches!(c, Client::Kafkit("key", 64));
    let partition = |c: Client| matches!(c, Client::Kafkit("partition", _));
    let kafkajs = |c: Client| matches!(c, Client::KafkaJs(1));
    println!();
    if let (Some(key), Some(partition)) = (rate("slow", &key), rate("slow", &partition)) {
        println!(
            "{} ms endpoint: key order (max_in_flight 64) is {:.1}x partition order (goal: at least 20x)",
            args.delay_ms,
            key / partition
        );
    }
    for (label, endpoint) in [
        ("no-op", "no-op".to_string()),
        ("slow", format!("{} ms", args.delay_ms)),
    ] {
        if let (Some(key), Some(js)) = (rate(label, &key), rate(label, &kafkajs)) {
            println!(
                "{endpoint} endpoint: kafkit serve (key order, defaults) is {:.1}x KafkaJS eachMessage + fetch (goal: at least 5x)",
                key / js
            );
        }
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

/// One case: a fresh endpoint, a fresh group, one client.
struct Case<'a> {
    topic: &'a str,
    group: String,
    records: usize,
    delay: u64,
    brokers: &'a str,
    work: &'a Path,
    timeout: Duration,
}

impl Case<'_> {
    async fn run(
        &self,
        client: Client,
        kafkit: &Path,
        kafkajs: Option<&Path>,
    ) -> anyhow::Result<Measured> {
        let (mut endpoint, mut lines, port) = spawn_endpoint(self.delay, self.records).await?;
        let url = format!("http://127.0.0.1:{port}/push");
        let log = std::fs::File::create(self.work.join(format!("{}.log", self.group)))?;
        let mut command = match client {
            Client::Kafkit(order, in_flight) => {
                let file = self.work.join(format!("{}.toml", self.group));
                std::fs::write(
                    &file,
                    format!(
                        "[[subscription]]\nname = \"bench\"\ntopics = [\"{}\"]\ngroup = \"{}\"\nendpoint = \"{url}\"\norder = \"{order}\"\nmax_in_flight = {in_flight}\n",
                        self.topic, self.group
                    ),
                )?;
                let mut command = Command::new(kafkit);
                command
                    .args(["serve", "--listen", "127.0.0.1:0", "--subscriptions"])
                    .arg(&file);
                command
            }
            Client::KafkaJs(concurrency) => {
                let mut command = Command::new("node");
                command
                    .arg(kafkajs.context("no KafkaJS script")?)
                    .arg(self.topic)
                    .arg(&self.group)
                    .arg(&url)
                    .arg(self.records.to_string())
                    .arg(concurrency.to_string());
                command
            }
        };
        let started = Instant::now();
        let mut child = command
            .env("KAFKA_BROKERS", self.brokers)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", client.name()))?;
        let outcome = tokio::time::timeout(self.timeout, completion(&mut lines)).await;
        let wall = started.elapsed();
        stop(&mut child).await;
        endpoint.kill().await.ok();
        let (first_ms, done_ms, requests) = outcome
            .map_err(|_| anyhow::anyhow!("{}: timed out after {:?}", client.name(), self.timeout))?
            .with_context(|| format!("{}: the endpoint stopped early", client.name()))?;
        Ok(Measured {
            elapsed: Duration::from_secs_f64((done_ms - first_ms) / 1e3),
            wall,
            requests,
        })
    }
}

/// Starts `kafkit-bench endpoint` and reads its port from its first line.
async fn spawn_endpoint(
    delay: u64,
    expect: usize,
) -> anyhow::Result<(Child, Lines<BufReader<ChildStdout>>, u16)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["endpoint", "--delay-ms"])
        .arg(delay.to_string())
        .arg("--expect")
        .arg(expect.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next_line().await?.context("endpoint exited")?;
    let line: serde_json::Value = serde_json::from_str(&first)?;
    let port = line["listening"].as_u64().context("no port")? as u16;
    Ok((child, lines, port))
}

/// Waits for the endpoint's completion line: first request and last 200 (ms), requests.
async fn completion(
    lines: &mut Lines<BufReader<ChildStdout>>,
) -> anyhow::Result<(f64, f64, usize)> {
    while let Some(line) = lines.next_line().await? {
        let line: serde_json::Value = serde_json::from_str(&line)?;
        if line["complete"] == true {
            let number = |name: &str| line[name].as_f64().context("malformed completion line");
            return Ok((
                number("first_ms")?,
                number("done_ms")?,
                number("requests")? as usize,
            ));
        }
    }
    anyhow::bail!("endpoint exited")
}

/// SIGTERM, up to 15 s to leave its group, then SIGKILL.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        child.kill().await.ok();
    }
}

/// The endpoint's state: what it has seen since it started.
struct Seen {
    delay: Duration,
    expect: usize,
    started: Instant,
    first: OnceLock<f64>,
    requests: AtomicUsize,
    ids: Mutex<HashSet<Bytes>>,
}

/// `kafkit-bench endpoint`: an HTTP/1.1 server on 127.0.0.1 (a port of its own); every request
/// is answered 200 after the delay. Prints `{"listening": PORT}`, then, once `expect` distinct
/// delivery ids have been answered, `{"complete": true, "first_ms", "done_ms", "requests"}`.
pub async fn endpoint(args: EndpointArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{{\"listening\":{}}}", listener.local_addr()?.port());
    let seen = Arc::new(Seen {
        delay: Duration::from_millis(args.delay_ms),
        expect: args.expect,
        started: Instant::now(),
        first: OnceLock::new(),
        requests: AtomicUsize::new(0),
        ids: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new().fallback(answer).with_state(seen);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn answer(State(seen): State<Arc<Seen>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    seen.first
        .get_or_init(|| seen.started.elapsed().as_secs_f64() * 1e3);
    seen.requests.fetch_add(1, Ordering::Relaxed);
    if !seen.delay.is_zero() {
        tokio::time::sleep(seen.delay).await;
    }
    let Some(id) = headers.get(DELIVERY_ID) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut ids = seen.ids.lock().expect("not poisoned");
    if ids.insert(Bytes::copy_from_slice(id.as_bytes())) && ids.len() == seen.expect {
        println!(
            "{{\"complete\":true,\"first_ms\":{},\"done_ms\":{},\"requests\":{}}}",
            seen.first.get().expect("set above"),
            seen.started.elapsed().as_secs_f64() * 1e3,
            seen.requests.load(Ordering::Relaxed)
        );
    }
    StatusCode::OK
}
