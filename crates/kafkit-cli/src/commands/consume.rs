//! `kafkit consume`: prints one JSON object per record (the view the gateway's read API answers
//! with). Without `--group` it reads every partition through a [`kafkit::Reader`], joining no group;
//! with `--group` it joins the group and commits what it printed. `--isolation` chooses whether
//! records of aborted and open transactions are printed.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use kafkit::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use kafkit::{Kafka, KafkaConfig, Message, reader::Limits, reader::Start};

use crate::cli::ConsumeArgs;

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = super::remote_config(&args.connection)?;
    if let Some(isolation) = args.isolation {
        config.isolation = isolation.into();
    }
    kafkit::record::validate_topic(&args.topic)?;
    match &args.group {
        Some(group) => follow_group(config, group, &args).await,
        None => read(&config, &args).await,
    }
}

/// Reads every partition from the beginning or the end, without a group.
async fn read(config: &KafkaConfig, args: &ConsumeArgs) -> anyhow::Result<()> {
    let start = if args.from_beginning {
        Start::Beginning
    } else {
        Start::End
    };
    let mut reading = Kafka::connect(config)?
        .reader()?
        .open(&args.topic, None, start)
        .await
        .with_context(|| format!("reading {}", args.topic))?;
    let mut limits = Limits::follow();
    limits.idle = args.idle_timeout_ms.map(Duration::from_millis);
    let shutdown = kafkit::shutdown::signal();
    tokio::pin!(shutdown);
    let mut printed = 0usize;
    while args.count.is_none_or(|limit| printed < limit) {
        let message = tokio::select! {
            message = reading.next(&limits) => message?,
            () = &mut shutdown => None,
        };
        let Some(message) = message else { break };
        print(&message)?;
        printed += 1;
    }
    Ok(())
}

/// Consumes as a member of `group`, committing what was printed.
async fn follow_group(
    mut config: KafkaConfig,
    group: &str,
    args: &ConsumeArgs,
) -> anyhow::Result<()> {
    config.auto_offset_reset = if args.from_beginning {
        kafkit::config::OffsetReset::Earliest
    } else {
        kafkit::config::OffsetReset::Latest
    };
    let consumer: StreamConsumer = config
        .to_consumer_config(group)
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[&args.topic])?;
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let mut printed = 0usize;
    let mut stream = consumer.stream();
    let shutdown = kafkit::shutdown::signal();
    tokio::pin!(shutdown);
    while args.count.is_none_or(|limit| printed < limit) {
        let next = async {
            match idle {
                Some(idle) => tokio::time::timeout(idle, stream.next())
                    .await
                    .ok()
                    .flatten(),
                None => stream.next().await,
            }
        };
        let message = tokio::select! {
            message = next => message,
            () = &mut shutdown => None,
        };
        let Some(message) = message else { break };
        let message = message.context("consuming")?;
        print(&Message::from_borrowed(&message))?;
        printed += 1;
        consumer.store_offset_from_message(&message)?;
    }
    drop(stream);
    tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
        .await?
        .or_else(|e| match e.rdkafka_error_code() {
            // Nothing stored since the last commit.
            Some(kafkit::rdkafka::types::RDKafkaErrorCode::NoOffset) => Ok(()),
            _ => Err(e),
        })
        .context("committing offsets")?;
    Ok(())
}

fn print(message: &Message) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{}", render(message))?;
    Ok(())
}

/// The JSON line for a record: the same view the gateway's read API answers with.
pub fn render(message: &Message) -> serde_json::Value {
    serde_json::to_value(kafkit::view::MessageView::of(message)).expect("a view serializes")
}
