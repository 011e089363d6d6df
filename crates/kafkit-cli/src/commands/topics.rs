//! `kafkit topics list|create|describe`.

use kafkit::TopicSpec;
use kafkit::error::ErrorCode;

use crate::cli::{Connection, TopicsCommand};

pub async fn run(connection: &Connection, command: TopicsCommand) -> anyhow::Result<()> {
    let admin = super::remote(connection)?.admin()?;
    match command {
        TopicsCommand::List => {
            for topic in admin.list_topics().await? {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": topic.name,
                        "partitions": topic.partitions.len(),
                        "records": topic.record_count(),
                    })
                );
            }
        }
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let spec = configs.into_iter().fold(
                TopicSpec::new(&name, partitions).replication_factor(replication_factor),
                |spec, (k, v)| spec.config(k, v),
            );
            // An existing topic is left as it is: say so, with what it really has.
            let answer = match admin.describe_topic(&name).await {
                Ok(topic) => {
                    serde_json::json!({"exists": name, "partitions": topic.partitions.len()})
                }
                Err(error) if error.code() == ErrorCode::UnknownTopic => {
                    admin.ensure_topics(&[spec]).await?;
                    serde_json::json!({"created": name, "partitions": partitions})
                }
                Err(error) => return Err(error.into()),
            };
            println!("{answer}");
        }
        TopicsCommand::Describe { name } => {
            let topic = match admin.describe_topic(&name).await {
                Err(error) if error.code() == ErrorCode::UnknownTopic => {
                    anyhow::bail!("topic {name} does not exist")
                }
                topic => topic?,
            };
            // Brokers without DescribeConfigs (such as the embedded one) still get a description.
            let configs = admin.topic_configs(&name).await.unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "name": topic.name,
                    "partitions": topic.partitions,
                    "configs": configs,
                }))?
            );
        }
    }
    Ok(())
}
