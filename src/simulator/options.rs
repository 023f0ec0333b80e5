//! Start-up flags of `rentcache simulate` and the subset of them that can be changed at run
//! time through `/__sim/faults`.

use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Deserializer, Serialize};

/// Options of `rentcache simulate` (and of the simulator embedded by `rentcache demo`).
///
/// Everything from `--latency-ms` down is only the *initial* value of a run-time setting
/// ([`Settings`]); tests flip them later with `POST /__sim/faults`.
#[derive(Args, Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on. Only loopback makes sense: this is a test double.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, default_value_t = 8081)]
    pub port: u16,

    /// Also serve HTTPS on this port (with --tls-cert and --tls-key), as Rentman does.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_port: Option<u16>,

    /// PEM certificate (chain) of the HTTPS listener.
    #[arg(long)]
    pub tls_cert: Option<String>,

    /// PEM private key of the HTTPS listener.
    #[arg(long)]
    pub tls_key: Option<String>,

    /// Worker threads of the simulator's runtime.
    #[arg(long, default_value_t = 2, value_parser = parse_threads)]
    pub threads: usize,

    /// Number of advertised properties (proprefs 1..=N).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub properties: u32,

    /// Seed of the data set and of the fault dice: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Encode the flags `featured`, `nonres`, `commercial`, `shortlet` as integers 0/1
    /// (newer Rentman clients) instead of the one-character strings "\u0000"/"\u0001".
    #[arg(long)]
    pub int_flags: bool,

    /// Median time to first byte of an API response, in milliseconds (0 = none).
    #[arg(long, default_value_t = 350)]
    pub latency_ms: u64,

    /// Shape (sigma) of the log-normal latency; 0 makes every latency exactly --latency-ms.
    #[arg(long, default_value_t = 0.6, value_parser = parse_sigma)]
    pub latency_sigma: f64,

    /// Only requests carrying exactly this token (header or query `token`) get data.
    /// Without it any token, or none, is accepted.
    #[arg(long)]
    pub token: Option<String>,

    /// What a missing or wrong token gets (always with HTTP 200, as the real API does).
    #[arg(long, value_enum, default_value_t = BadTokenBody::Empty)]
    pub bad_token_body: BadTokenBody,

    /// Probability (0..1) that an API request is answered with --error-status.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// Status of injected errors.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(400..=599))]
    pub error_status: u16,

    /// Probability (0..1) that the connection is closed without any response.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,

    /// Probability (0..1) that a request waits --stall-ms before being answered.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub stall_rate: f64,

    /// Length of a stall, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub stall_ms: u64,

    /// At most this many API requests per second (sliding 1 s window); beyond it, 429.
    #[arg(long)]
    pub rate_limit: Option<u32>,

    /// `Retry-After` seconds sent with a 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,

    /// Send a strong `ETag` and a `Last-Modified`, and honour `If-None-Match` /
    /// `If-Modified-Since` with 304 (the real API sends no validators).
    #[arg(long)]
    pub validators: bool,
}

impl Default for SimOptions {
    /// The defaults of the command line, so embedders and tests need not repeat them.
    fn default() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            opts: SimOptions,
        }
        Wrapper::parse_from(["simulate"]).opts
    }
}

/// Body of a 200 answer to a missing or wrong token.
#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BadTokenBody {
    /// An empty body.
    Empty,
    /// A short plain-text message.
    Text,
    /// A JSON object `{"error": ...}` (not the array clients expect).
    Object,
}

/// Settings that `/__sim/faults` reads and changes while the simulator runs.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Settings {
    pub latency_ms: u64,
    pub latency_sigma: f64,
    pub token: Option<String>,
    pub bad_token_body: BadTokenBody,
    pub error_rate: f64,
    pub error_status: u16,
    pub reset_rate: f64,
    pub stall_rate: f64,
    pub stall_ms: u64,
    /// `None` (shown as `null`) means unlimited.
    pub rate_limit: Option<u32>,
    pub retry_after: u64,
    pub validators: bool,
}

impl Settings {
    pub fn from_options(o: &SimOptions) -> Settings {
        Settings {
            latency_ms: o.latency_ms,
            latency_sigma: o.latency_sigma,
            token: o.token.clone(),
            bad_token_body: o.bad_token_body,
            error_rate: o.error_rate,
            error_status: o.error_status,
            reset_rate: o.reset_rate,
            stall_rate: o.stall_rate,
            stall_ms: o.stall_ms,
            rate_limit: o.rate_limit.filter(|&n| n > 0),
            retry_after: o.retry_after,
            validators: o.validators,
        }
    }

    /// Applies a JSON patch (any subset of the fields). The patch is validated as a whole, so
    /// a bad request leaves the settings untouched and the caller sees why.
    pub fn patched(&self, json: &[u8]) -> Result<Settings, String> {
        let patch: SettingsPatch = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut s = self.clone();
        if let Some(v) = patch.latency_ms {
            s.latency_ms = v;
        }
        if let Some(v) = patch.latency_sigma {
            s.latency_sigma = check_sigma(v)?;
        }
        if let Some(v) = patch.token {
            s.token = v;
        }
        if let Some(v) = patch.bad_token_body {
            s.bad_token_body = v;
        }
        if let Some(v) = patch.error_rate {
            s.error_rate = check_rate("error_rate", v)?;
        }
        if let Some(v) = patch.error_status {
            if !(400..=599).contains(&v) {
                return Err(format!("error_status must be 400..=599, got {v}"));
            }
            s.error_status = v;
        }
        if let Some(v) = patch.reset_rate {
            s.reset_rate = check_rate("reset_rate", v)?;
        }
        if let Some(v) = patch.stall_rate {
            s.stall_rate = check_rate("stall_rate", v)?;
        }
        if let Some(v) = patch.stall_ms {
            s.stall_ms = v;
        }
        if let Some(v) = patch.rate_limit {
            s.rate_limit = v.filter(|&n| n > 0);
        }
        if let Some(v) = patch.retry_after {
            s.retry_after = v;
        }
        if let Some(v) = patch.validators {
            s.validators = v;
        }
        Ok(s)
    }
}

/// The body of `POST /__sim/faults`. Unknown keys are refused so that a typo in a test does
/// not silently leave the origin healthy.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    latency_ms: Option<u64>,
    latency_sigma: Option<f64>,
    /// Outer `None`: key absent; `Some(None)`: `null`, i.e. accept any token.
    #[serde(default, deserialize_with = "present")]
    token: Option<Option<String>>,
    bad_token_body: Option<BadTokenBody>,
    error_rate: Option<f64>,
    error_status: Option<u16>,
    reset_rate: Option<f64>,
    stall_rate: Option<f64>,
    stall_ms: Option<u64>,
    /// `null` or 0 turn the limit off.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<u32>>,
    retry_after: Option<u64>,
    validators: Option<bool>,
}

/// Tells a key given as `null` apart from a missing key (serde maps both to `None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn check_rate(name: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{name} must be a probability in 0..=1, got {v}"))
    }
}

fn check_sigma(v: f64) -> Result<f64, String> {
    if v.is_finite() && (0.0..=5.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("latency_sigma must be in 0..=5, got {v}"))
    }
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("expected 1..=256 threads, got {s:?}")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    check_rate("a rate", v)
}

fn parse_sigma(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    check_sigma(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_brief() {
        let o = SimOptions::default();
        assert_eq!(o.host, "127.0.0.1");
        assert_eq!(o.port, 8081);
        assert_eq!(o.threads, 2);
        assert_eq!(o.properties, 120);
        assert_eq!(o.seed, 1);
        assert_eq!(o.latency_ms, 350);
        assert_eq!(o.latency_sigma, 0.6);
        assert_eq!(o.bad_token_body, BadTokenBody::Empty);
        assert_eq!(o.error_status, 500);
        assert_eq!(o.stall_ms, 30_000);
        assert_eq!(o.retry_after, 1);
        assert!(o.token.is_none() && o.rate_limit.is_none() && !o.validators);
    }

    #[test]
    fn patch_sets_only_given_keys_and_null_token_means_any() {
        let o = SimOptions {
            token: Some("secret".into()),
            ..SimOptions::default()
        };
        let s = Settings::from_options(&o);
        let p = s
            .patched(br#"{"error_rate": 0.5, "rate_limit": 3}"#)
            .unwrap();
        assert_eq!(p.error_rate, 0.5);
        assert_eq!(p.rate_limit, Some(3));
        assert_eq!(p.token.as_deref(), Some("secret"));
        let p = p
            .patched(br#"{"token": null, "rate_limit": null}"#)
            .unwrap();
        assert_eq!(p.token, None);
        assert_eq!(p.rate_limit, None);
        assert_eq!(p.error_rate, 0.5);
    }

    #[test]
    fn patch_rejects_typos_and_out_of_range_values() {
        let s = Settings::from_options(&SimOptions::default());
        assert!(s.patched(br#"{"eror_rate": 1}"#).is_err());
        assert!(s.patched(br#"{"error_rate": 1.5}"#).is_err());
        assert!(s.patched(br#"{"error_status": 200}"#).is_err());
        assert!(s.patched(br#"{"bad_token_body": "html"}"#).is_err());
        assert!(s.patched(b"not json").is_err());
    }
}
