//! The control plane's request-body drafts as a library, for the fuzz
//! targets (`fuzz/`): `drafts` and the modules it needs. The binary
//! (`main.rs`) compiles these same files as its own modules.

pub mod body;
pub mod clock;
pub mod drafts;
pub mod errors;
pub mod policy;
pub mod store;
