//! Decisions, as pure functions over the config and the request or response at hand: which
//! route, which key, how long fresh, which headers outer caches get, whether a body is sane.
//! Nothing here does I/O.

pub mod body;
pub mod cors;
pub mod encoding;
pub mod freshness;
pub mod jpeg_markers;
pub mod key;
pub mod media;
pub mod media_complete;
pub mod media_url;
pub mod outer;
pub mod php;
pub mod query;
pub mod routes;
pub mod tags;
pub mod validators;
pub mod vary;
