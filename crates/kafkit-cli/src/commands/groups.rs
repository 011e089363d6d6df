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
        GroupsCommand::Lag { group, topic } => {
            let topics: Vec<&str> = topic.iter().map(String::as_str).collect();
            for lag in admin.group_lag(&group, &topics).await? {
                println!("{}", serde_json::to_string(&lag)?);
            }
        }
    }
    Ok(())
}
