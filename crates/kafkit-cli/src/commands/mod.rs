//! One module per subcommand; `run` dispatches.

mod broker;
mod consume;
mod dlt;
mod groups;
mod produce;
mod serve;
mod topics;

use anyhow::{Context, bail};
use kafkit::{Kafka, KafkaConfig};

use crate::cli::{Cli, Command, Connection};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Topics {
            connection,
            command,
        } => topics::run(&connection, command).await,
        Command::Groups {
            connection,
            command,
        } => groups::run(&connection, command).await,
        Command::Dlt {
            connection,
            command,
        } => dlt::run(&connection, command).await,
        Command::Broker(args) => broker::run(args).await,
    }
}

/// `KAFKA_*` configuration with `--brokers` applied; brokers may be empty (embedded broker).
pub fn config(connection: &Connection) -> anyhow::Result<KafkaConfig> {
    let mut config = KafkaConfig::from_env().context("reading KAFKA_* configuration")?;
    if let Some(brokers) = &connection.brokers {
        config.brokers = kafkit::config::parse_brokers(brokers).context("reading --brokers")?;
    }
    Ok(config)
}

/// Like [`config`], for commands that need a running cluster.
pub fn remote_config(connection: &Connection) -> anyhow::Result<KafkaConfig> {
    let config = config(connection)?;
    if config.brokers.is_empty() {
        bail!(
            "KAFKA_BROKERS is not set (nor --brokers): this command needs a running cluster. \
             For a local one run `kafkit broker` and export the address it prints."
        );
    }
    Ok(config)
}

/// The cluster of [`remote_config`], for commands that need a running one.
pub fn remote(connection: &Connection) -> anyhow::Result<Kafka> {
    Ok(Kafka::connect(&remote_config(connection)?)?)
}
