//! Parameter names the way PHP reads them into `$_GET` (Rentman is PHP), so that a name
//! compared to the token or to `key.drop_params` is compared to what Rentman will see, not
//! to how a client spelled it. PHP's `php_register_variable_ex`:
//!
//! - the name ends at a NUL byte (`token%00x` is `token`);
//! - leading spaces are dropped (`%20token`, `+token` are `token`);
//! - spaces and dots become `_` (`a.b` and `a b` are `a_b`);
//! - `name[...]` with a closing `]` somewhere after the `[` is the array `name`
//!   (`token[]`, `token[x]` are `token`);
//! - a `[` with no `]` after it becomes `_`, and so do the spaces, dots and `[` after it
//!   (`a[b.c` is `a_b_c`);
//! - a name that is empty by then (`[x]`, a lone space) is not registered at all.

/// The name PHP registers for the raw (already percent-decoded) name `raw`: the array's name
/// for `name[...]`, `""` when PHP ignores the parameter.
pub fn php_name(raw: &str) -> String {
    let cut = raw.split('\0').next().unwrap_or_default();
    let name = cut.trim_start_matches(' ');
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.char_indices() {
        match c {
            ' ' | '.' => out.push('_'),
            '[' => {
                // PHP drops a variable whose name before its first `[` is empty, bracket
                // matched or not.
                if out.is_empty() {
                    return out;
                }
                let rest = name.get(i + 1..).unwrap_or_default();
                if rest.contains(']') {
                    return out;
                }
                out.push('_');
                out.extend(rest.chars().map(|c| match c {
                    ' ' | '.' | '[' => '_',
                    c => c,
                }));
                return out;
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether a parameter spelled `raw` carries the token named `token`. Beyond PHP's own
/// reading, case and `_` at either end are ignored: such names are what the mangling above
/// makes of a token spelled with a stray dot, space or bracket (`token.`, `token[`), and
/// Rentman ignores parameters it does not know, so dropping one costs nothing while
/// forwarding a credential would.
pub fn is_token(raw: &str, token: &str) -> bool {
    let name = php_name(raw);
    let token = php_name(token);
    !token.is_empty()
        && name
            .trim_matches('_')
            .eq_ignore_ascii_case(token.trim_matches('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_as_php_does() {
        // Examples from PHP's manual ("Variables From External Sources": dots and spaces
        // become underscores) and from php_register_variable_ex's handling of brackets.
        for (raw, php) in [
            ("token", "token"),
            ("a.b", "a_b"),
            ("a b", "a_b"),
            (" token", "token"),
            ("   token", "token"),
            ("\ttoken", "\ttoken"),
            ("token\0", "token"),
            ("token\0tail", "token"),
            ("\0token", ""),
            ("token[]", "token"),
            ("token[x]", "token"),
            ("token[x][y]", "token"),
            ("token[ x]", "token"),
            ("token]", "token]"),
            ("token.", "token_"),
            ("token ", "token_"),
            ("token[", "token_"),
            ("a[b.c", "a_b_c"),
            ("a[b c[d", "a_b_c_d"),
            ("a.b[c]", "a_b"),
            ("a[b]c", "a"),
            ("[x]", ""),
            ("[x", ""),
            (" ", ""),
            ("", ""),
            (".", "_"),
            ("utm.source", "utm_source"),
            ("é.x", "é_x"),
        ] {
            assert_eq!(php_name(raw), php, "{raw:?}");
        }
    }

    #[test]
    fn the_token_in_any_spelling() {
        for raw in [
            "token",
            "TOKEN",
            "Token",
            " token",
            "  token",
            "token\0",
            "token\0x",
            "token[]",
            "token[0]",
            "token[a][b]",
            "token.",
            "token ",
            "token[",
            " token[]",
            "_token",
            "token_",
        ] {
            assert!(is_token(raw, "token"), "{raw:?}");
        }
        for raw in [
            "tokens", "to.ken", "atoken", "token[x", "[token]", "\0token", "tok",
        ] {
            assert!(!is_token(raw, "token"), "{raw:?}");
        }
        // A configured name is read the way PHP reads it too.
        assert!(is_token("api key", "api.key"));
        assert!(is_token("api_key[]", "api_key"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What PHP registers is never a name PHP would read differently again.
        #[test]
        fn php_names_are_stable(raw in "\\PC{0,16}|[ .\\[\\]a-z\\x00]{0,16}") {
            let once = php_name(&raw);
            prop_assert!(!once.contains(['\0', ' ', '.']), "{:?} -> {:?}", raw, once);
            prop_assert_eq!(php_name(&once), once.clone());
        }
    }
}
