//! rentcache: a caching reverse proxy for Rentman's property advertising API.
//!
//! Dependencies point one way: `config` -> `policy` -> `storage` / `upstream` / `proxy` -> `server`.
//! `glob` and `json_error` are leaves any of them may use. The `simulator` is a stand-alone
//! Rentman look-alike that nothing else imports.

pub mod admin;
pub mod cli;
pub mod config;
pub mod glob;
pub mod json_error;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod simulator;
pub mod storage;
pub mod upstream;
pub mod warm;
