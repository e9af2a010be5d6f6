//! The `keygate-control-plane` binary: parses the command line and runs it
//! (see `--help`); everything else is the library (`lib.rs`).

use clap::Parser;
use keygate_control_plane::cli::{Cli, Command, SignUpMode};
use keygate_control_plane::delivery::Delivery;
use keygate_control_plane::dispatch::{self, Schedule};
use keygate_control_plane::egress::Egress;
use keygate_control_plane::hashing::{Hashing, HASH_WAIT};
use keygate_control_plane::leaks::report::ScanningKeys;
use keygate_control_plane::leaks::spikes::SpikeRule;
use keygate_control_plane::leaks::LeakWatch;
use keygate_control_plane::maintenance::Upkeep;
use keygate_control_plane::operator_token::{OperatorToken, TOKEN_ENV};
use keygate_control_plane::plans::Plans;
use keygate_control_plane::policy::MintPolicy;
use keygate_control_plane::service::Service;
use keygate_control_plane::signin::signup::SignUp;
use keygate_control_plane::store;
use keygate_control_plane::{admin, server};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let common = cli.common;
    let policy = MintPolicy::new(&common.key_prefix, common.allowed_scopes, common.tiers)?
        .with_key_format(common.key_format);
    let plans = Plans::load(
        common.plans.as_deref(),
        &policy,
        common.default_plan.as_deref(),
    )?;
    let mut operator = OperatorToken::default();
    if let Command::Serve(args) = &cli.command {
        if args.feed_token.as_deref().is_none_or(str::is_empty) {
            return Err(
                "a feed token is required: pass --feed-token or set KEYGATE_FEED_TOKEN".into(),
            );
        }
        let env = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        operator = OperatorToken::configure(args.operator_token_file.as_deref(), env)?;
    }
    let store = store::open(&common.database).await?;
    // Admin commands serve no feed: nobody to wait for.
    let propagation = match &cli.command {
        Command::Serve(args) => Duration::from_millis(args.propagation_timeout_ms),
        _ => Duration::ZERO,
    };
    let delivery = Arc::new(Delivery::new(propagation));
    let mut service = Service::new(store, policy, plans, delivery);
    if let Command::Serve(args) = &cli.command {
        let at_once = usize::try_from(args.max_concurrent_hashes).unwrap_or(1);
        let watch = LeakWatch {
            keys: ScanningKeys::load(&args.secret_scanning_key)?,
            spikes: SpikeRule {
                factor: args.spike_factor,
                min_requests: args.spike_min_requests,
                every: args.spike_check_seconds,
            },
        };
        service = service
            .with_hashing(Hashing::new(at_once, HASH_WAIT))
            .with_egress(Egress::new(args.webhook_allow_cidr.clone()))
            .with_leak_watch(watch);
    }
    let service = Arc::new(service);
    let printed = match cli.command {
        Command::Serve(args) => {
            let upkeep = Upkeep {
                expired_retention: args.expired_retention_seconds,
                revisions_kept: args.revisions_kept,
            };
            let token = args.feed_token.unwrap_or_default();
            let page_keys = usize::try_from(args.feed_page_keys).unwrap_or(usize::MAX);
            let endpoint = server::Endpoint {
                listen: args.listen,
                feed_token: token,
                feed_page_keys: page_keys,
                error_format: args.error_format,
                operator,
                webhooks: dispatch::Settings {
                    schedule: Schedule {
                        backoff: args.webhook_backoff_seconds,
                        retry_for: args.webhook_retry_seconds,
                    },
                    ca_file: args.webhook_ca_file,
                },
                sign_up: SignUp {
                    open: args.signup == SignUpMode::Open,
                    per_hour: args.signup_per_hour,
                },
                limits: server::Limits {
                    header_timeout: Duration::from_secs(args.header_timeout_seconds),
                    max_connections: usize::try_from(args.max_connections).unwrap_or(1),
                },
            };
            return server::serve(service, endpoint, upkeep).await;
        }
        Command::Tenant(command) => admin::tenant(&service, command).await,
        Command::Key(command) => admin::key(&service, command).await,
    };
    println!("{}", printed.map_err(|e| e.to_string())?);
    Ok(())
}
