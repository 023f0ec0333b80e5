//! Globs over cache keys and tags (purge patterns, invalidation messages from other
//! instances, dependency rules), built in one place. globset turns a glob into a regex and
//! panics when that regex outgrows its size limit, and a purge pattern or a message read from
//! Redis is anyone's input: patterns are bounded before they are compiled, and compiling one
//! can never take its caller down.

use globset::{Glob, GlobMatcher};

/// Longest pattern accepted, in bytes: canonical keys are paths with a short query.
pub const MAX_LEN: usize = 512;
/// Most wildcards (`*`, `?`, `[`, `{`) in one pattern; each one widens the compiled regex.
pub const MAX_WILDCARDS: usize = 32;

/// The matcher for `pattern`, or why there is none (a message for operators, which names the
/// pattern only when it is short enough to show).
pub fn compile(pattern: &str) -> Result<GlobMatcher, String> {
    if pattern.len() > MAX_LEN {
        return Err(format!(
            "the pattern is {} bytes long; at most {MAX_LEN} are allowed",
            pattern.len()
        ));
    }
    let wildcards = pattern
        .bytes()
        .filter(|b| matches!(b, b'*' | b'?' | b'[' | b'{'))
        .count();
    if wildcards > MAX_WILDCARDS {
        return Err(format!(
            "`{pattern}` has {wildcards} wildcards (*, ?, [ or {{); at most {MAX_WILDCARDS} are allowed"
        ));
    }
    // The bounds above keep globset's regex far below its size limit; should one still be
    // reached, its panic becomes this pattern's refusal.
    let built = std::panic::catch_unwind(|| Glob::new(pattern).map(|g| g.compile_matcher()));
    match built {
        Ok(Ok(matcher)) => Ok(matcher),
        Ok(Err(e)) => Err(format!("`{pattern}` is not a glob: {e}")),
        Err(_) => Err(format!("`{pattern}` is too complex to match")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_patterns_match() {
        let m = compile("/propertyadvertising.php?*rob=rent*").unwrap();
        assert!(m.is_match("/propertyadvertising.php?limit=5&rob=rent"));
        assert!(!m.is_match("/propertyadvertising.php?rob=sale"));
        assert!(compile("property:*").unwrap().is_match("property:42"));
    }

    #[test]
    fn huge_or_wild_patterns_are_refused_without_panicking() {
        let e = compile(&"*".repeat(100_000)).unwrap_err();
        assert!(e.contains("100000 bytes"), "{e}");
        assert!(!e.contains("***"), "a huge pattern is not echoed: {e}");
        let e = compile(&"a*".repeat(MAX_WILDCARDS + 1)).unwrap_err();
        assert!(e.contains("33 wildcards"), "{e}");
        assert!(compile(&"a*".repeat(MAX_WILDCARDS)).is_ok());
        assert!(compile(&"[\u{0}-\u{10FFFF}]".repeat(MAX_WILDCARDS)).is_ok());
        assert!(compile(&"x".repeat(MAX_LEN)).is_ok());
        assert!(compile(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn malformed_patterns_are_errors() {
        assert!(compile("[oops").unwrap_err().contains("is not a glob"));
        assert!(compile("[z-a]").is_err());
    }
}
