//! `kafkit consume`: prints one JSON object per record (topic, partition, offset, timestamp,
//! key, headers, value). With `--group` it joins the group and commits what it printed.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use kafkit::Message;
use kafkit::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use kafkit::rdkafka::{Offset, TopicPartitionList};

use crate::cli::ConsumeArgs;

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = super::remote_config(&args.connection)?;
    kafkit::record::validate_topic(&args.topic)?;
    config.auto_offset_reset = if args.from_beginning {
        kafkit::config::OffsetReset::Earliest
    } else {
        kafkit::config::OffsetReset::Latest
    };
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("kafkit-consume-{}", std::process::id()));
    let mut client_config = config.to_consumer_config(&group);
    if args.group.is_none() {
        client_config.set("enable.auto.commit", "false");
    }
    let consumer: StreamConsumer = client_config.create().context("creating the consumer")?;
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic])?;
    } else {
        assign_all(&consumer, &args.topic, args.from_beginning).await?;
    }

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
        let owned = Message::from_borrowed(&message);
        writeln!(std::io::stdout().lock(), "{}", render(&owned))?;
        printed += 1;
        if args.group.is_some() {
            consumer.store_offset_from_message(&message)?;
        }
    }
    drop(stream);
    if args.group.is_some() {
        tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await?
            .or_else(|e| match e.rdkafka_error_code() {
                // Nothing stored since the last commit.
                Some(kafkit::rdkafka::types::RDKafkaErrorCode::NoOffset) => Ok(()),
                _ => Err(e),
            })
            .context("committing offsets")?;
    }
    Ok(())
}

async fn assign_all(
    consumer: &StreamConsumer,
    topic: &str,
    from_beginning: bool,
) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    let start = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), start)?;
        }
    }
    anyhow::ensure!(assignment.count() > 0, "topic {topic} does not exist");
    consumer.assign(&assignment)?;
    Ok(())
}

/// The JSON line for a record: text stays text, JSON values are embedded as JSON.
pub fn render(message: &Message) -> serde_json::Value {
    let text = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_ref()
            .map(|b| serde_json::Value::String(String::from_utf8_lossy(b).into_owned()))
            .unwrap_or(serde_json::Value::Null)
    };
    let value = match &message.value {
        None => serde_json::Value::Null,
        Some(bytes) => serde_json::from_slice(bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        }),
    };
    let headers: serde_json::Map<String, serde_json::Value> = message
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    serde_json::json!({
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": message.timestamp,
        "key": text(&message.key),
        "headers": headers,
        "value": value,
    })
}
