//! The messages on `<prefix>invalidate` that keep every instance's memory tier coherent, and
//! their one reading. Any process that can publish on the channel writes them, so reading one
//! never panics: what cannot be read is refused with a reason.
//!
//! | message | drop from memory |
//! |---|---|
//! | 32 hex digits | the entry with that key hash |
//! | `t:<tag>` | the keys this instance indexed under the tag |
//! | `g:<glob>` | the keys this instance indexed that match the glob |
//! | `*` | everything stored before now |
//! | `a:<id>` | nothing: a purge's marker, acknowledged in Redis once read (see `acks.rs`) |

use globset::GlobMatcher;
use pingora::cache::key::HashBinary;

/// The message meaning "everything".
pub const ALL: &str = "*";

/// One message, read.
#[derive(Debug, Clone)]
pub enum Invalidation {
    All,
    Key(HashBinary),
    Tag(String),
    Glob(GlobMatcher),
    /// A purge's marker, with its id (1 to 64 ASCII letters and digits).
    Marker(String),
}

/// The marker message for `id`.
pub fn marker(id: &str) -> String {
    format!("a:{id}")
}

/// Reads one message.
pub fn parse(payload: &[u8]) -> Result<Invalidation, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_string())?;
    if text == ALL {
        return Ok(Invalidation::All);
    }
    if let Some(tag) = text.strip_prefix("t:") {
        return Ok(Invalidation::Tag(tag.to_string()));
    }
    if let Some(id) = text.strip_prefix("a:") {
        // The id becomes part of a Redis key: nothing but letters and digits.
        let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
        return if ok {
            Ok(Invalidation::Marker(id.to_string()))
        } else {
            Err("a marker id must be 1 to 64 letters and digits".into())
        };
    }
    if let Some(pattern) = text.strip_prefix("g:") {
        return crate::glob::compile(pattern).map(Invalidation::Glob);
    }
    let mut hash = [0u8; 16];
    hex::decode_to_slice(text, &mut hash)
        .map_err(|_| "neither a key hash, t:TAG, g:GLOB nor *".to_string())?;
    Ok(Invalidation::Key(hash))
}

/// The start of a message, for a log line (a message may be any size and any bytes).
pub fn excerpt(payload: &[u8]) -> String {
    const SHOWN: usize = 80;
    let shown = payload.get(..SHOWN).unwrap_or(payload);
    let head = String::from_utf8_lossy(shown).into_owned();
    let head: String = head.escape_debug().collect();
    if payload.len() > SHOWN {
        format!("\"{head}\"... ({} bytes)", payload.len())
    } else {
        format!("\"{head}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind() {
        assert!(matches!(parse(b"*"), Ok(Invalidation::All)));
        assert!(matches!(parse(b"t:property:4"), Ok(Invalidation::Tag(t)) if t == "property:4"));
        let Ok(Invalidation::Glob(g)) = parse(b"g:/p?*rob=rent*") else {
            panic!("a glob");
        };
        assert!(g.is_match("/p?rob=rent"));
        let hex = "00112233445566778899aabbccddeeff";
        let Ok(Invalidation::Key(h)) = parse(hex.as_bytes()) else {
            panic!("a key hash");
        };
        assert_eq!(hex::encode(h), hex);
        let id = "0123456789abcdef0123456789abcdef";
        assert!(matches!(parse(marker(id).as_bytes()), Ok(Invalidation::Marker(m)) if m == id));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let huge = format!("g:{}", "*".repeat(100_000));
        assert!(parse(huge.as_bytes()).unwrap_err().contains("100000 bytes"));
        assert!(parse(b"g:[oops").is_err());
        assert!(parse(b"\xff\xfe").is_err());
        assert!(parse(b"0011").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"a:").is_err());
        assert!(parse(b"a:x y").is_err());
        assert!(parse(format!("a:{}", "f".repeat(65)).as_bytes()).is_err());
        let shown = excerpt(huge.as_bytes());
        assert!(
            shown.len() < 120 && shown.ends_with("(100002 bytes)"),
            "{shown}"
        );
    }
}
