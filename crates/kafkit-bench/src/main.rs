//! `kafkit-bench`: kafkit's producer and consumer measured next to raw rdkafka doing the same
//! work, on the same broker, in the same run, in interleaved rounds (the median round is
//! shown). Prints Markdown tables for BENCHMARKS.md; `scripts/bench` runs it.
//!
//! ```text
//! kafkit-bench produce|consume|transform|ordering|push|stuck [--brokers HOST:PORT] [--records 1000000] [--size 100] [--partitions 6]
//! ```
//!
//! Without brokers (`--brokers` or `KAFKA_BROKERS`) it measures on the embedded development
//! broker; every other `KAFKA_*` variable configures the clients, as for `kafkit`.

mod consume;
mod ordering;
mod outcome;
mod produce;
mod push;
mod stuck;
mod transform;

use std::io::IsTerminal;

use clap::{Args, Parser, Subcommand};
use kafkit::{Admin, Kafka, KafkaConfig, TopicSpec};
use tracing_subscriber::EnvFilter;

/// mimalloc, as in the `kafkit` binary: the raw baselines run in this process too, so every
/// client is measured with the same allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kafkit-bench: kafkit's throughput next to raw rdkafka.
#[derive(Debug, Parser)]
#[command(name = "kafkit-bench", version, about)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    bench: Bench,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum Bench {
    /// Library batch send versus raw rdkafka BaseProducer.
    Produce(BenchArgs),
    /// Consumer runtime (typed no-op handler, commits on) versus raw rdkafka consumer loops.
    Consume(BenchArgs),
    /// Consume-transform-produce: exactly-once transactions versus the at-least-once runtime.
    Transform(BenchArgs),
    /// Parallel Consumer's workload (one partition, 0-5 ms handler): partition order, key
    /// order with 1, 10 and 1,000 keys, unordered (`--records 10000 --batch 1000`: in flight).
    Ordering(BenchArgs),
    /// Push delivery: `kafkit serve --subscriptions` to a no-op and a 10 ms endpoint, in key
    /// and partition order, next to KafkaJS `eachMessage` + `fetch` (`--kafkajs SCRIPT`).
    Push(push::PushArgs),
    /// Peak memory with stuck handlers and large fetches: kafkit's consumer next to raw rdkafka
    /// with the same fetch settings, each client in a process of its own.
    Stuck(stuck::StuckArgs),
    /// The push benchmark's endpoint process (started by `push`): 200 after `--delay-ms`.
    #[command(hide = true)]
    Endpoint(push::EndpointArgs),
}

/// Where and how much.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Bootstrap servers, comma-separated (`host:port,...`); unset: the embedded broker.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Records to send per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Input records per transaction, and per batch of the at-least-once route (`transform`).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Measure this client only, for profiling (`consume`: raw, raw-headers, stream or kafkit).
    #[arg(long)]
    pub only: Option<String>,
}

impl BenchArgs {
    /// The cluster to measure on (the embedded broker when no brokers are given; its
    /// configuration is `KAFKA_*` with `--brokers` applied), and an admin client.
    pub fn connect(&self) -> anyhow::Result<(Kafka, Admin)> {
        let mut config = KafkaConfig::from_env()?;
        if let Some(brokers) = &self.brokers {
            config.brokers = KafkaConfig::from_vars([("KAFKA_BROKERS", brokers)])?.brokers;
        }
        let kafka = Kafka::connect(&config)?;
        let admin = kafka.admin()?;
        Ok((kafka, admin))
    }

    /// A topic of `--partitions` partitions named after `prefix` and this process, created
    /// unless it exists.
    pub async fn fresh_topic(&self, admin: &Admin, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", std::process::id());
        admin
            .ensure_topics(&[TopicSpec::new(&name, self.partitions)])
            .await?;
        Ok(name)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout is the report.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let outcome = match cli.bench {
        Bench::Produce(args) => produce::run(args).await,
        Bench::Consume(args) => consume::run(args).await,
        Bench::Transform(args) => transform::run(args).await,
        Bench::Ordering(args) => ordering::run(args).await,
        Bench::Push(args) => push::run(args).await,
        Bench::Stuck(args) => stuck::run(args).await,
        Bench::Endpoint(args) => push::endpoint(args).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
