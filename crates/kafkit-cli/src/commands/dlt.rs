//! `kafkit dlt list|replay`.

use kafkit::{Message, Redrive, dead_letter};

use crate::cli::{Connection, DltCommand};

pub async fn run(connection: &Connection, command: DltCommand) -> anyhow::Result<()> {
    let redrive = Redrive::new(&super::remote_config(connection)?)?;
    match command {
        DltCommand::List { topic, limit } => {
            for message in redrive.list(&topic, limit).await? {
                println!("{}", render(&message));
            }
        }
        DltCommand::Replay { topic, limit } => {
            let report = redrive.replay(&topic, limit).await?;
            println!(
                "{}",
                serde_json::json!({
                    "replayed": report.total(),
                    "by_topic": report.replayed,
                    "skipped": report.skipped,
                })
            );
        }
    }
    Ok(())
}

/// A dead-lettered record with its failure details pulled out of the headers.
fn render(message: &Message) -> serde_json::Value {
    let header = |name: &str| {
        message
            .header_value(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let mut line = super::consume::render(message);
    line["failure"] = serde_json::json!({
        "original_topic": dead_letter::original_topic(message),
        "original_partition": header(dead_letter::ORIGINAL_PARTITION),
        "original_offset": header(dead_letter::ORIGINAL_OFFSET),
        "consumer_group": header(dead_letter::CONSUMER_GROUP),
        "error_kind": header(dead_letter::ERROR_KIND),
        "error_message": header(dead_letter::ERROR_MESSAGE),
        "attempts": header(dead_letter::ATTEMPTS),
        "failed_at": header(dead_letter::FAILED_AT),
    });
    line
}
