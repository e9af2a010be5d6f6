//! The command line: `serve`, and admin commands that work on the database
//! directly (no API, no key needed) to bootstrap. Every flag has a
//! `KEYGATE_*` environment variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use keygate::errors::ErrorFormat;
use keygate::ids::{KeyId, OrgId};
use keygate::key::KeyFormat;
use std::net::SocketAddr;
use std::path::PathBuf;

fn default_scopes() -> Vec<String> {
    keygate::scopes::DEFAULT_SCOPES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[derive(Debug, Parser)]
#[command(
    name = "keygate-control-plane",
    version,
    about = "keygate control plane: owns the API keys and serves the key table to every Envoy"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings of every command.
#[derive(Debug, Args)]
pub struct Common {
    /// SQLite database file (created, with its directory, on first use), or
    /// a `postgres://user:password@host/db` URL (schema applied at start).
    #[arg(
        long,
        env = "KEYGATE_DATABASE",
        default_value = "data/keygate.db",
        hide_env_values = true,
        global = true
    )]
    pub database: PathBuf,
    /// Prefix of minted keys.
    #[arg(long, env = "KEYGATE_KEY_PREFIX", default_value = keygate::key::DEFAULT_PREFIX, global = true)]
    pub key_prefix: String,
    /// Spelling of minted and accepted keys: `prefix_env_secret`
    /// (`rk_live_…`) or `prefix_secret` (`rk_<secret><check>`, every key `live`);
    /// the filters' `key_format` must match.
    #[arg(
        long,
        env = "KEYGATE_KEY_FORMAT",
        default_value = "prefix_env_secret",
        global = true
    )]
    pub key_format: KeyFormat,
    /// Scopes keys may hold, comma-separated (others are refused with 400).
    #[arg(long = "allowed-scopes", env = "KEYGATE_SCOPES", value_delimiter = ',', default_values_t = default_scopes(), global = true)]
    pub allowed_scopes: Vec<String>,
    /// Rate-limit tiers, comma-separated; the first is the default.
    #[arg(
        long,
        env = "KEYGATE_TIERS",
        value_delimiter = ',',
        default_value = "free,pro",
        global = true
    )]
    pub tiers: Vec<String>,
    /// Plans file (TOML, see plans.example.toml); without one, one plan per
    /// tier, named like it, allowing it and every tier before it.
    #[arg(long, env = "KEYGATE_PLANS", global = true)]
    pub plans: Option<PathBuf>,
    /// Plan of new tenants (default: the first plan).
    #[arg(long, env = "KEYGATE_DEFAULT_PLAN", global = true)]
    pub default_plan: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serves the management API and the key table feed.
    Serve(ServeArgs),
    /// Manages tenants without the API.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manages keys without the API.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer token the filters present to read the key table and report
    /// usage (required): every tenant's keys. It is the single-plane
    /// shortcut; data planes with tokens of their own, optionally limited to
    /// some tenants, are registered at `/operator/v1/data-planes`.
    #[arg(long, env = "KEYGATE_FEED_TOKEN", hide_env_values = true)]
    pub feed_token: Option<String>,
    /// Seconds an expired key stays in the key table (so the filter answers
    /// "API key has expired") before it leaves.
    #[arg(
        long,
        env = "KEYGATE_EXPIRED_RETENTION_SECONDS",
        default_value_t = 86_400
    )]
    pub expired_retention_seconds: u64,
    /// Revisions kept for deltas; filters older than that get a snapshot.
    #[arg(long, env = "KEYGATE_REVISIONS_KEPT", default_value_t = 10_000)]
    pub revisions_kept: u64,
    /// Most keys in one page of a key table snapshot: a key takes 68 bytes
    /// (more with own limits or an owner), so the default makes pages of
    /// about 1.1 MB.
    #[arg(
        long,
        env = "KEYGATE_FEED_PAGE_KEYS",
        default_value_t = keygate::feed::DEFAULT_PAGE_KEYS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub feed_page_keys: u32,
    /// Longest wait, in milliseconds, of a revocation (or rotation without
    /// grace) for every Envoy connected to this feed to acknowledge it
    /// before it answers (0: answer at once, reporting who was reached).
    #[arg(long, env = "KEYGATE_PROPAGATION_TIMEOUT_MS", default_value_t = 1000)]
    pub propagation_timeout_ms: u64,
    /// File holding the operator token of `/operator/v1` (or set
    /// KEYGATE_OPERATOR_TOKEN; never on the command line). Without either,
    /// the operator API is off (404).
    #[arg(long)]
    pub operator_token_file: Option<PathBuf>,
    /// Body shape of every JSON error: `keygate` (`{"error":{"type","message"}}`),
    /// `flat` (`{"error":"Unauthorized","message"}`) or `openai`
    /// (`{"error":{"message","type","param","code"}}`).
    #[arg(long, env = "KEYGATE_ERROR_FORMAT", default_value = "keygate")]
    pub error_format: ErrorFormat,
    /// Seconds before a failed webhook delivery is retried; doubles after
    /// each failure (at most an hour apart).
    #[arg(long, env = "KEYGATE_WEBHOOK_BACKOFF_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_backoff_seconds: u64,
    /// Seconds after an event during which its deliveries are retried, then
    /// marked failed.
    #[arg(long, env = "KEYGATE_WEBHOOK_RETRY_SECONDS", default_value_t = 86_400)]
    pub webhook_retry_seconds: u64,
    /// A non-public CIDR webhooks may reach all the same (repeatable, or
    /// comma-separated in the variable); by default webhooks reach public
    /// addresses only.
    #[arg(
        long = "webhook-allow-cidr",
        env = "KEYGATE_WEBHOOK_ALLOW_CIDR",
        value_delimiter = ','
    )]
    pub webhook_allow_cidr: Vec<ipnet::IpNet>,
    /// A PEM file of CA certificates webhook receivers may chain to, on top
    /// of the system's roots.
    #[arg(long, env = "KEYGATE_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// `open`: anyone may register a tenant (`POST /api/v1/tenants`, the
    /// dashboard's sign-up); `closed`: 403, tenants come from the operator
    /// API or the admin commands.
    #[arg(long, env = "KEYGATE_SIGNUP", value_enum, default_value_t = SignUpMode::Open)]
    pub signup: SignUpMode,
    /// Sign-ups per client address an hour (the address Envoy forwards),
    /// counted in the database for every replica; over it, 429 with
    /// `retry-after`.
    #[arg(long, env = "KEYGATE_SIGNUP_PER_HOUR", default_value_t = 10)]
    pub signup_per_hour: u32,
    /// Password hashes (argon2id, 19 MiB each) computed at once, for sign-up,
    /// sign-in and password changes; the excess waits up to 2 s, then gets
    /// 429 with `retry-after`.
    #[arg(long, env = "KEYGATE_MAX_CONCURRENT_HASHES", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_hashes: u32,
    /// Seconds a connection has to send a complete request head, from its
    /// start or from the end of its previous answer: a client that stalls,
    /// or a keep-alive connection idle that long, is closed. Never cuts a
    /// request being answered (a feed long-poll included).
    #[arg(long, env = "KEYGATE_HEADER_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// Connections served at once; further ones wait in the listen queue
    /// until one closes.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A public key secret scanning reports may be signed with, as
    /// `ID=PEM-FILE` (the `Github-Public-Key-Identifier` and a PEM P-256
    /// SPKI key; repeatable, or comma-separated in the variable); without
    /// one every report is refused.
    #[arg(
        long = "secret-scanning-key",
        env = "KEYGATE_SECRET_SCANNING_KEYS",
        value_delimiter = ','
    )]
    pub secret_scanning_key: Vec<String>,
    /// A key's requests in an hour are a spike above this many times its
    /// usual hourly requests over the past 7 days.
    #[arg(long, env = "KEYGATE_SPIKE_FACTOR", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub spike_factor: u64,
    /// The fewest requests in an hour that may be a spike.
    #[arg(long, env = "KEYGATE_SPIKE_MIN_REQUESTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub spike_min_requests: u64,
    /// Seconds between two looks for usage spikes.
    #[arg(long, env = "KEYGATE_SPIKE_CHECK_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub spike_check_seconds: u64,
}

/// Whether strangers may register tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignUpMode {
    Open,
    Closed,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant and prints its first key (holding every scope).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
    },
    /// Puts a tenant on a plan (of --plans, or the built-in ones).
    SetPlan {
        /// The tenant, `org_…`.
        org_id: OrgId,
        /// The plan's name.
        plan: String,
    },
    /// Suspends a tenant: its keys are refused (403 `Organization is
    /// suspended`) at every Envoy, its data kept.
    Suspend {
        /// The tenant's id (`org_…`).
        org_id: OrgId,
    },
    /// Resumes a suspended tenant: its keys work again.
    Resume {
        /// The tenant's id (`org_…`).
        org_id: OrgId,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Mints a key and prints it (shown once).
    Create {
        #[arg(long)]
        tenant: OrgId,
        #[arg(long)]
        name: String,
        /// Comma-separated scopes.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// `live` or `test`.
        #[arg(long)]
        environment: Option<String>,
        /// Rate-limit tier.
        #[arg(long)]
        tier: Option<String>,
        /// RFC 3339 expiry, in the future.
        #[arg(long)]
        expires_at: Option<String>,
        /// The key's own limit per minute, on top of its tier's.
        #[arg(long)]
        per_minute: Option<u64>,
        /// The key's own limit per day, on top of its tier's.
        #[arg(long)]
        per_day: Option<u64>,
        /// The key's owner, forwarded upstream as `x-key-owner`.
        #[arg(long)]
        external_id: Option<String>,
    },
    /// Lists a tenant's keys.
    List {
        #[arg(long)]
        tenant: OrgId,
    },
    /// Revokes a key.
    Revoke {
        #[arg(long)]
        tenant: OrgId,
        #[arg(long)]
        id: KeyId,
    },
}
