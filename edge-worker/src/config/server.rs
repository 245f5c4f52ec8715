//! `[server]`, `[storage]` and `[admin]`: where Waymark listens, stores and is administered.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{secret, ConfigError};
use crate::http::client_ip::{Cidr, ClientIpHeader, ProxyTrust};

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Default: `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Deprecated: use `trusted_proxies` and `client_ip_header`. Alone, it
    /// names the client-IP header believed from loopback and private peers
    /// only, read from the right. Default: none.
    #[serde(default)]
    pub trusted_proxy_header: Option<String>,
    /// Address ranges of the proxies or CDN in front of Waymark, such as
    /// `["10.0.0.0/8", "2001:db8::/32"]`. Only a peer in these ranges may set
    /// the client IP (`client_ip_header`) and the scheme
    /// (`x-forwarded-proto`, `Forwarded: proto=`). Default: none; the
    /// connection's peer address is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Header a trusted proxy puts the client IP in: `x-forwarded-for`,
    /// `forwarded`, `cf-connecting-ip`, `true-client-ip`,
    /// `fastly-client-ip` or `x-real-ip`. For the first two the client is
    /// the right-most address that is not a trusted proxy. Default:
    /// `x-forwarded-for`.
    #[serde(default = "default_client_ip_header")]
    pub client_ip_header: ClientIpHeader,
    /// Path every route is served under, such as `/metrics` when a CDN sends
    /// one path of the site's own hostname to Waymark. Default: none (`/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Directory served at `/` instead of the demo shop built into the
    /// binary. Default: none (the built-in demo shop, see `demo_site`).
    #[serde(default)]
    pub site_dir: Option<PathBuf>,
    /// Whether the demo shop built into the binary is served at `/` when no
    /// `site_dir` is set. Default: `true`; set `false` in production.
    #[serde(default = "default_demo_site")]
    pub demo_site: bool,
    /// Directory holding a built tag (`wm.js` and `wm/`, as `cargo xtask
    /// build-tag` writes to `client-wasm/dist`), served at `/wm.js` and `/wm/`
    /// instead of the tag built into the binary. Default: none (the built-in tag).
    #[serde(default)]
    pub tag_dir: Option<PathBuf>,
    /// Whether the public origin is https, so cookies get `Secure`. Default:
    /// detected per request from `x-forwarded-proto` behind a trusted proxy.
    #[serde(default)]
    pub https: Option<bool>,
    /// Longest time a request may take, in milliseconds. Default: 10000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests handled at once before new ones get 503. Default: 1024.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            trusted_proxy_header: None,
            site_dir: None,
            demo_site: default_demo_site(),
            tag_dir: None,
            trusted_proxies: Vec::new(),
            client_ip_header: default_client_ip_header(),
            path_prefix: None,
            https: None,
            request_timeout_ms: default_request_timeout_ms(),
            max_concurrent_requests: default_max_concurrent_requests(),
        }
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(header) = &self.trusted_proxy_header {
            if ClientIpHeader::parse(header).is_none() {
                return Err(ConfigError::invalid(
                    "server.trusted_proxy_header",
                    format!("`{header}` is not a client-IP header Waymark reads; set trusted_proxies and client_ip_header (x-forwarded-for, forwarded, cf-connecting-ip, true-client-ip, fastly-client-ip or x-real-ip) instead"),
                ));
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let ok = prefix.len() > 1
                && prefix.starts_with('/')
                && !prefix.ends_with('/')
                && !prefix.contains("//")
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
            if !ok {
                return Err(ConfigError::invalid(
                    "server.path_prefix",
                    format!("`{prefix}` is not a path prefix; use one like \"/metrics\" (a leading slash, no trailing slash, letters, digits, - . _ ~)"),
                ));
            }
        }
        if let Some(dir) = &self.tag_dir {
            if !dir.join("wm.js").is_file() {
                return Err(ConfigError::invalid(
                    "server.tag_dir",
                    format!(
                        "`{}` holds no wm.js; build the tag there with `cargo xtask build-tag` (it writes client-wasm/dist), or remove the key to serve the tag built into the binary",
                        dir.display()
                    ),
                ));
            }
        }
        if let Some(dir) = &self.site_dir {
            if !dir.is_dir() {
                return Err(ConfigError::invalid(
                    "server.site_dir",
                    format!(
                        "`{}` is not a directory; point it at the site to serve at `/`, or remove the key",
                        dir.display()
                    ),
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::invalid(
                "server.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// Who may say who the client is: `trusted_proxies` with
    /// `client_ip_header`, else the deprecated `trusted_proxy_header`
    /// believed from private peers only, else nobody.
    pub fn proxy_trust(&self) -> ProxyTrust<'_> {
        if !self.trusted_proxies.is_empty() {
            return ProxyTrust::new(&self.trusted_proxies, self.client_ip_header);
        }
        match self
            .trusted_proxy_header
            .as_deref()
            .and_then(ClientIpHeader::parse)
        {
            Some(header) => ProxyTrust::legacy(header),
            None => ProxyTrust::new(&[], self.client_ip_header),
        }
    }

    /// Logs a warning for each deprecated key in use.
    pub fn warn_deprecated(&self) {
        if let Some(header) = &self.trusted_proxy_header {
            tracing::warn!(
                header = %header,
                "The [server] trusted_proxy_header key is deprecated; set trusted_proxies (your proxies' CIDRs) and client_ip_header. Until then the header is believed only from loopback and private peers, read from the right."
            );
        }
    }

    /// `path_prefix`, or empty when routes are served at `/`.
    pub fn prefix(&self) -> &str {
        self.path_prefix.as_deref().unwrap_or("")
    }
}

fn default_client_ip_header() -> ClientIpHeader {
    ClientIpHeader::XForwardedFor
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_demo_site() -> bool {
    true
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_max_concurrent_requests() -> usize {
    1024
}

/// `[storage]`: where events, queues and state are kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite` (one worker, embedded) or `postgres` (a fleet of workers on
    /// one PostgreSQL). Default: `sqlite`.
    #[serde(default)]
    pub backend: StorageBackend,
    /// Directory for the SQLite database and file destinations with relative
    /// paths. Created when missing. Default: `./waymark-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Most events written in one group commit. Default: 2000.
    #[serde(default = "default_max_commit_events")]
    pub max_commit_events: usize,
    /// Most memory for the filter that lets a new `messageId` skip the
    /// lookup in the embedded store's dedup runs, in MiB. It grows in
    /// generations of 16 MiB (about 13 M ids each, so about 1% of new ids
    /// still look) as the ids in the dedup window need; past the budget
    /// more ids only make more look. `0` turns it off. Backend `sqlite`
    /// only. Default: 256.
    #[serde(default = "default_dedup_filter_mib")]
    pub dedup_filter_mib: usize,
    /// Environment variable holding the `postgres://` URL (backend
    /// `postgres`). Default: none.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The `postgres://` URL inline. For development only; prefer `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL connections this worker keeps open at most. Default: 16.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a worker's claim on a destination's queue lasts without
    /// renewal, in seconds: a killed worker's destinations are taken over by
    /// another worker within this time. Renewed every third of it. Default: 10.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// How often the PostgreSQL queue starts a new dataset (a pair of
    /// partitions dropped whole once every entry in it is done), in
    /// seconds. Default: 60.
    #[serde(default = "default_dataset_secs")]
    pub dataset_secs: u64,
    /// How long to wait for a PostgreSQL connection before answering 503,
    /// in milliseconds. Default: 2000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long entries of a destination no longer in the configuration
    /// wait before they move to the dead letters (replayable once it is
    /// back), in seconds. On PostgreSQL they move only while no worker
    /// holds the destination's lease. Default: 3600.
    #[serde(default = "default_removed_destination_secs")]
    pub removed_destination_secs: u64,
}

/// Which store `[storage]` uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Embedded SQLite under `data_dir`.
    #[default]
    Sqlite,
    /// A shared PostgreSQL (`url_env` or `url`).
    Postgres,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::default(),
            data_dir: default_data_dir(),
            max_commit_events: default_max_commit_events(),
            url_env: None,
            url: None,
            pool_size: default_pool_size(),
            dedup_filter_mib: default_dedup_filter_mib(),
            lease_secs: default_lease_secs(),
            dataset_secs: default_dataset_secs(),
            connect_timeout_ms: default_connect_timeout_ms(),
            removed_destination_secs: default_removed_destination_secs(),
        }
    }
}

impl StorageConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.dedup_filter_mib > 4_096 {
            return Err(ConfigError::invalid(
                "storage.dedup_filter_mib",
                format!("{} is out of range; use 0 to 4096", self.dedup_filter_mib),
            ));
        }
        if self.backend == StorageBackend::Postgres {
            if self.resolve_url()?.is_none() {
                return Err(ConfigError::invalid(
                    "storage.url_env",
                    "backend = \"postgres\" needs a URL; set url_env to a variable holding postgres://user:password@host:port/database",
                ));
            }
            if self.pool_size == 0 || self.pool_size > 1_000 {
                return Err(ConfigError::invalid(
                    "storage.pool_size",
                    format!("{} is out of range; use 1 to 1000", self.pool_size),
                ));
            }
            if self.lease_secs < 2 || self.lease_secs > 3_600 {
                return Err(ConfigError::invalid(
                    "storage.lease_secs",
                    format!("{} is out of range; use 2 to 3600", self.lease_secs),
                ));
            }
            if self.dataset_secs < 1 || self.dataset_secs > 86_400 {
                return Err(ConfigError::invalid(
                    "storage.dataset_secs",
                    format!("{} is out of range; use 1 to 86400", self.dataset_secs),
                ));
            }
        }
        Ok(())
    }

    /// The PostgreSQL URL, from the environment or inline.
    pub fn resolve_url(&self) -> Result<Option<String>, ConfigError> {
        secret("storage.url", self.url.as_deref(), self.url_env.as_deref())
    }
}

fn default_removed_destination_secs() -> u64 {
    3_600
}

fn default_pool_size() -> usize {
    16
}

fn default_dedup_filter_mib() -> usize {
    256
}

fn default_lease_secs() -> u64 {
    10
}

fn default_dataset_secs() -> u64 {
    60
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./waymark-data")
}

fn default_max_commit_events() -> usize {
    2_000
}

/// `[admin]`: bearer tokens for `/admin/`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable holding the admin token. Default: none; without
    /// any token the admin API answers 401 to everyone.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The admin token inline. For development only; prefer `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding a read-only token for `/admin/live`.
    #[serde(default)]
    pub live_token_env: Option<String>,
    /// A read-only token for `/admin/live` inline; it may also be passed as
    /// `?token=` because browsers' EventSource cannot send headers.
    #[serde(default)]
    pub live_token: Option<String>,
}

impl AdminConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.resolve_token()?;
        self.resolve_live_token()?;
        Ok(())
    }

    /// The admin token, from the environment or inline.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "admin.token",
            self.token.as_deref(),
            self.token_env.as_deref(),
        )
    }

    /// The read-only live-stream token, from the environment or inline.
    pub fn resolve_live_token(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "admin.live_token",
            self.live_token.as_deref(),
            self.live_token_env.as_deref(),
        )
    }
}
