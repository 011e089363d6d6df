//! A consumer process for crash and shutdown tests: handles `{"id": N}` records of `TOPIC` in
//! group `GROUP` and appends each handled id to the file `OUT` (one write per record, so a
//! SIGKILL loses nothing already handled). Stops cleanly on SIGINT/SIGTERM.
//!
//! Environment: `KAFKIT_TEST_BROKERS`, `TOPIC`, `GROUP`, `OUT`, and optionally
//! `HANDLE_MICROS` (work per record, default 200), `FAIL_PERCENT` (share of handler calls that
//! fail transiently and are retried, default 0), `POISON_EVERY` (ids `N` with
//! `N % POISON_EVERY == POISON_EVERY - 1` fail permanently and are dead-lettered to
//! `TOPIC.dlq`), `COMMIT_MS` (commit interval, default 5000), `KAFKA_CLIENT_ID`, `ORDER`
//! (`partition`, `key` or `unordered`, default partition), `MAX_IN_FLIGHT` (key and unordered
//! order), `JITTER` (1: the work per record varies from 0 to `HANDLE_MICROS` by id), `TRACE`
//! (a file that gets `S <partition> <offset> <key> <pid>` when a handler call starts and
//! `E …` when it succeeds, `F …` when it fails, one write per line).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::{
    HandlerError, Kafka, KafkaConfig, Message, RetryPolicy, Router, consumer::CommitStrategy,
    consumer::ConsumerOptions, consumer::ProcessingOrder,
};

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: a number, got {v:?}"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(var("OUT"))
        .expect("output file");
    let out = Arc::new(Mutex::new(out));
    let work = Duration::from_micros(number("HANDLE_MICROS", 200));
    let fail_percent = number("FAIL_PERCENT", 0);
    let poison_every = number("POISON_EVERY", 0);
    let jitter = number("JITTER", 0) == 1;
    let trace = std::env::var("TRACE").ok().map(|path| {
        Arc::new(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("trace file"),
        ))
    });
    let pid = std::process::id();
    // Calls so far: mixed into the failure choice, so a retried record eventually succeeds.
    let calls = Arc::new(AtomicU64::new(0));
    let mut router = Router::new();
    router
        .register(var("TOPIC"), move |m: Message<Item>| {
            let (out, calls, trace) = (out.clone(), calls.clone(), trace.clone());
            async move {
                let id = m.value.id;
                if let Some(trace) = &trace {
                    trace
                        .lock()
                        .expect("not poisoned")
                        .write_all(trace_line("S", &m, pid).as_bytes())?;
                }
                let work = if jitter {
                    Duration::from_micros(
                        (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33)
                            % (work.as_micros() as u64).max(1),
                    )
                } else {
                    work
                };
                tokio::time::sleep(work).await;
                let call = calls.fetch_add(1, Ordering::Relaxed);
                let failure = if poison_every > 0 && id % poison_every == poison_every - 1 {
                    Some(HandlerError::permanent(format!("poison record {id}")))
                } else if (id.wrapping_mul(7919) ^ call.wrapping_mul(104_729)) % 100 < fail_percent
                {
                    Some(HandlerError::transient("injected transient failure"))
                } else {
                    None
                };
                if let Some(failure) = failure {
                    if let Some(trace) = &trace {
                        trace
                            .lock()
                            .expect("not poisoned")
                            .write_all(trace_line("F", &m, pid).as_bytes())?;
                    }
                    return Err(failure);
                }
                // One write call per line: `writeln!` may split a line over two writes, and a
                // SIGKILL between them would leave half a number for the next process to extend.
                let line = format!("{id}\n");
                out.lock()
                    .expect("not poisoned")
                    .write_all(line.as_bytes())?;
                if let Some(trace) = &trace {
                    trace
                        .lock()
                        .expect("not poisoned")
                        .write_all(trace_line("E", &m, pid).as_bytes())?;
                }
                Ok(())
            }
        })
        .retry(RetryPolicy::exponential(20, Duration::from_millis(5)).jitter(0.0))
        .order(match std::env::var("ORDER").as_deref() {
            Ok("key") => ProcessingOrder::Key,
            Ok("unordered") => ProcessingOrder::Unordered,
            Ok("partition") | Err(_) => ProcessingOrder::Partition,
            Ok(other) => panic!("ORDER: partition, key or unordered, got {other:?}"),
        })
        .max_in_flight(number("MAX_IN_FLIGHT", 100) as usize);
    let config = KafkaConfig {
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(500),
        ..KafkaConfig::new([var("KAFKIT_TEST_BROKERS")])
    };
    let config = match std::env::var("KAFKA_CLIENT_ID") {
        Ok(client_id) => KafkaConfig {
            client_id,
            ..config
        },
        Err(_) => config,
    };
    let options = ConsumerOptions {
        drain_timeout: Duration::from_secs(3),
        commit: CommitStrategy::Periodic(Duration::from_millis(number("COMMIT_MS", 5000))),
        ..Default::default()
    };
    let consumer =
        Kafka::connect(&config)?.consumer_with_options(&var("GROUP"), router, options)?;
    consumer.run(kafkit::shutdown::signal()).await
}

/// A `TRACE` line: the event, the record's partition, offset and key, this process.
fn trace_line(event: &str, m: &Message<Item>, pid: u32) -> String {
    format!(
        "{event} {} {} {} {pid}\n",
        m.partition,
        m.offset,
        m.key_str().unwrap_or("-")
    )
}
