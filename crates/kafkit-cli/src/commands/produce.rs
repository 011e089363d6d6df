//! `kafkit produce`: one record per stdin line (or `--value`), printing where each landed.

use std::io::Write;

use anyhow::Context;
use kafkit::{Producer, Record};
use tokio::io::AsyncBufReadExt;

use crate::cli::ProduceArgs;

/// Lines sent per batch when reading stdin: enough to pipeline, small enough to report promptly.
const LINES_PER_BATCH: usize = 1_000;

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    kafkit::record::validate_topic(&args.topic)?;
    let producer = super::remote(&args.connection)?.producer()?;
    let build = |value: String| {
        let mut record = Record::to(&args.topic).payload(value);
        record.key = args.key.as_ref().map(|k| k.as_bytes().to_vec());
        record.partition = args.partition;
        record.headers = args
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        record
    };
    let mut failures = 0usize;
    if let Some(value) = &args.value {
        failures += send(&producer, vec![build(value.clone())]).await?;
    } else {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut batch = Vec::with_capacity(LINES_PER_BATCH);
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            batch.push(build(line));
            if batch.len() == LINES_PER_BATCH {
                failures += send(&producer, std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            failures += send(&producer, batch).await?;
        }
    }
    producer.shutdown().await?;
    anyhow::ensure!(failures == 0, "{failures} record(s) were not delivered");
    Ok(())
}

/// Sends a batch, prints `partition offset` (or the error) per record; returns the failures.
async fn send(producer: &Producer, batch: Vec<Record>) -> anyhow::Result<usize> {
    let results = producer.send_batch(batch).await;
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for result in results {
        match result {
            Ok(delivery) => writeln!(
                out,
                "{}",
                serde_json::json!({"partition": delivery.partition, "offset": delivery.offset})
            )?,
            Err(error) => {
                failures += 1;
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"error": {"code": error.code().as_str(), "message": error.to_string()}})
                )?;
            }
        }
    }
    Ok(failures)
}
