//! What the dashboard's sign-in keeps between requests (in the routes'
//! state, crate::state): the failed sign-in counts ([`throttle`]) and the
//! hash an unknown email's password is checked against (crate::dashboard
//! makes it on first use).

pub mod throttle;

use throttle::SignInThrottle;
use tokio::sync::OnceCell;

/// The sign-in throttle and the unknown email's hash.
#[derive(Debug, Default)]
pub struct SignInState {
    pub throttle: SignInThrottle,
    pub unknown: OnceCell<String>,
}
