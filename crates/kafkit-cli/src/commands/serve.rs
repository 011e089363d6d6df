//! `kafkit serve`: the gateway library (`kafkit-gateway`) wired to the command line and the
//! environment: API keys, listener, TLS, the cluster (or the embedded broker), `--topics`,
//! signals, the push subscriptions (`--subscriptions`), and the producer flush after the last
//! request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kafkit::Kafka;
use kafkit_gateway::push::{Runner, Validated};
use kafkit_gateway::{AllowedHosts, ApiKeys, AppState, ServerLimits, Timeouts};
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;

/// Runs the gateway until SIGINT/SIGTERM, then stops accepting, finishes in-flight requests and
/// flushes the producer.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = super::config(&args.connection)?;
    if !config.enabled {
        tracing::warn!("KAFKA_ENABLED=false: the gateway has nothing to serve; exiting");
        return Ok(());
    }
    // One stop for all: a signal, or a subscription that fails for good. Installed first, so
    // that a SIGTERM during start-up stops the process cleanly.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            kafkit::shutdown::signal().await;
            stop.cancel();
        }
    });
    let keys = api_keys(&args)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    check_exposure(&args, local, keys.is_some())?;
    // The subscriptions are checked before anything connects: a typo fails the start at once.
    let subscriptions = read_subscriptions(&args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(kafkit_gateway::load_tls(cert, key).await?),
        _ => None,
    };

    let kafka = Kafka::connect(&config)?;
    let authenticated = keys.is_some();
    let allowed_hosts = allowed_hosts(args.allowed_hosts.clone(), local.ip(), authenticated);
    let mut state = gateway_state(&kafka, &args, keys, allowed_hosts.clone())?;
    share_answers(&state, &kafka, &args.idempotency_topic).await;
    if !args.topics.is_empty() {
        state
            .admin()
            .ensure_topics(&args.topics)
            .await
            .context("creating --topics")?;
    }
    let push = match subscriptions {
        Some(subscriptions) => {
            let runner = start_push(&kafka, subscriptions, &state)?;
            state = state.with_push(runner.clone());
            Some(runner)
        }
        None => None,
    };
    tracing::info!(
        listen = %local,
        console = %format!(
            "{}://{local}{}",
            if tls.is_some() { "https" } else { "http" },
            kafkit_gateway::CONSOLE_PATH
        ),
        brokers = %kafka.cluster().bootstrap_servers(),
        embedded = kafka.cluster().embedded().is_some(),
        tls = tls.is_some(),
        authenticated,
        allowed_hosts = %allowed_hosts,
        "kafkit gateway ready"
    );
    serve_until_stopped(listener, &state, tls, push, &stop).await?;
    tracing::info!("gateway stopped cleanly");
    drop(kafka);
    Ok(())
}

/// Serves HTTP(S) and runs the push subscriptions until `stop`, then flushes every producer.
async fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    state: &AppState,
    tls: Option<kafkit_gateway::RustlsConfig>,
    push: Option<Arc<Runner>>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let gateway = async {
        let shutdown = stop.clone().cancelled_owned();
        match tls {
            Some(tls) => kafkit_gateway::serve_tls(listener, state.clone(), tls, shutdown).await,
            None => kafkit_gateway::serve(listener, state.clone(), shutdown).await,
        }
    };
    let deliveries = async {
        match &push {
            Some(runner) => runner.run(stop.clone()).await,
            None => Ok(()),
        }
    };
    let (served, delivered) = tokio::join!(gateway, deliveries);
    served?;
    delivered?;
    state.shutdown().await?;
    Ok(())
}

/// The gateway's state on `kafka` with the limits, keys and allowed hosts of the command line.
fn gateway_state(
    kafka: &Kafka,
    args: &ServeArgs,
    keys: Option<ApiKeys>,
    allowed_hosts: AllowedHosts,
) -> anyhow::Result<AppState> {
    let limits = Timeouts {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        ..Timeouts::from_config(kafka.config())
    };
    let server = ServerLimits {
        header_read_timeout: Duration::from_millis(args.header_timeout_ms),
        max_connections: args.max_connections,
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        ..ServerLimits::default()
    };
    let state = AppState::new(kafka)?
        .with_timeouts(limits)
        .with_server_limits(server)
        .with_allowed_hosts(allowed_hosts);
    Ok(match keys {
        Some(keys) => state.with_api_keys(keys),
        None => state,
    })
}

/// Refuses an open gateway on a non-loopback address unless told to allow it, and warns when
/// API keys would travel in clear.
fn check_exposure(args: &ServeArgs, local: SocketAddr, keyed: bool) -> anyhow::Result<()> {
    if !keyed && !local.ip().is_loopback() {
        if !args.allow_unauthenticated {
            bail!(
                "refusing to serve {local} without API keys: anyone reaching it could produce. \
                 Set KAFKIT_API_KEYS, listen on a loopback address, or pass \
                 --allow-unauthenticated (KAFKIT_ALLOW_UNAUTHENTICATED=true)"
            );
        }
        tracing::warn!(listen = %local, "serving without API keys on a non-loopback address");
    }
    let tls_given = args.tls_cert.is_some();
    if keyed && !tls_given && !local.ip().is_loopback() {
        tracing::warn!(
            listen = %local,
            "API keys travel in clear over plain HTTP on a non-loopback address: anyone on \
             the path can read them; serve HTTPS (--tls-cert, --tls-key) or put a TLS proxy \
             in front"
        );
    }
    Ok(())
}

/// The push subscriptions of `--subscriptions`, checked before anything connects: a typo fails
/// the start at once.
fn read_subscriptions(args: &ServeArgs) -> anyhow::Result<Option<Vec<Validated>>> {
    let Some(path) = &args.subscriptions else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --subscriptions {}", path.display()))?;
    let parsed = kafkit_gateway::push::parse(&text, |name| std::env::var(name).ok())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(parsed))
}

/// Replicas share their idempotency answers through the compacted `topic` (`none`: each keeps
/// its own; the embedded development broker runs alone, nothing to share). Read before
/// announcing readiness; brokers not answering within a few seconds do not hold the start-up
/// (readiness waits for the answers instead).
async fn share_answers(state: &AppState, kafka: &Kafka, topic: &str) {
    if kafka.cluster().embedded().is_some() || topic == "none" {
        return;
    }
    match tokio::time::timeout(Duration::from_secs(5), state.share_answers(kafka, topic)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, topic, "cannot share idempotency answers yet; retrying");
            state.share_answers_in_background(kafka.clone(), topic.to_owned());
        }
        Err(_) => state.share_answers_in_background(kafka.clone(), topic.to_owned()),
    }
}

/// The runner of the push subscriptions, reporting in `state`'s metrics.
fn start_push(
    kafka: &Kafka,
    subscriptions: Vec<Validated>,
    state: &AppState,
) -> anyhow::Result<Arc<Runner>> {
    let names: Vec<String> = subscriptions
        .iter()
        .map(|s| s.subscription.name.clone())
        .collect();
    let runner = Runner::new(kafka, subscriptions, state.metrics())?;
    tracing::info!(subscriptions = ?names, "push subscriptions starting");
    Ok(Arc::new(runner))
}

/// The API keys of `--api-keys-file` (KAFKIT_API_KEYS_FILE), else of `--api-keys`
/// (KAFKIT_API_KEYS); none when neither is given. A weak key refuses the start.
fn api_keys(args: &ServeArgs) -> anyhow::Result<Option<ApiKeys>> {
    let (source, raw) = match (&args.api_keys_file, &args.api_keys) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --api-keys-file {}", path.display()))?;
            // One entry a line is allowed; comments are dropped.
            let entries: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.starts_with('#'))
                .collect();
            (path.display().to_string(), entries.join(";"))
        }
        (None, Some(raw)) => ("KAFKIT_API_KEYS".to_owned(), raw.expose().to_owned()),
        (None, None) => return Ok(None),
    };
    let keys = ApiKeys::parse(&raw).map_err(|reason| anyhow!("{source}: {reason}"))?;
    if let Some(weak) = keys.weak_key() {
        bail!(
            "{source}: {weak} is too weak: {}",
            kafkit_gateway::WEAK_KEY_RULE
        );
    }
    Ok(Some(keys))
}

/// The hosts the gateway answers to: `--allowed-hosts`, else the loopback names and the listen
/// address. Listening on every address with API keys, any host (clients use names the gateway
/// cannot know, and a rebound page has no key); an open gateway on every address still only
/// answers the loopback names unless told.
fn allowed_hosts(
    given: Option<AllowedHosts>,
    listen: std::net::IpAddr,
    keyed: bool,
) -> AllowedHosts {
    match given {
        Some(hosts) => hosts,
        None if listen.is_unspecified() && keyed => AllowedHosts::any(),
        None => AllowedHosts::loopback_and(listen),
    }
}
