//! Leaked keys (SPEC §17): secret scanning reports in GitHub's partner
//! format (crate::leaks::report), the tenant's leak policy
//! (crate::leaks::settings) and usage-spike alerts (crate::leaks::spikes);
//! and [`LeakWatch`], their configuration (`serve --secret-scanning-key`,
//! `--spike-*`).

pub mod report;
pub mod settings;
pub mod spikes;

use crate::state::AppState;
use axum::Router;
use report::ScanningKeys;
use spikes::SpikeRule;

/// What `serve` configures for leaked keys.
#[derive(Debug, Clone, Default)]
pub struct LeakWatch {
    /// The public keys reports may be signed with (none: every report is a 401).
    pub keys: ScanningKeys,
    /// When a key's hour counts as a spike.
    pub spikes: SpikeRule,
}

/// The routes of the secret scanning report and of the tenant's settings.
pub fn routes() -> Router<AppState> {
    report::routes().merge(settings::routes())
}
