//! `kafkit dlt list|replay`.

use kafkit::Message;

use crate::cli::{Connection, DltCommand};

pub async fn run(connection: &Connection, command: DltCommand) -> anyhow::Result<()> {
    let redrive = super::remote(connection)?.redrive()?;
    match command {
        DltCommand::List { topic, limit } => {
            for message in redrive.list(&topic, limit).await? {
                println!("{}", render(&message));
            }
        }
        DltCommand::Replay {
            topic,
            limit,
            any_destination,
            again,
        } => {
            let redrive = if any_destination {
                redrive.any_destination()
            } else {
                redrive
            };
            let report = if again.is_empty() {
                redrive.replay(&topic, limit).await?
            } else {
                redrive.replay_again(&topic, &again, |_| true).await?
            };
            println!(
                "{}",
                serde_json::json!({
                    "replayed": report.total(),
                    "by_topic": report.replayed,
                    "skipped": report.skipped,
                    "failed": report.failed,
                    "held_back": report.held_back,
                })
            );
        }
    }
    Ok(())
}

/// A dead-lettered record with its failure details pulled out of the headers.
fn render(message: &Message) -> serde_json::Value {
    serde_json::to_value(kafkit::view::DeadLetterView::of(message)).expect("a view serializes")
}
