//! The state every route shares, built once by crate::server: the service,
//! the key table feed, the operator token, the sign-up and sign-in state
//! and the error dialect; a handler extracts the part it needs.

use crate::feed::FeedEndpoint;
use crate::operator_token::OperatorToken;
use crate::service::Service;
use crate::signin::SignInState;
use axum::extract::FromRef;
use keygate::errors::ErrorFormat;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub feed: Arc<FeedEndpoint>,
    pub operator: Arc<OperatorToken>,
    /// Who may sign up, and the dashboard's sign-in (crate::signin).
    pub sign_in: Arc<SignInState>,
    /// The dialect of every JSON error (`--error-format`).
    pub error_format: ErrorFormat,
}

impl FromRef<AppState> for Arc<Service> {
    fn from_ref(state: &AppState) -> Arc<Service> {
        Arc::clone(&state.service)
    }
}

impl FromRef<AppState> for Arc<FeedEndpoint> {
    fn from_ref(state: &AppState) -> Arc<FeedEndpoint> {
        Arc::clone(&state.feed)
    }
}
