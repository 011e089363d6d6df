//! `kafkit broker`: the embedded development broker on its own, until Ctrl-C.

use kafkit::{Kafka, KafkaConfig};

use crate::cli::BrokerArgs;

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    // A configuration naming no brokers: the embedded one starts.
    let kafka = Kafka::connect(&KafkaConfig::default())?;
    let address = kafka.cluster().bootstrap_servers();
    if !args.topics.is_empty() {
        kafka.admin()?.ensure_topics(&args.topics).await?;
    }
    if let Some(path) = &args.address_file {
        std::fs::write(path, &address)?;
    }
    println!("{address}");
    eprintln!(
        "embedded development broker listening on {address} ({}); Ctrl-C stops it",
        kafkit::cluster::EMBEDDED_LIMITS
    );
    kafkit::shutdown::signal().await;
    drop(kafka);
    Ok(())
}
