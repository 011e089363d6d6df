//! `kafkit broker`: the embedded development broker on its own, until Ctrl-C.

use kafkit::{Admin, EmbeddedBroker, KafkaConfig};

use crate::cli::BrokerArgs;

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let broker = std::sync::Arc::new(EmbeddedBroker::start(1)?);
    let address = broker.bootstrap_servers().to_owned();
    if !args.topics.is_empty() {
        Admin::new(&KafkaConfig::new([address.clone()]))?
            .with_embedded(broker.clone())
            .ensure_topics(&args.topics)
            .await?;
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
    drop(broker);
    Ok(())
}
