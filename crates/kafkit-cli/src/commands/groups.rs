//! `kafkit groups list|describe|lag`.

use crate::cli::{Connection, GroupsCommand};

pub async fn run(connection: &Connection, command: GroupsCommand) -> anyhow::Result<()> {
    let admin = super::remote(connection)?.admin()?;
    match command {
        GroupsCommand::List => {
            for group in admin.list_groups().await? {
                println!("{}", serde_json::to_string(&group)?);
            }
        }
        GroupsCommand::Describe { group } => {
            let description = admin.describe_group(&group).await?;
            let lag = admin.group_lag(&group, &[]).await?;
            anyhow::ensure!(
                description.is_some() || !lag.is_empty(),
                "group {group} is unknown to the cluster"
            );
            let total: i64 = lag.iter().map(|l| l.lag).sum();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "group": group,
                    "state": description.as_ref().map(|g| g.state.clone()),
                    "protocol": description.as_ref().map(|g| g.protocol.clone()),
                    "members": description.map(|g| g.members).unwrap_or_default(),
                    "total_lag": total,
                    "partitions": lag,
                }))?
            );
        }
        GroupsCommand::Lag { group, topic } => {
            let topics: Vec<&str> = topic.iter().map(String::as_str).collect();
            for lag in admin.group_lag(&group, &topics).await? {
                println!("{}", serde_json::to_string(&lag)?);
            }
        }
    }
    Ok(())
}
