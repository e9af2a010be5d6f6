//! What the bench shares with the end-to-end tests: the synthetic key-table
//! feed server, the key sets it serves, and the small HTTP client they use
//! (tests/tests/native_one_table.rs loads big tables with them).

pub mod feed_server;
pub mod http;
pub mod keys;
