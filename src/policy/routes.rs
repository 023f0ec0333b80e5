//! Which route a request belongs to: the first whose `match` fits.

use crate::config::{Config, PathMatch, Route, RouteMatch};

use super::query;

/// Index of the first matching route. `params` are the request's decoded query parameters
/// (with header-borne parameters already folded in).
pub fn select(config: &Config, path: &str, params: &[(String, String)]) -> Option<usize> {
    config
        .routes
        .iter()
        .position(|r| matches(&r.matcher, path, params))
}

pub fn matches(m: &RouteMatch, path: &str, params: &[(String, String)]) -> bool {
    let path_ok = match &m.path {
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
    };
    path_ok
        && m.query_equals
            .iter()
            .all(|(k, v)| query::last(params, k) == Some(v.as_str()))
        && m.query_present
            .iter()
            .all(|k| query::last(params, k).is_some_and(|v| !v.is_empty()))
        && m.query_absent
            .iter()
            .all(|k| query::last(params, k).is_none())
}

/// Whether `method` may go through this route (GET and HEAD always; others if listed).
pub fn allows_method(route: &Route, method: &http::Method) -> bool {
    method == http::Method::GET
        || method == http::Method::HEAD
        || route.pass_through_methods.allows(method)
}
