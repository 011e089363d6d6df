//! `kafkit groups list|lag`.

use kafkit::Admin;

use crate::cli::{Connection, GroupsCommand};

pub async fn run(connection: &Connection, command: GroupsCommand) -> anyhow::Result<()> {
    let admin = Admin::new(&super::remote_config(connection)?)?;
    match command {
        GroupsCommand::List => {
            for group in admin.list_groups().await? {
                println!("{}", serde_json::to_string(&group)?);
            }
        }
        GroupsCommand::Describe { group } => {
            let info = admin
                .list_groups()
                .await?
                .into_iter()
                .find(|g| g.name == group);
            let lag = admin.group_lag(&group, &[]).await?;
            anyhow::ensure!(
                info.is_some() || !lag.is_empty(),
                "group {group} is unknown to the cluster"
            );
            let total: i64 = lag.iter().map(|l| l.lag).sum();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "group": group,
                    "state": info.as_ref().map(|g| g.state.clone()),
                    "members": info.as_ref().map(|g| g.members),
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
