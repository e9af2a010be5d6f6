//! Who may sign up and sign in to the dashboard, kept in the routes' state
//! (crate::state): the sign-up settings ([`signup`]), the failed sign-in
//! counts ([`throttle`], in the database) and the hash an unknown email's
//! password is checked against (crate::dashboard makes it on first use).

pub mod signup;
pub mod throttle;

use signup::SignUp;
use tokio::sync::OnceCell;

/// The sign-up settings and the unknown email's hash.
#[derive(Debug, Default)]
pub struct SignInState {
    pub sign_up: SignUp,
    pub unknown: OnceCell<String>,
}
