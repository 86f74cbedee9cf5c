//! Settings: command-line flags > `FLAGSTAFF_*` environment variables > TOML
//! file (`--config`) > defaults. Every setting has one definition here; the
//! help text and the file keys come from it.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::protocol::DecoderLimits;

/// Largest `--max-entry-bytes` accepted. The write-ahead log frames a record
/// with a 32-bit length and the cluster bus admits one entry of this size, so
/// the ceiling keeps every accepted entry writable, replayable and replicable.
pub const MAX_ENTRY_BYTES_CEILING: u64 = 2 * 1024 * 1024 * 1024;

/// Smallest `--max-entry-bytes` accepted (a few ordinary flags must fit).
pub const MAX_ENTRY_BYTES_FLOOR: u64 = 64 * 1024;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A length of time in seconds, written as days (`30`) or with a unit
/// (`90s`, `15m`, `12h`, `30d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Span(pub u64);

impl Span {
    /// In milliseconds.
    pub fn millis(self) -> u64 {
        self.0.saturating_mul(1000)
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, "d"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("'{s}' is not a duration like 30d, 12h, 15m or 90s"))?;
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("'{s}': the unit must be s, m, h or d")),
        };
        Ok(Span(n.saturating_mul(unit)))
    }
}

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// When a write reaches the disk before it is acknowledged (Redis `appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fdatasync before acknowledging (group commit shares one sync among concurrent writes).
    Always,
    /// Acknowledge once the OS has the bytes; fdatasync once a second. A process
    /// crash loses nothing; a power loss can lose the last second.
    Everysec,
}

/// Whether TLS clients must present a certificate (Redis `tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsAuthClients {
    /// A certificate that chains to the CA is required.
    Yes,
    /// No certificate is asked for.
    No,
    /// A certificate is verified if sent, not required.
    Optional,
}

/// Whether a verified client certificate logs the connection in (Redis 8.6
/// `tls-auth-clients-user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsAuthClientsUser {
    /// Certificates only open the connection; AUTH as usual.
    Off,
    /// The certificate's subject CN names the ACL user the connection acts as.
    #[value(name = "cn", alias = "CN")]
    Cn,
}

/// Command-line flags; each is also read from `FLAGSTAFF_<NAME>`.
#[derive(Debug, Parser)]
#[command(
    name = "flagstaff",
    version,
    about = "Feature-flag and remote-config daemon that speaks the Redis protocol",
    long_about = "Feature-flag and remote-config daemon that speaks the Redis protocol.\n\nSettings come from flags, then FLAGSTAFF_* environment variables, then the TOML file given with --config (keys are the flag names, e.g. `port = 6390`), then defaults."
)]
pub struct Cli {
    /// Backup tools; without one, run the server.
    #[command(subcommand)]
    pub tool: Option<Tool>,
    /// Address to listen on for clients [default: 127.0.0.1]
    #[arg(long, env = "FLAGSTAFF_BIND")]
    pub bind: Option<String>,
    /// Port to listen on for plaintext clients; 0 serves TLS only (needs --tls-port) [default: 6390]
    #[arg(long, env = "FLAGSTAFF_PORT")]
    pub port: Option<u16>,
    /// Directory for persistent data, created if missing [default: ./data]
    #[arg(long, env = "FLAGSTAFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with settings (keys as the flag names)
    #[arg(long, env = "FLAGSTAFF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info]
    #[arg(long, env = "FLAGSTAFF_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format [default: text]
    #[arg(long, env = "FLAGSTAFF_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Password clients must give with AUTH or HELLO (none: protected mode, loopback clients only)
    #[arg(long, env = "FLAGSTAFF_REQUIREPASS")]
    pub requirepass: Option<String>,
    /// ACL file in Redis's format: seeds the users while the cluster has none; ACL LOAD/SAVE use it
    #[arg(long, env = "FLAGSTAFF_ACLFILE")]
    pub aclfile: Option<PathBuf>,
    /// ACL user (with @flag-admin) a joining node logs in as at the member it joins through [default: default]
    #[arg(long, env = "FLAGSTAFF_JOIN_USER")]
    pub join_user: Option<String>,
    /// Password of --join-user [default: --requirepass]
    #[arg(long, env = "FLAGSTAFF_JOIN_PASSWORD")]
    pub join_password: Option<String>,
    /// Most simultaneous client connections [default: 10000]
    #[arg(long, env = "FLAGSTAFF_MAXCLIENTS")]
    pub maxclients: Option<usize>,
    /// Close client connections idle for this many seconds; 0 disables [default: 0]
    #[arg(long, env = "FLAGSTAFF_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Seconds to let in-flight commands finish on shutdown [default: 10]
    #[arg(long, env = "FLAGSTAFF_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
    /// Largest bulk string a client may send, in bytes [default: 536870912]
    #[arg(long, env = "FLAGSTAFF_PROTO_MAX_BULK_LEN")]
    pub proto_max_bulk_len: Option<usize>,
    /// Most arguments in one request [default: 1048576]
    #[arg(long, env = "FLAGSTAFF_MAX_MULTIBULK_LEN")]
    pub max_multibulk_len: Option<usize>,
    /// Most bytes one request may occupy while it arrives [default: 1073741824]
    #[arg(long, env = "FLAGSTAFF_CLIENT_QUERY_BUFFER_LIMIT")]
    pub client_query_buffer_limit: Option<usize>,
    /// Largest raft entry, in bytes as written to the log: a write (a command, a FLAG.IMPORT, one EXEC) that would exceed it is refused before anything is acknowledged [default: 536870912]
    #[arg(long, env = "FLAGSTAFF_MAX_ENTRY_BYTES")]
    pub max_entry_bytes: Option<u64>,
    /// Worker threads serving clients; 1 runs everything on one thread, which is fastest on 2 cores [default: 1]
    #[arg(long, env = "FLAGSTAFF_THREADS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
    /// This node's id in its cluster; a data dir belongs to one node id [default: 1]
    #[arg(long, env = "FLAGSTAFF_NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,
    /// When writes reach the disk: always (fdatasync before the reply) or everysec [default: always]
    #[arg(long, env = "FLAGSTAFF_FSYNC")]
    pub fsync: Option<FsyncMode>,
    /// Snapshot the state and compact the log every this many log entries [default: 10000]
    #[arg(long, env = "FLAGSTAFF_SNAPSHOT_EVERY", value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: Option<u64>,
    /// Audit records (FLAG.HISTORY) kept per flag or segment [default: 100]
    #[arg(long, env = "FLAGSTAFF_AUDIT_RETENTION")]
    pub audit_retention: Option<usize>,
    /// Days of hourly evaluation statistics (FLAG.STATS) kept on this node [default: 30]
    #[arg(long, env = "FLAGSTAFF_STATS_RETENTION", value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_retention: Option<u64>,
    /// How long flagstaff:events keeps an event and experiments keep a unit's id: a number of days, or with a unit (s, m, h, d) [default: 30d]
    #[arg(long, env = "FLAGSTAFF_EVENTS_RETENTION")]
    pub events_retention: Option<Span>,
    /// Most entries flagstaff:events keeps on this node [default: 100000]
    #[arg(long, env = "FLAGSTAFF_EVENTS_MAX_LEN", value_parser = clap::value_parser!(u64).range(1..))]
    pub events_max_len: Option<u64>,
    /// Share of evaluations written to flagstaff:events as eval events, 0 (off) to 1 [default: 0]
    #[arg(long, env = "FLAGSTAFF_EVAL_LOG_SAMPLE")]
    pub eval_log_sample: Option<f64>,
    /// Milliseconds a write may take before it is answered -TIMEOUT (outcome unknown) [default: 5000]
    #[arg(long, env = "FLAGSTAFF_WRITE_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_ms: Option<u64>,
    /// Pub/sub output buffer: disconnect a subscriber above this many bytes, 0 for no limit [default: 33554432]
    #[arg(long, env = "FLAGSTAFF_PUBSUB_HARD_LIMIT")]
    pub pubsub_hard_limit: Option<usize>,
    /// Pub/sub output buffer: disconnect a subscriber above this many bytes for --pubsub-soft-seconds [default: 8388608]
    #[arg(long, env = "FLAGSTAFF_PUBSUB_SOFT_LIMIT")]
    pub pubsub_soft_limit: Option<usize>,
    /// Seconds a subscriber may stay above the soft limit [default: 60]
    #[arg(long, env = "FLAGSTAFF_PUBSUB_SOFT_SECONDS")]
    pub pubsub_soft_seconds: Option<u64>,
    /// Output buffer of a normal client: disconnect it when replies it has not read pass this many bytes, 0 for no limit [default: 0]
    #[arg(long, env = "FLAGSTAFF_CLIENT_HARD_LIMIT")]
    pub client_hard_limit: Option<usize>,
    /// Output buffer of a normal client: disconnect it above this many unread bytes for --client-soft-seconds, 0 for no limit [default: 0]
    #[arg(long, env = "FLAGSTAFF_CLIENT_SOFT_LIMIT")]
    pub client_soft_limit: Option<usize>,
    /// Seconds a normal client may stay above the soft limit [default: 0]
    #[arg(long, env = "FLAGSTAFF_CLIENT_SOFT_SECONDS")]
    pub client_soft_seconds: Option<u64>,
    /// Port of the cluster bus (raft between nodes); opened only when this or --join is given [default: port + 10000]
    #[arg(long, env = "FLAGSTAFF_CLUSTER_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub cluster_port: Option<u16>,
    /// Secret every member of the cluster shares; required for any multi-node use
    #[arg(long, env = "FLAGSTAFF_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,
    /// Host other nodes and redirected clients reach this node at [default: the bind address]
    #[arg(long, env = "FLAGSTAFF_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Client address (host:port) of any member of the cluster to join; ignored once this node has data
    #[arg(long, env = "FLAGSTAFF_JOIN")]
    pub join: Option<String>,
    /// With --join: stay a non-voting learner (a read replica, e.g. in another region)
    #[arg(long, env = "FLAGSTAFF_LEARNER")]
    pub learner: bool,
    /// Milliseconds between leader heartbeats; also the replication RPC timeout [default: 100]
    #[arg(long, env = "FLAGSTAFF_HEARTBEAT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: Option<u64>,
    /// Milliseconds without a leader before a follower calls an election (randomised up to 1.5 times this; openraft adds its leader lease of that maximum) [default: 200]
    #[arg(long, env = "FLAGSTAFF_ELECTION_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub election_timeout_ms: Option<u64>,
    /// Milliseconds without leader contact (or, for a leader, without a majority) before the node reports itself stale [default: 1000]
    #[arg(long, env = "FLAGSTAFF_STALE_AFTER_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub stale_after_ms: Option<u64>,
    /// HTTP port (OFREP, /metrics, /livez, /readyz) on the same bind address; 0 turns HTTP off [default: port + 1000]
    #[arg(long, env = "FLAGSTAFF_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Whether GET /metrics needs the same credentials as OFREP (yes or no) [default: no]
    #[arg(long, env = "FLAGSTAFF_METRICS_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_auth: Option<bool>,
    /// Origins browsers may call the HTTP port from (comma-separated, `*` for any); empty: no cross-origin access
    #[arg(long, env = "FLAGSTAFF_HTTP_CORS_ORIGINS", value_delimiter = ',')]
    pub http_cors_origins: Option<Vec<String>>,
    /// HTTP requests per second each user may make (token bucket, bursts up to one second's worth); 0: no limit [default: 0]
    #[arg(long, env = "FLAGSTAFF_HTTP_RATE_LIMIT")]
    pub http_rate_limit: Option<u32>,
    /// Port to listen on for TLS clients, beside --port (0 or absent: no TLS listener)
    #[arg(long, env = "FLAGSTAFF_TLS_PORT")]
    pub tls_port: Option<u16>,
    /// PEM certificate chain this node presents (to clients, HTTPS, and peers with --tls-cluster)
    #[arg(long, env = "FLAGSTAFF_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "FLAGSTAFF_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that client and peer certificates must chain to
    #[arg(long, env = "FLAGSTAFF_TLS_CA_CERT_FILE")]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Client certificates on TLS connections: yes (required), no, optional [default: yes with --tls-ca-cert-file, else no]
    #[arg(long, env = "FLAGSTAFF_TLS_AUTH_CLIENTS")]
    pub tls_auth_clients: Option<TlsAuthClients>,
    /// off, or CN: a verified client certificate's subject CN logs the connection in as the ACL user of that name (which must exist and be on) [default: off]
    #[arg(long, env = "FLAGSTAFF_TLS_AUTH_CLIENTS_USER")]
    pub tls_auth_clients_user: Option<TlsAuthClientsUser>,
    /// Serve the HTTP port over TLS (HTTPS) with the same certificate (yes or no) [default: no]
    #[arg(long, env = "FLAGSTAFF_TLS_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub tls_http: Option<bool>,
    /// Run the cluster bus (and the --join request) over mutual TLS: members present --tls-cert-file and must chain to --tls-ca-cert-file (yes or no) [default: no]
    #[arg(long, env = "FLAGSTAFF_TLS_CLUSTER", value_parser = clap::builder::BoolishValueParser::new())]
    pub tls_cluster: Option<bool>,
    /// Seconds a console login session lasts without a request before it expires [default: 28800]
    #[arg(long, env = "FLAGSTAFF_SESSION_TTL", value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl: Option<u64>,
}

/// Tools that talk to a running server instead of being one.
#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// Write every flag and segment (FLAG.DUMP) of a running server to stdout.
    Export {
        /// The server's client address.
        #[arg(long, default_value = "127.0.0.1:6390")]
        addr: String,
        /// Password, if the server requires one.
        #[arg(long, env = "FLAGSTAFF_PASSWORD")]
        password: Option<String>,
        /// Only keys matching this glob.
        #[arg(long = "match")]
        pattern: Option<String>,
    },
    /// Restore a backup written by export: validated first, applied all or nothing.
    Import {
        /// The server's client address.
        #[arg(long, default_value = "127.0.0.1:6390")]
        addr: String,
        /// Password, if the server requires one.
        #[arg(long, env = "FLAGSTAFF_PASSWORD")]
        password: Option<String>,
        /// The backup file.
        file: String,
    },
}

/// The TOML file: the same keys as the flags, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    bind: Option<String>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    requirepass: Option<String>,
    aclfile: Option<PathBuf>,
    join_user: Option<String>,
    join_password: Option<String>,
    maxclients: Option<usize>,
    timeout: Option<u64>,
    shutdown_timeout: Option<u64>,
    proto_max_bulk_len: Option<usize>,
    max_multibulk_len: Option<usize>,
    client_query_buffer_limit: Option<usize>,
    max_entry_bytes: Option<u64>,
    threads: Option<u64>,
    node_id: Option<u64>,
    fsync: Option<FsyncMode>,
    snapshot_every: Option<u64>,
    audit_retention: Option<usize>,
    stats_retention: Option<u64>,
    events_retention: Option<Span>,
    events_max_len: Option<u64>,
    eval_log_sample: Option<f64>,
    write_timeout_ms: Option<u64>,
    pubsub_hard_limit: Option<usize>,
    pubsub_soft_limit: Option<usize>,
    pubsub_soft_seconds: Option<u64>,
    client_hard_limit: Option<usize>,
    client_soft_limit: Option<usize>,
    client_soft_seconds: Option<u64>,
    cluster_port: Option<u16>,
    cluster_secret: Option<String>,
    advertise_addr: Option<String>,
    join: Option<String>,
    learner: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    stale_after_ms: Option<u64>,
    http_port: Option<u16>,
    metrics_auth: Option<bool>,
    http_cors_origins: Option<Vec<String>>,
    http_rate_limit: Option<u32>,
    tls_port: Option<u16>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_ca_cert_file: Option<PathBuf>,
    tls_auth_clients: Option<TlsAuthClients>,
    tls_auth_clients_user: Option<TlsAuthClientsUser>,
    tls_http: Option<bool>,
    tls_cluster: Option<bool>,
    session_ttl: Option<u64>,
}

/// A configuration problem, worded as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid setting {name}: {why}")]
    Invalid {
        /// Setting name.
        name: &'static str,
        /// Why.
        why: String,
    },
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: String,
    /// Listen port.
    pub port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The config file used, if any.
    pub config_file: Option<PathBuf>,
    /// Log filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Password, if required.
    pub requirepass: Option<String>,
    /// ACL file, if any.
    pub aclfile: Option<PathBuf>,
    /// User a joining node logs in as.
    pub join_user: Option<String>,
    /// That user's password.
    pub join_password: Option<String>,
    /// Max client connections.
    pub maxclients: usize,
    /// Idle timeout in seconds (0: off).
    pub timeout: u64,
    /// Shutdown grace period in seconds.
    pub shutdown_timeout: u64,
    /// Max bulk length.
    pub proto_max_bulk_len: usize,
    /// Max arguments per request.
    pub max_multibulk_len: usize,
    /// Max bytes of one request in flight.
    pub client_query_buffer_limit: usize,
    /// Largest raft entry in bytes (serialized, as the log writes it).
    pub max_entry_bytes: u64,
    /// Runtime worker threads.
    pub threads: u64,
    /// Node id.
    pub node_id: u64,
    /// Fsync policy.
    pub fsync: FsyncMode,
    /// Entries between snapshots.
    pub snapshot_every: u64,
    /// Audit records kept per key.
    pub audit_retention: usize,
    /// Days of evaluation statistics kept.
    pub stats_retention: u64,
    /// How long events and experiment units are kept.
    pub events_retention: Span,
    /// Most entries in flagstaff:events.
    pub events_max_len: u64,
    /// Share of evaluations logged as events.
    pub eval_log_sample: f64,
    /// Write timeout in ms.
    pub write_timeout_ms: u64,
    /// Pub/sub hard output limit in bytes.
    pub pubsub_hard_limit: usize,
    /// Pub/sub soft output limit in bytes.
    pub pubsub_soft_limit: usize,
    /// Seconds over the soft limit before disconnecting.
    pub pubsub_soft_seconds: u64,
    /// Normal-client hard output limit in bytes (0: none).
    pub client_hard_limit: usize,
    /// Normal-client soft output limit in bytes (0: none).
    pub client_soft_limit: usize,
    /// Seconds a normal client may stay over its soft limit.
    pub client_soft_seconds: u64,
    /// Cluster bus port, when the bus listens.
    pub cluster_port: Option<u16>,
    /// Shared cluster secret.
    pub cluster_secret: Option<String>,
    /// Host advertised to peers and clients.
    pub advertise_addr: Option<String>,
    /// Member to join at first start.
    pub join: Option<String>,
    /// Join as a learner.
    pub learner: bool,
    /// Heartbeat interval in ms.
    pub heartbeat_ms: u64,
    /// Election timeout (lower bound) in ms.
    pub election_timeout_ms: u64,
    /// Staleness bound in ms.
    pub stale_after_ms: u64,
    /// HTTP port; 0 when HTTP is off.
    pub http_port: u16,
    /// Whether /metrics needs credentials.
    pub metrics_auth: bool,
    /// Origins allowed cross-origin access to the HTTP port (`*`: any).
    pub http_cors_origins: Vec<String>,
    /// HTTP requests per second per user; 0: unlimited.
    pub http_rate_limit: u32,
    /// TLS client port; 0 when there is no TLS listener.
    pub tls_port: u16,
    /// Certificate chain presented over TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key.
    pub tls_key_file: Option<PathBuf>,
    /// CA for client and peer certificates.
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Whether TLS clients need a certificate.
    pub tls_auth_clients: TlsAuthClients,
    /// Whether a client certificate's CN logs the connection in.
    pub tls_auth_clients_user: TlsAuthClientsUser,
    /// Whether the HTTP port speaks HTTPS.
    pub tls_http: bool,
    /// Whether the cluster bus and joins use mutual TLS.
    pub tls_cluster: bool,
    /// Seconds a console session lasts without a request.
    pub session_ttl: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "127.0.0.1".into(),
            port: 6390,
            data_dir: PathBuf::from("./data"),
            config_file: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            requirepass: None,
            aclfile: None,
            join_user: None,
            join_password: None,
            maxclients: 10_000,
            timeout: 0,
            shutdown_timeout: 10,
            proto_max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            max_entry_bytes: 512 * 1024 * 1024,
            threads: 1,
            node_id: 1,
            fsync: FsyncMode::Always,
            snapshot_every: 10_000,
            audit_retention: 100,
            stats_retention: 30,
            events_retention: Span(30 * 86_400),
            events_max_len: 100_000,
            eval_log_sample: 0.0,
            write_timeout_ms: 5000,
            pubsub_hard_limit: 32 * 1024 * 1024,
            pubsub_soft_limit: 8 * 1024 * 1024,
            pubsub_soft_seconds: 60,
            client_hard_limit: 0,
            client_soft_limit: 0,
            client_soft_seconds: 0,
            cluster_port: None,
            cluster_secret: None,
            advertise_addr: None,
            join: None,
            learner: false,
            heartbeat_ms: 100,
            election_timeout_ms: 200,
            stale_after_ms: 1000,
            http_port: 7390,
            metrics_auth: false,
            http_cors_origins: Vec::new(),
            http_rate_limit: 0,
            tls_port: 0,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_cert_file: None,
            tls_auth_clients: TlsAuthClients::No,
            tls_auth_clients_user: TlsAuthClientsUser::Off,
            tls_http: false,
            tls_cluster: false,
            session_ttl: 8 * 3600,
        }
    }
}

impl Settings {
    /// Resolves flags, environment (already folded into `cli` by clap), file and defaults.
    pub fn resolve(cli: Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Settings::default();
        let s = Settings {
            bind: cli.bind.or(file.bind).unwrap_or(d.bind),
            port: cli.port.or(file.port).unwrap_or(d.port),
            data_dir: cli.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            config_file: cli.config,
            log_level: cli.log_level.or(file.log_level).unwrap_or(d.log_level),
            log_format: cli.log_format.or(file.log_format).unwrap_or(d.log_format),
            requirepass: cli
                .requirepass
                .or(file.requirepass)
                .filter(|p| !p.is_empty()),
            aclfile: cli.aclfile.or(file.aclfile),
            join_user: cli.join_user.or(file.join_user),
            join_password: cli.join_password.or(file.join_password),
            maxclients: cli.maxclients.or(file.maxclients).unwrap_or(d.maxclients),
            timeout: cli.timeout.or(file.timeout).unwrap_or(d.timeout),
            shutdown_timeout: cli
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(d.shutdown_timeout),
            proto_max_bulk_len: cli
                .proto_max_bulk_len
                .or(file.proto_max_bulk_len)
                .unwrap_or(d.proto_max_bulk_len),
            max_multibulk_len: cli
                .max_multibulk_len
                .or(file.max_multibulk_len)
                .unwrap_or(d.max_multibulk_len),
            client_query_buffer_limit: cli
                .client_query_buffer_limit
                .or(file.client_query_buffer_limit)
                .unwrap_or(d.client_query_buffer_limit),
            max_entry_bytes: cli
                .max_entry_bytes
                .or(file.max_entry_bytes)
                .unwrap_or(d.max_entry_bytes),
            threads: cli.threads.or(file.threads).unwrap_or(d.threads),
            node_id: cli.node_id.or(file.node_id).unwrap_or(d.node_id),
            fsync: cli.fsync.or(file.fsync).unwrap_or(d.fsync),
            snapshot_every: cli
                .snapshot_every
                .or(file.snapshot_every)
                .unwrap_or(d.snapshot_every),
            audit_retention: cli
                .audit_retention
                .or(file.audit_retention)
                .unwrap_or(d.audit_retention),
            stats_retention: cli
                .stats_retention
                .or(file.stats_retention)
                .unwrap_or(d.stats_retention),
            events_retention: cli
                .events_retention
                .or(file.events_retention)
                .unwrap_or(d.events_retention),
            events_max_len: cli
                .events_max_len
                .or(file.events_max_len)
                .unwrap_or(d.events_max_len),
            eval_log_sample: cli
                .eval_log_sample
                .or(file.eval_log_sample)
                .unwrap_or(d.eval_log_sample),
            write_timeout_ms: cli
                .write_timeout_ms
                .or(file.write_timeout_ms)
                .unwrap_or(d.write_timeout_ms),
            pubsub_hard_limit: cli
                .pubsub_hard_limit
                .or(file.pubsub_hard_limit)
                .unwrap_or(d.pubsub_hard_limit),
            pubsub_soft_limit: cli
                .pubsub_soft_limit
                .or(file.pubsub_soft_limit)
                .unwrap_or(d.pubsub_soft_limit),
            pubsub_soft_seconds: cli
                .pubsub_soft_seconds
                .or(file.pubsub_soft_seconds)
                .unwrap_or(d.pubsub_soft_seconds),
            client_hard_limit: cli
                .client_hard_limit
                .or(file.client_hard_limit)
                .unwrap_or(d.client_hard_limit),
            client_soft_limit: cli
                .client_soft_limit
                .or(file.client_soft_limit)
                .unwrap_or(d.client_soft_limit),
            client_soft_seconds: cli
                .client_soft_seconds
                .or(file.client_soft_seconds)
                .unwrap_or(d.client_soft_seconds),
            cluster_port: None,
            cluster_secret: cli
                .cluster_secret
                .or(file.cluster_secret)
                .filter(|p| !p.is_empty()),
            advertise_addr: cli.advertise_addr.or(file.advertise_addr),
            join: cli.join.or(file.join),
            learner: cli.learner || file.learner.unwrap_or(false),
            heartbeat_ms: cli
                .heartbeat_ms
                .or(file.heartbeat_ms)
                .unwrap_or(d.heartbeat_ms),
            election_timeout_ms: cli
                .election_timeout_ms
                .or(file.election_timeout_ms)
                .unwrap_or(d.election_timeout_ms),
            stale_after_ms: cli
                .stale_after_ms
                .or(file.stale_after_ms)
                .unwrap_or(d.stale_after_ms),
            http_port: 0,
            metrics_auth: cli
                .metrics_auth
                .or(file.metrics_auth)
                .unwrap_or(d.metrics_auth),
            http_cors_origins: cli
                .http_cors_origins
                .or(file.http_cors_origins)
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            http_rate_limit: cli
                .http_rate_limit
                .or(file.http_rate_limit)
                .unwrap_or(d.http_rate_limit),
            tls_port: cli.tls_port.or(file.tls_port).unwrap_or(d.tls_port),
            tls_cert_file: cli.tls_cert_file.or(file.tls_cert_file),
            tls_key_file: cli.tls_key_file.or(file.tls_key_file),
            tls_ca_cert_file: cli.tls_ca_cert_file.or(file.tls_ca_cert_file),
            tls_auth_clients: d.tls_auth_clients,
            tls_auth_clients_user: cli
                .tls_auth_clients_user
                .or(file.tls_auth_clients_user)
                .unwrap_or(d.tls_auth_clients_user),
            tls_http: cli.tls_http.or(file.tls_http).unwrap_or(d.tls_http),
            tls_cluster: cli
                .tls_cluster
                .or(file.tls_cluster)
                .unwrap_or(d.tls_cluster),
            session_ttl: cli
                .session_ttl
                .or(file.session_ttl)
                .unwrap_or(d.session_ttl),
        };
        let mut s = s;
        // As Redis: client certificates are required once there is a CA to check them.
        s.tls_auth_clients = cli.tls_auth_clients.or(file.tls_auth_clients).unwrap_or(
            if s.tls_ca_cert_file.is_some() {
                TlsAuthClients::Yes
            } else {
                TlsAuthClients::No
            },
        );
        s.http_port = http_port(cli.http_port.or(file.http_port), s.client_port())?;
        s.cluster_port = cluster_port(cli.cluster_port.or(file.cluster_port), &s)?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |name, why: &str| {
            Err(ConfigError::Invalid {
                name,
                why: why.to_string(),
            })
        };
        if self.port == 0 && self.tls_port == 0 {
            return invalid(
                "port",
                "0 (no plaintext listener) needs --tls-port, or nothing would serve clients",
            );
        }
        self.check_tls()?;
        if self.bind.parse::<std::net::IpAddr>().is_err() && self.bind != "localhost" {
            return invalid("bind", &format!("{:?} is not an IP address", self.bind));
        }
        if self.maxclients == 0 {
            return invalid("maxclients", "must be at least 1");
        }
        if self.threads == 0 || self.threads > 256 {
            return invalid("threads", "must be between 1 and 256");
        }
        if self.node_id == 0 {
            return invalid("node-id", "must be at least 1");
        }
        if self.snapshot_every == 0 {
            return invalid("snapshot-every", "must be at least 1");
        }
        if self.audit_retention == 0 {
            return invalid("audit-retention", "must be at least 1");
        }
        if self.stats_retention == 0 {
            return invalid("stats-retention", "must be at least 1");
        }
        if self.events_retention.0 == 0 {
            return invalid("events-retention", "must be at least 1s");
        }
        if self.events_max_len == 0 {
            return invalid("events-max-len", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.eval_log_sample) {
            return invalid("eval-log-sample", "must be between 0 and 1");
        }
        if self.write_timeout_ms == 0 {
            return invalid("write-timeout-ms", "must be at least 1");
        }
        if self.proto_max_bulk_len < 1024 {
            return invalid("proto-max-bulk-len", "must be at least 1024");
        }
        if !(MAX_ENTRY_BYTES_FLOOR..=MAX_ENTRY_BYTES_CEILING).contains(&self.max_entry_bytes) {
            return invalid(
                "max-entry-bytes",
                &format!("must be between {MAX_ENTRY_BYTES_FLOOR} and {MAX_ENTRY_BYTES_CEILING}"),
            );
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.election_timeout_ms {
            // openraft needs heartbeats well inside the election timeout.
            return invalid(
                "heartbeat-ms",
                "must be at least 1 and below --election-timeout-ms",
            );
        }
        if self.stale_after_ms == 0 {
            return invalid("stale-after-ms", "must be at least 1");
        }
        if self.cluster_port.is_some() && self.cluster_secret.is_none() {
            return invalid(
                "cluster-secret",
                "a node with a cluster bus (--cluster-port or --join) needs --cluster-secret, the secret every member shares",
            );
        }
        if self.learner && self.join.is_none() {
            return invalid("learner", "only means something with --join");
        }
        let unspecified = self
            .advertised_host()
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if self.cluster_port.is_some() && unspecified {
            return invalid(
                "advertise-addr",
                "peers cannot reach a node at 0.0.0.0; give --advertise-addr with this node's reachable host",
            );
        }
        if self.http_port != 0
            && (self.http_port == self.port || self.cluster_port == Some(self.http_port))
        {
            return invalid("http-port", "must differ from --port and --cluster-port");
        }
        if self.cluster_port == Some(self.port) {
            return invalid("cluster-port", "must differ from --port");
        }
        if self.tls_port != 0
            && (self.tls_port == self.port
                || self.cluster_port == Some(self.tls_port)
                || self.http_port == self.tls_port)
        {
            return invalid(
                "tls-port",
                "must differ from --port, --cluster-port and --http-port",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid(
                "log-level",
                &format!("{:?} is not a log level or filter", self.log_level),
            );
        }
        Ok(())
    }

    /// Whether any listener or link uses TLS (so the certificates must load).
    pub fn tls_in_use(&self) -> bool {
        self.tls_port != 0 || self.tls_http || self.tls_cluster
    }

    fn check_tls(&self) -> Result<(), ConfigError> {
        let invalid = |name, why: String| Err(ConfigError::Invalid { name, why });
        if !self.tls_in_use() {
            return Ok(());
        }
        let what = if self.tls_port != 0 {
            "--tls-port"
        } else if self.tls_http {
            "--tls-http"
        } else {
            "--tls-cluster"
        };
        if self.tls_cert_file.is_none() {
            return invalid("tls-cert-file", format!("{what} needs --tls-cert-file"));
        }
        if self.tls_key_file.is_none() {
            return invalid("tls-key-file", format!("{what} needs --tls-key-file"));
        }
        if self.tls_ca_cert_file.is_none() {
            if self.tls_cluster {
                return invalid(
                    "tls-ca-cert-file",
                    "--tls-cluster needs --tls-ca-cert-file: members verify each other against it"
                        .into(),
                );
            }
            if self.tls_auth_clients != TlsAuthClients::No
                || self.tls_auth_clients_user != TlsAuthClientsUser::Off
            {
                return invalid(
                    "tls-auth-clients",
                    "yes or optional (and --tls-auth-clients-user) needs --tls-ca-cert-file to verify client certificates".into(),
                );
            }
        }
        Ok(())
    }

    /// The port clients reach this node at: the plaintext one, or the TLS
    /// one on a TLS-only node.
    pub fn client_port(&self) -> u16 {
        if self.port != 0 {
            self.port
        } else {
            self.tls_port
        }
    }

    /// Pub/sub output-buffer limits.
    pub fn pubsub_limits(&self) -> crate::pubsub::Limits {
        crate::pubsub::Limits {
            hard: self.pubsub_hard_limit,
            soft: self.pubsub_soft_limit,
            soft_for: std::time::Duration::from_secs(self.pubsub_soft_seconds),
        }
    }

    /// Output-buffer limits of normal (not subscribed) clients.
    pub fn client_limits(&self) -> crate::pubsub::Limits {
        crate::pubsub::Limits {
            hard: self.client_hard_limit,
            soft: self.client_soft_limit,
            soft_for: std::time::Duration::from_secs(self.client_soft_seconds),
        }
    }

    /// The host other nodes and redirected clients reach this node at.
    pub fn advertised_host(&self) -> &str {
        self.advertise_addr.as_deref().unwrap_or(&self.bind)
    }

    /// This node's client address as peers see it.
    pub fn advertised_client_addr(&self) -> String {
        format!("{}:{}", self.advertised_host(), self.client_port())
    }

    /// This node's cluster-bus address as peers see it (empty without a bus).
    pub fn advertised_cluster_addr(&self) -> String {
        match self.cluster_port {
            Some(p) => format!("{}:{p}", self.advertised_host()),
            None => String::new(),
        }
    }

    /// The request decoder's limits.
    pub fn decoder_limits(&self) -> DecoderLimits {
        DecoderLimits {
            max_bulk_len: self.proto_max_bulk_len,
            max_multibulk_len: self.max_multibulk_len,
            query_buffer_limit: self.client_query_buffer_limit,
        }
    }
}

/// The bus port: as given, or (client) port + 10000 when only `--join` asks for a bus.
fn cluster_port(given: Option<u16>, s: &Settings) -> Result<Option<u16>, ConfigError> {
    match (given, &s.join) {
        (Some(p), _) => Ok(Some(p)),
        (None, Some(_)) => u16::try_from(u32::from(s.client_port()) + 10_000)
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                name: "cluster-port",
                why: format!(
                    "the default (port + 10000 = {}) exceeds 65535; give --cluster-port",
                    u32::from(s.client_port()) + 10_000
                ),
            }),
        (None, None) => Ok(None),
    }
}

/// The HTTP port: as given (0: off), or port + 1000.
fn http_port(given: Option<u16>, port: u16) -> Result<u16, ConfigError> {
    match given {
        Some(p) => Ok(p),
        None => u16::try_from(u32::from(port) + 1000).map_err(|_| ConfigError::Invalid {
            name: "http-port",
            why: format!(
                "the default (port + 1000 = {}) exceeds 65535; give --http-port (0 turns HTTP off)",
                u32::from(port) + 1000
            ),
        }),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().replace('\n', " ");
        ConfigError::Parse {
            path: path.to_path_buf(),
            message: match line {
                Some(l) => format!("line {l}: {message}"),
                None => message,
            },
        }
    })
}
