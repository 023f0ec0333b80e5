//! rentcache: a caching reverse proxy for Rentman's property advertising API.
//!
//! Dependencies point one way: `config` -> `policy` -> `storage` / `upstream` / `proxy` -> `server`.
//! `glob` and `json_error` are leaves any of them may use. The `simulator` is a stand-alone
//! Rentman look-alike that nothing else imports.

// A panic a request, a config or an upstream answer can reach is a bug: outside tests, every
// `unwrap`, `expect` and unchecked index must be justified where it stands (`#[allow]` with
// the reason it cannot fail).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod admin;
pub mod cdn;
pub mod cli;
pub mod config;
pub mod demo_site;
pub mod glob;
pub mod imaging;
pub mod json_error;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod server;
// A test double for the tests and the demo: its inputs are theirs, and a panic in it ends one
// of its own connections (a task), never the proxy.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub mod simulator;
pub mod storage;
pub mod tls;
pub mod upstream;
pub mod warm;
