//! Command-line definitions. Flags fall back to the same `KAFKA_*` / `KAFKIT_*` variables the
//! library reads, so a flag and its variable always agree.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

/// kafkit: a Kafka toolkit and HTTP gateway.
#[derive(Debug, Parser)]
#[command(name = "kafkit", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "KAFKIT_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the brokers are; every other `KAFKA_*` variable is read from the environment.
#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// Bootstrap servers, comma-separated (`host:port,...`).
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP gateway (embedded development broker when KAFKA_BROKERS is unset).
    Serve(ServeArgs),
    /// Produce records: one value per stdin line, or --value.
    Produce(ProduceArgs),
    /// Consume records and print one JSON object per record.
    Consume(ConsumeArgs),
    /// List, create and describe topics.
    Topics {
        /// Connection.
        #[command(flatten)]
        connection: Connection,
        /// What to do.
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// List consumer groups and show their lag.
    Groups {
        /// Connection.
        #[command(flatten)]
        connection: Connection,
        /// What to do.
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// Browse dead-letter topics and replay their records to the original topics.
    Dlt {
        /// Connection.
        #[command(flatten)]
        connection: Connection,
        /// What to do.
        #[command(subcommand)]
        command: DltCommand,
    },
    /// Start the embedded development broker alone and print its address.
    Broker(BrokerArgs),
}

/// `kafkit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Connection.
    #[command(flatten)]
    pub connection: Connection,
    /// Address the HTTP server listens on.
    #[arg(long, env = "KAFKIT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Topics to create on start, as NAME or NAME:PARTITIONS (comma-separated).
    #[arg(long, env = "KAFKIT_TOPICS", value_delimiter = ',', value_parser = parse_topic_spec)]
    pub topics: Vec<kafkit::TopicSpec>,
    /// API keys and their topic grants: `KEY:write=GLOB|GLOB,read=GLOB;KEY2:read=*`
    /// (see the README). Unset: no authentication, loopback only. A flag's value shows in
    /// `ps`: prefer the variable or --api-keys-file.
    #[arg(long, env = "KAFKIT_API_KEYS", hide_env_values = true, value_parser = parse_secret)]
    pub api_keys: Option<kafkit::secret::Secret>,
    /// File holding the API keys, in the format of --api-keys (entries separated by `;` or
    /// new lines; lines starting with `#` are comments).
    #[arg(long, env = "KAFKIT_API_KEYS_FILE", conflicts_with = "api_keys")]
    pub api_keys_file: Option<PathBuf>,
    /// Serve without API keys on a non-loopback address (anyone reaching it can produce).
    #[arg(long, env = "KAFKIT_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Host names the gateway answers to (comma-separated; `*.domain` for its subdomains; `*`
    /// for any): a request naming another host in `Host` is refused (403), against DNS
    /// rebinding, and so is a state-changing request a browser sends from another site's page
    /// (`Origin`). Default: the loopback names (localhost, 127.0.0.1, ::1) and the listen
    /// address; any host when listening on every address (0.0.0.0, ::) with API keys.
    #[arg(long, env = "KAFKIT_ALLOWED_HOSTS", value_parser = parse_allowed_hosts)]
    pub allowed_hosts: Option<kafkit_gateway::AllowedHosts>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, env = "KAFKIT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KAFKIT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Longest an HTTP request may take before a 503 `request_timeout` (milliseconds).
    #[arg(long, env = "KAFKIT_REQUEST_TIMEOUT", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// Longest a connection may go with no request in flight (milliseconds): the TLS
    /// handshake, before the first byte, sending a request's headers, idle between requests
    /// (HTTP/1 and HTTP/2), and a response write the client does not read.
    #[arg(long, env = "KAFKIT_HEADER_TIMEOUT", default_value_t = 60_000)]
    pub header_timeout_ms: u64,
    /// Most connections served at once; more are closed at accept.
    #[arg(long, env = "KAFKIT_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Compacted topic through which gateway replicas share their idempotency answers and
    /// claims, so a retry landing on another replica replays the first answer (or is told the
    /// first send is in progress); `none`: kept per process.
    #[arg(long, env = "KAFKIT_IDEMPOTENCY_TOPIC", default_value = kafkit_gateway::DEFAULT_ANSWER_TOPIC)]
    pub idempotency_topic: String,
    /// Longest wait for requests in flight at shutdown before connections are closed
    /// (milliseconds).
    #[arg(long, env = "KAFKIT_DRAIN_TIMEOUT", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    /// Push subscriptions file (TOML, `[[subscription]]` tables; see the README): each
    /// subscription consumes its topics and POSTs every record to its endpoint.
    #[arg(long, env = "KAFKIT_SUBSCRIPTIONS")]
    pub subscriptions: Option<PathBuf>,
}

/// Wraps a secret flag value so it never reaches `Debug` output.
fn parse_secret(raw: &str) -> Result<kafkit::secret::Secret, String> {
    Ok(kafkit::secret::Secret::new(raw))
}

/// `kafkit produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Connection.
    #[command(flatten)]
    pub connection: Connection,
    /// Destination topic.
    #[arg(long, short)]
    pub topic: String,
    /// Key of every record.
    #[arg(long, short)]
    pub key: Option<String>,
    /// Header `name=value`; repeatable.
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Partition to write to (otherwise the partitioner picks).
    #[arg(long, short)]
    pub partition: Option<i32>,
    /// One value to send instead of reading stdin.
    #[arg(long)]
    pub value: Option<String>,
}

/// `kafkit consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Connection.
    #[command(flatten)]
    pub connection: Connection,
    /// Topic to read.
    #[arg(long, short)]
    pub topic: String,
    /// Consume as a member of this group and commit what was printed; otherwise read every
    /// partition without a group.
    #[arg(long, short)]
    pub group: Option<String>,
    /// Start at the oldest record (default: only new records, or the group's position).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<usize>,
    /// Stop when no record arrived for this many milliseconds.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Which records of transactions to print: `read-committed` (committed ones only, the
    /// default unless `KAFKA_ISOLATION_LEVEL` says otherwise) or `read-uncommitted` (aborted
    /// and open ones too).
    #[arg(long, value_enum)]
    pub isolation: Option<IsolationArg>,
}

/// `--isolation`: what a reader sees of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// Records of committed transactions (and non-transactional ones) only.
    ReadCommitted,
    /// Every record written, aborted and open transactions included.
    ReadUncommitted,
}

impl From<IsolationArg> for kafkit::config::Isolation {
    fn from(arg: IsolationArg) -> Self {
        match arg {
            IsolationArg::ReadCommitted => kafkit::config::Isolation::ReadCommitted,
            IsolationArg::ReadUncommitted => kafkit::config::Isolation::ReadUncommitted,
        }
    }
}

/// `kafkit topics …`.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// List topics with partition counts and record counts.
    List,
    /// Create a topic (no error if it exists).
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, short, default_value_t = 1)]
        replication_factor: i32,
        /// Topic config `key=value`; repeatable.
        #[arg(long = "config", short = 'c', value_parser = parse_header)]
        configs: Vec<(String, String)>,
    },
    /// Show partitions, leaders, watermarks and configs of a topic.
    Describe {
        /// Topic name.
        name: String,
    },
}

/// `kafkit groups …`.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups.
    List,
    /// State and member count of a group, with its committed offsets and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Committed offsets and lag of a group, per partition.
    Lag {
        /// Group id.
        group: String,
        /// Only these topics (default: every topic where the group committed).
        #[arg(long, short)]
        topic: Vec<String>,
    },
}

/// `kafkit dlt …`.
#[derive(Debug, Subcommand)]
pub enum DltCommand {
    /// Print dead-lettered records (oldest first) with their failure headers.
    List {
        /// The dead-letter topic, e.g. `orders.dlq`.
        topic: String,
        /// At most this many records.
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
    },
    /// Re-publish records to their original topics (from the original-topic headers, also
    /// Spring's and Karafka's); safe to re-run, it continues where the last run stopped.
    Replay {
        /// The dead-letter topic, e.g. `orders.dlq`.
        topic: String,
        /// At most this many records.
        #[arg(long, short = 'n', default_value_t = 10_000)]
        limit: usize,
        /// Replay each record to whatever its original-topic header names, even a topic the
        /// dead-letter topic does not serve (the header can be forged by anyone who can write
        /// to the dead-letter topic: use only when you trust it).
        #[arg(long)]
        any_destination: bool,
        /// Instead of the next records: these records (PARTITION/OFFSET, comma-separated),
        /// even those replayed or passed over for good before (the replay reports name them,
        /// e.g. when their topic was missing); each is published again.
        #[arg(long, value_delimiter = ',', value_parser = parse_record_at)]
        again: Vec<(i32, i64)>,
    },
}

/// Parses `PARTITION/OFFSET`.
fn parse_record_at(text: &str) -> Result<(i32, i64), String> {
    let (partition, offset) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected PARTITION/OFFSET, e.g. 0/42"))?;
    let partition = partition
        .parse()
        .map_err(|e| format!("{text:?}: partition: {e}"))?;
    let offset = offset
        .parse()
        .map_err(|e| format!("{text:?}: offset: {e}"))?;
    Ok((partition, offset))
}

/// `kafkit broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Topics to create, as NAME or NAME:PARTITIONS (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_topic_spec)]
    pub topics: Vec<kafkit::TopicSpec>,
    /// Also write the address to this file (for scripts).
    #[arg(long)]
    pub address_file: Option<PathBuf>,
}

/// Parses `name=value`.
fn parse_header(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected name=value, got {raw:?}"))
}

/// Parses `NAME` or `NAME:PARTITIONS`, at the command line, so a bad value is refused before
/// anything starts.
fn parse_topic_spec(raw: &str) -> Result<kafkit::TopicSpec, String> {
    let (name, partitions) = match raw.split_once(':') {
        None => (raw, 1),
        Some((name, partitions)) => match partitions.parse::<i32>() {
            Ok(n) if n > 0 => (name, n),
            _ => {
                return Err(format!(
                    "expected NAME or NAME:PARTITIONS (PARTITIONS > 0), got {raw:?}"
                ));
            }
        },
    };
    kafkit::record::validate_topic(name).map_err(|e| e.to_string())?;
    Ok(kafkit::TopicSpec::new(name, partitions))
}

fn parse_allowed_hosts(list: &str) -> Result<kafkit_gateway::AllowedHosts, String> {
    kafkit_gateway::AllowedHosts::parse(list)
}
