//! Every setting of `switchboard serve`, from the command line, the environment
//! (`SWITCHBOARD_*`) and a TOML file, in that order of precedence.
//!
//! Clap handles flags, environment variables and defaults. A TOML file named by
//! `--config` fills in whatever neither the command line nor the environment set:
//! its keys are the long flag names (`max-message-size = 65536`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::auth::AuthMode;

/// A trusted proxy: an IP address or a CIDR network (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(pub IpNet);

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(text: &str) -> Result<TrustedProxy, String> {
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(TrustedProxy)
            .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))
    }
}

impl TryFrom<String> for TrustedProxy {
    type Error = String;

    fn try_from(text: String) -> Result<TrustedProxy, String> {
        text.parse()
    }
}

impl From<TrustedProxy> for String {
    fn from(proxy: TrustedProxy) -> String {
        proxy.0.to_string()
    }
}

/// A protocol dialect (see `--compat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// PeerJS (`peerjs` client 1.x; the original is peerjs-server).
    Peerjs,
    /// y-webrtc's signaling (`y-webrtc` 10.x).
    #[value(name = "y-webrtc")]
    #[serde(rename = "y-webrtc")]
    YWebrtc,
    /// matchbox (`matchbox_socket` 0.14).
    Matchbox,
    /// No dialect at all.
    None,
}

/// What a join gets when the join hook cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookFailure {
    /// Admitted, as if the hook had said yes.
    Allow,
    /// Refused with `unavailable`.
    Deny,
}

/// How logs are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings of a running server.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address and port to listen on (port 0 picks a free port, logged at start).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,switchboard_server=debug`).
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,

    /// Largest message, in bytes, a client may send. Larger frames get a
    /// `message-too-large` error; frames over four times this close the connection (1009).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// How many rooms one peer may be in at once.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_PEER", default_value_t = 8)]
    pub max_rooms_per_peer: usize,

    /// Most peers in one room; also the cap on a room's requested capacity.
    #[arg(long, env = "SWITCHBOARD_MAX_PEERS_PER_ROOM", default_value_t = 1000)]
    pub max_peers_per_room: u32,

    /// Longest room (and broadcast channel) name, in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOM_NAME_LEN", default_value_t = 64)]
    pub max_room_name_len: usize,

    /// Largest `meta` object on `join`, in bytes of JSON.
    #[arg(long, env = "SWITCHBOARD_MAX_META_SIZE", default_value_t = 1024)]
    pub max_meta_size: usize,

    /// How often the server pings an idle WebSocket.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,

    /// How long a client has to answer a ping before it is dropped.
    #[arg(long, env = "SWITCHBOARD_PING_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,

    /// Messages queued for one connection before it counts as a slow consumer and is closed (1008).
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE_MESSAGES", default_value_t = 1024)]
    pub send_queue_messages: usize,

    /// Bytes queued for one connection before it counts as a slow consumer and is closed (1008).
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// How long one write to a client may block before the client is dropped.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,

    /// Interval between events on `GET /sse`.
    #[arg(long, env = "SWITCHBOARD_SSE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub sse_interval: Duration,

    /// On SIGTERM/SIGINT, how long to keep serving with `/readyz` failing before
    /// closing connections, so a load balancer can take the node out first.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,

    /// Close code WebSockets get on shutdown: 1001 (going away) or 1012 (service
    /// restart: the client should reconnect, to this or another node). Use 1012
    /// for rolling restarts behind a load balancer.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_CLOSE_CODE", default_value_t = 1001)]
    pub shutdown_close_code: u16,

    /// After connections are told to close, how long to wait for them before exiting anyway.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,

    /// A STUN or TURN server URL (`stun:`, `stuns:`, `turn:`, `turns:`) sent to
    /// every peer in `welcome` as `iceServers`. Repeat the flag for several; in the
    /// environment, separate them with commas.
    #[arg(long = "ice-server", env = "SWITCHBOARD_ICE_SERVERS", value_delimiter = ',')]
    #[serde(default)]
    pub ice_servers: Vec<String>,

    /// Username for the `turn:`/`turns:` servers (static credentials).
    #[arg(long, env = "SWITCHBOARD_TURN_USERNAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_username: Option<String>,

    /// Credential for the `turn:`/`turns:` servers (static credentials).
    #[arg(long, env = "SWITCHBOARD_TURN_CREDENTIAL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_credential: Option<String>,

    /// Who may connect: `none` (no tokens), `optional` (a valid token names the
    /// user), `required` (no peer id without a valid token).
    #[arg(long, env = "SWITCHBOARD_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,

    /// Shared secret for HS256 tokens.
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,

    /// PEM public key (RSA for RS256, EC P-256 for ES256) for verifying tokens.
    #[arg(long, env = "SWITCHBOARD_AUTH_PUBLIC_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_public_key: Option<PathBuf>,

    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "SWITCHBOARD_AUTH_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub auth_leeway: Duration,

    /// With `--auth required` and no token on the URL: how long a client has to
    /// send its `auth` message.
    #[arg(long, env = "SWITCHBOARD_AUTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,

    /// An `Origin` allowed to open WebSockets (repeatable; comma-separated in the
    /// environment). None given: same-origin pages only. `*`: any origin.
    /// Clients that send no `Origin` (non-browsers) are always allowed.
    #[arg(long = "allowed-origin", env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    #[serde(default)]
    pub allowed_origins: Vec<String>,

    /// Most open connections (WebSockets and event streams) in total.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most open connections from one client IP.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", default_value_t = 500)]
    pub max_connections_per_ip: usize,

    /// A proxy (IP or CIDR) whose `X-Forwarded-For` is believed (repeatable;
    /// comma-separated in the environment).
    #[arg(long = "trusted-proxy", env = "SWITCHBOARD_TRUSTED_PROXIES", value_delimiter = ',')]
    #[serde(default)]
    pub trusted_proxies: Vec<TrustedProxy>,

    /// Messages per second one connection may send (bursts of twice that); 0: no limit.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_MESSAGES", default_value_t = 100)]
    pub rate_limit_messages: u32,

    /// Bytes per second one connection may send (bursts of twice that, and at
    /// least one largest frame); 0: no limit.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub rate_limit_bytes: u32,

    /// PEM certificate chain: serve HTTPS and WSS instead of plain HTTP (needs --tls-key).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// How often to check the certificate files for changes (SIGHUP reloads at once).
    #[arg(long, env = "SWITCHBOARD_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub tls_reload_interval: Duration,

    /// TURN REST API shared secret (coturn `static-auth-secret`): each peer gets
    /// its own time-limited TURN credentials instead of static ones.
    #[arg(long, env = "SWITCHBOARD_TURN_SECRET", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_secret: Option<String>,

    /// How long TURN credentials from --turn-secret stay valid. Long enough for a
    /// call: TURN refreshes its allocation with the same credentials.
    #[arg(long, env = "SWITCHBOARD_TURN_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub turn_ttl: Duration,

    /// How long a signaling session whose connection dropped is kept for its
    /// client to resume it (`/ws?resume=TOKEN`): same id, same rooms, and what
    /// was sent to it meanwhile. Its rooms are told `peer-left` only after this.
    /// Only clients that connect with `?resume` get one. 0 turns resuming off.
    #[arg(long, env = "SWITCHBOARD_RESUME_GRACE", default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,

    /// Redis (or Valkey) URL, `redis://host:port[/db]` or `rediss://` for TLS:
    /// share rooms with every other node that uses the same Redis. Unset: one
    /// node, rooms in memory, no external service.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,

    /// Treat `--redis` as a Redis Cluster seed list (comma-separated URLs); room
    /// traffic then uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7).
    #[arg(long, env = "SWITCHBOARD_REDIS_CLUSTER", default_value_t = false)]
    #[serde(default)]
    pub redis_cluster: bool,

    /// Protocol dialects served besides Switchboard's own, so apps written for
    /// other servers connect unchanged: `peerjs` (PeerJS clients: `/{key}/id`,
    /// `/peerjs`), `y-webrtc` (`/y-webrtc`), `matchbox` (`/matchbox/{room}`).
    /// `none` turns them all off.
    #[arg(
        long,
        env = "SWITCHBOARD_COMPAT",
        value_enum,
        value_delimiter = ',',
        default_value = "peerjs,y-webrtc,matchbox"
    )]
    pub compat: Vec<Dialect>,

    /// PeerJS: the API key clients pass (`key` in `new Peer(id, {key})`).
    #[arg(long, env = "SWITCHBOARD_PEERJS_KEY", default_value = "peerjs")]
    pub peerjs_key: String,

    /// PeerJS: the path clients are given (`path` in `new Peer(id, {path})`):
    /// `/` serves `/{key}/id` and `/peerjs`, `/app` serves `/app/{key}/id`, ...
    #[arg(long, env = "SWITCHBOARD_PEERJS_PATH", default_value = "/")]
    pub peerjs_path: String,

    /// PeerJS: whether `GET /{key}/peers` lists the connected ids (off, as in the original).
    #[arg(long, env = "SWITCHBOARD_PEERJS_DISCOVERY", default_value_t = false)]
    pub peerjs_discovery: bool,

    /// PeerJS: how long messages to an id that is not connected wait for it
    /// before each sender is told `EXPIRE`.
    #[arg(long, env = "SWITCHBOARD_PEERJS_EXPIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub peerjs_expire_timeout: Duration,

    /// PeerJS: a client that sends no `HEARTBEAT` for this long is dropped.
    #[arg(long, env = "SWITCHBOARD_PEERJS_ALIVE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub peerjs_alive_timeout: Duration,

    /// y-webrtc: most topics (documents) one connection may subscribe to.
    #[arg(long, env = "SWITCHBOARD_Y_WEBRTC_MAX_TOPICS", default_value_t = 256)]
    pub y_webrtc_max_topics: usize,

    /// y-webrtc: longest topic name, in bytes.
    #[arg(long, env = "SWITCHBOARD_Y_WEBRTC_MAX_TOPIC_LEN", default_value_t = 1024)]
    pub y_webrtc_max_topic_len: usize,

    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "switchboard")]
    pub redis_prefix: String,

    /// How long a node may go without a heartbeat before the others declare it
    /// dead and remove its peers from their rooms (`peer-left`). It beats five
    /// times per period, so a dead node's peers are gone within about 1.2 times this.
    #[arg(long, env = "SWITCHBOARD_NODE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,

    /// How long one Redis operation may take before it counts as failed.
    #[arg(long, env = "SWITCHBOARD_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,

    /// A key of the server API (`/api/v1/`) and the admin dashboard (`/admin`),
    /// sent as `Authorization: Bearer KEY`. Repeat for several (to rotate keys);
    /// comma-separated in the environment. None: the API and dashboard are off.
    #[arg(long = "api-key", env = "SWITCHBOARD_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    #[serde(default)]
    pub api_keys: Vec<String>,

    /// Serve the server API and the admin dashboard on this address only (plain
    /// HTTP), not on `--listen`: keep it off the public internet.
    #[arg(long, env = "SWITCHBOARD_API_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,

    /// A URL that receives the room webhooks (`room.started`, `room.finished`,
    /// `peer.joined`, `peer.left`), signed as Standard Webhooks says. Repeat for
    /// several; comma-separated in the environment. Needs --webhook-secret.
    #[arg(long = "webhook-url", env = "SWITCHBOARD_WEBHOOK_URLS", value_delimiter = ',')]
    #[serde(default)]
    pub webhook_urls: Vec<String>,

    /// The secret webhooks and join hook requests are signed with: `whsec_`
    /// followed by base64 (24 to 64 random bytes), as Standard Webhooks libraries expect.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_SECRET", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,

    /// How long a webhook is retried (exponential backoff with jitter) before it
    /// is given up on.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_RETRY_FOR", default_value = "5m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub webhook_retry_for: Duration,

    /// Webhooks waiting for one URL; beyond this, new ones are dropped (counted and logged).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_QUEUE", default_value_t = 10_000)]
    pub webhook_queue: usize,

    /// A URL asked before every `join` on `/ws` (a signed POST of `{peer, user,
    /// room, meta}`); it answers `{"allow": true|false, ...}`. Needs --webhook-secret.
    #[arg(long, env = "SWITCHBOARD_JOIN_HOOK_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_hook_url: Option<String>,

    /// How long a join waits for the join hook.
    #[arg(long, env = "SWITCHBOARD_JOIN_HOOK_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub join_hook_timeout: Duration,

    /// What a join gets when the join hook fails or times out: `deny` (refused
    /// with `unavailable`) or `allow`.
    #[arg(long, env = "SWITCHBOARD_JOIN_HOOK_FAILURE", value_enum, default_value = "deny")]
    pub join_hook_failure: HookFailure,

    /// Runtime worker threads (0: one per CPU core).
    #[arg(long, env = "SWITCHBOARD_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

/// A bad setting or configuration file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    /// A value is out of range.
    #[error("invalid setting `{name}`: {reason}")]
    Invalid { name: &'static str, reason: &'static str },
}

impl Settings {
    /// Fills every setting the command line and environment left at its default
    /// from the TOML file at `path`.
    pub fn merge_file(self, matches: &ArgMatches, path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.into(), source })?;
        let file: toml::Table =
            toml::from_str(&text).map_err(|source| SettingsError::Parse { path: path.into(), source })?;
        let mut merged = toml::Table::try_from(&self).expect("settings always serialise to a table");
        for (key, value) in file {
            let id = key.replace('-', "_");
            // An unknown key is not an argument id; it is refused by the
            // deserialisation below, with its name.
            let known = matches.try_get_raw(&id).is_ok();
            let explicit =
                known && matches!(matches.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
            if !explicit {
                merged.insert(key, value);
            }
        }
        merged.try_into().map_err(|source| SettingsError::Parse { path: path.into(), source })
    }

    /// Settings from `serve`-style arguments alone (the first is the program
    /// name), for a server embedded in another program or a test.
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Settings::augment_args(clap::Command::new("serve"));
        let matches = command.try_get_matches_from(args)?;
        <Settings as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    /// Whether a dialect is served.
    pub fn serves(&self, dialect: Dialect) -> bool {
        self.compat.contains(&dialect)
    }

    /// Refuses values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let hooked = !self.webhook_urls.is_empty() || self.join_hook_url.is_some();
        let urls_ok = self
            .webhook_urls
            .iter()
            .chain(&self.join_hook_url)
            .all(|url| reqwest::Url::parse(url).is_ok_and(|url| matches!(url.scheme(), "http" | "https")));
        let checks: [(bool, &'static str, &'static str); 21] = [
            (
                !hooked || self.webhook_secret.is_some(),
                "webhook-secret",
                "is required with --webhook-url or --join-hook-url",
            ),
            (urls_ok, "webhook-url", "must be an absolute http:// or https:// URL"),
            (self.api_keys.iter().all(|key| key.len() >= 16), "api-key", "must be at least 16 characters"),
            (self.webhook_queue >= 1, "webhook-queue", "must be at least 1"),
            (matches!(self.shutdown_close_code, 1001 | 1012), "shutdown-close-code", "must be 1001 or 1012"),
            (self.node_ttl >= Duration::from_millis(500), "node-ttl", "must be at least 500ms"),
            (!self.redis_timeout.is_zero(), "redis-timeout", "must be more than zero"),
            (
                !self.redis_prefix.is_empty() && !self.redis_prefix.contains(['{', '}']),
                "redis-prefix",
                "must be non-empty, without braces",
            ),
            (self.max_connections >= 1, "max-connections", "must be at least 1"),
            (self.max_connections_per_ip >= 1, "max-connections-per-ip", "must be at least 1"),
            (self.max_message_size >= 1024, "max-message-size", "must be at least 1024 bytes"),
            (self.max_rooms_per_peer >= 1, "max-rooms-per-peer", "must be at least 1"),
            (self.max_peers_per_room >= 1, "max-peers-per-room", "must be at least 1"),
            (self.max_room_name_len >= 1, "max-room-name-len", "must be at least 1"),
            (!self.ping_interval.is_zero(), "ping-interval", "must be more than zero"),
            (!self.sse_interval.is_zero(), "sse-interval", "must be more than zero"),
            (self.send_queue_messages >= 1, "send-queue-messages", "must be at least 1"),
            (
                !self.peerjs_key.is_empty() && !self.peerjs_key.contains('/'),
                "peerjs-key",
                "must be non-empty, without `/`",
            ),
            (self.peerjs_path.starts_with('/'), "peerjs-path", "must start with `/`"),
            (self.y_webrtc_max_topics >= 1, "y-webrtc-max-topics", "must be at least 1"),
            (self.y_webrtc_max_topic_len >= 1, "y-webrtc-max-topic-len", "must be at least 1"),
        ];
        if let Some((_, name, reason)) = checks.into_iter().find(|(ok, _, _)| !ok) {
            return Err(SettingsError::Invalid { name, reason });
        }
        if self.turn_secret.is_some() && (self.turn_username.is_some() || self.turn_credential.is_some()) {
            return Err(SettingsError::Invalid {
                name: "turn-secret",
                reason: "give either --turn-secret or static --turn-username/--turn-credential, not both",
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(SettingsError::Invalid { name: "tls-cert", reason: "--tls-cert and --tls-key go together" });
        }
        let schemes = ["stun:", "stuns:", "turn:", "turns:"];
        if !self.ice_servers.iter().all(|url| schemes.iter().any(|s| url.starts_with(s))) {
            return Err(SettingsError::Invalid {
                name: "ice-server",
                reason: "must be a stun:, stuns:, turn: or turns: URL",
            });
        }
        Ok(())
    }

    /// The certificate files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles { cert: self.tls_cert.clone()?, key: self.tls_key.clone()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> (Settings, ArgMatches) {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        (cli.settings, matches)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let (settings, _) = parse(&["x"]);
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.max_message_size, 65536);
        assert_eq!(settings.ping_interval, Duration::from_secs(30));
        settings.validate().unwrap();
    }

    #[test]
    fn file_fills_defaults_but_not_flags() {
        let dir = std::env::temp_dir().join(format!("switchboard-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "max-message-size = 2048\nping-interval = \"5s\"\nlisten = \"127.0.0.1:9\"\n").unwrap();
        let (settings, matches) = parse(&["x", "--listen", "127.0.0.1:7000"]);
        let merged = settings.merge_file(&matches, &path).unwrap();
        assert_eq!(merged.max_message_size, 2048);
        assert_eq!(merged.ping_interval, Duration::from_secs(5));
        assert_eq!(merged.listen, "127.0.0.1:7000".parse().unwrap(), "the flag wins over the file");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("switchboard-settings-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "max-mesage-size = 2048\n").unwrap();
        let (settings, matches) = parse(&["x"]);
        let err = settings.merge_file(&matches, &path).unwrap_err();
        assert!(err.to_string().contains("max-mesage-size"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let (settings, _) = parse(&["x", "--max-message-size", "10"]);
        assert!(matches!(settings.validate(), Err(SettingsError::Invalid { name: "max-message-size", .. })));
    }
}
