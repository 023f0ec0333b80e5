//! Durations (`300`, `5m`, `1h30m`, `250ms`) and byte sizes (`1048576`, `64MiB`, `2GB`) as
//! operators write them in YAML.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as bare seconds or as number+unit segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

/// A byte count written as a bare number or with a decimal (kB, MB, GB) or binary (KiB, MiB,
/// GiB) unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

/// No duration may be longer: a year is beyond any lifetime or timeout that makes sense, and
/// well inside what `SystemTime` and `Duration` arithmetic can add up without overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// No size may be larger (1 TiB): beyond any memory budget this program can be given, and far
/// from the `u64`/`usize` arithmetic done on sizes.
pub const MAX_SIZE: u64 = 1 << 40;

/// A duration the way operators write it: `250ms`, `30s`, `10m`, `1h30m`, `365d`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        let d = Duration::from_secs(secs);
        return if d > MAX_DURATION {
            Err(too_long(text))
        } else {
            Ok(d)
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number before {rest:?} (examples: 300, 5m, 1h30m, 250ms)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: a unit is needed after {n} (ms, s, m, h or d)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ))
            }
        };
        total = total.saturating_add(part);
        if total > MAX_DURATION {
            return Err(too_long(text));
        }
    }
    Ok(total)
}

fn too_long(text: &str) -> String {
    format!("invalid duration {text:?}: longer than 365d, the most any duration may be")
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(format!(
            "invalid size {text:?}: expected a number (examples: 1048576, 64MiB, 2GB)"
        ));
    }
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let mult: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" | "KB" | "k" | "K" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, kB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&b| b <= MAX_SIZE)
        .ok_or_else(|| format!("invalid size {text:?}: larger than 1TiB, the most any size may be"))
}

/// Accepts an integer or a string and hands the text to `parse`.
struct TextOrInt<F>(&'static str, F);

impl<'de, F, T> Visitor<'de> for TextOrInt<F>
where
    F: Fn(&str) -> Result<T, String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.1)(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!("{v} is negative; {}", self.0)));
        }
        self.visit_u64(v as u64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt(
            "a duration such as 300, 5m, 1h30m or 250ms",
            parse_duration,
        ))
        .map(Dur)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt(
            "a size such as 1048576, 64MiB or 2GB",
            parse_size,
        ))
        .map(Size)
    }
}

impl Dur {
    pub fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10 5").is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        for huge in [
            "366d",
            "99999999999999999d",
            "18446744073709551615",
            "18446744073709551616",
            "31536001",
            "364d24h1s",
            "8760h1ms",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("365d") || e.contains("too large"), "{huge}: {e}");
        }
    }

    #[test]
    fn durations_are_shown_as_written() {
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
        assert_eq!(show_duration(MAX_DURATION), "365d");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(parse_size("1024GiB").unwrap(), MAX_SIZE);
        assert!(parse_size("1025GiB").unwrap_err().contains("1TiB"));
        assert!(parse_size("18446744073709551615").is_err());
        assert!(parse_size("99999999999999999999999GiB").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("10 KiB").unwrap(), 10 << 10);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn deserialize_from_yaml() {
        let d: Dur = serde_yaml::from_str("90").unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        let d: Dur = serde_yaml::from_str("\"1m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(60));
        let s: Size = serde_yaml::from_str("8MiB").unwrap();
        assert_eq!(s.0, 8 << 20);
        assert!(serde_yaml::from_str::<Dur>("-5").is_err());
    }
}
