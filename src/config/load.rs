//! Reading a config file: YAML syntax, then each section and each route on its own (so one
//! mistake does not hide the next), then the cross-field rules of `build.rs`. Every problem is
//! reported with its position.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::file::FileConfig;
use super::locate::{KeyPath, Locations, Seg};
use super::{build, Config};

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    /// `routes[2].ttl`, or `yaml` for a syntax error.
    pub path: String,
    pub message: String,
}

/// Every problem found in one file; displays as one `FILE:LINE:COLUMN: key.path: message` per
/// line, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, e.line, e.column, e.path, e.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Problems collected while reading, by key path; positions are attached at the end.
pub(super) type Problems = Vec<(KeyPath, String)>;

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(&text, &name),
        Err(e) => Err(ConfigErrors {
            file: name,
            errors: vec![ConfigError {
                line: 0,
                column: 0,
                path: "file".into(),
                message: format!("cannot read the file: {e}"),
            }],
        }),
    }
}

/// `load_file`, with a panic while loading (a bug) turned into an error for the file: the
/// reloader keeps running and keeps the last good config, and `rentcache check` exits 1 with
/// a message instead of 101 with a backtrace.
pub fn load_file_caught(path: &Path) -> Result<Config, ConfigErrors> {
    caught(&path.display().to_string(), || load_file(path))
}

fn caught(
    file: &str,
    load: impl FnOnce() -> Result<Config, ConfigErrors>,
) -> Result<Config, ConfigErrors> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(ConfigErrors {
            file: file.to_string(),
            errors: vec![ConfigError {
                line: 0,
                column: 0,
                path: "file".into(),
                message: format!(
                    "reading this file failed inside rentcache ({what}); this is a bug, please report it"
                ),
            }],
        })
    })
}

const SECTIONS: &str =
    "server, admin, upstream, memory, redis, cors, cdn, key, refresh_ahead, dependencies, warm, media, access_log, console, routes";

/// Parses and validates config text; `source` names it in messages.
pub fn parse_str(text: &str, source: &str) -> Result<Config, ConfigErrors> {
    let value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            return Err(ConfigErrors {
                file: source.to_string(),
                errors: vec![ConfigError {
                    line,
                    column,
                    path: "yaml".into(),
                    message: e.to_string(),
                }],
            });
        }
    };

    let mut problems: Problems = Vec::new();
    let mut file = FileConfig::default();
    let mut routes_reported = false;
    let root = KeyPath::root();
    match value {
        Value::Null => {}
        Value::Mapping(map) => {
            for (k, v) in map {
                let Some(key) = k.as_str() else {
                    problems.push((
                        root.clone(),
                        format!("section names must be text, found {k:?}"),
                    ));
                    continue;
                };
                let path = root.key(key);
                match key {
                    "server" => set(&mut file.server, section(&v, &path, &mut problems)),
                    "upstream" => set(&mut file.upstream, section(&v, &path, &mut problems)),
                    "memory" => set(&mut file.memory, section(&v, &path, &mut problems)),
                    "redis" => file.redis = section(&v, &path, &mut problems),
                    "admin" => set(&mut file.admin, section(&v, &path, &mut problems)),
                    "warm" => set(&mut file.warm, section(&v, &path, &mut problems)),
                    "media" => set(&mut file.media, section(&v, &path, &mut problems)),
                    "dependencies" => {
                        set(&mut file.dependencies, section(&v, &path, &mut problems))
                    }
                    "refresh_ahead" => {
                        set(&mut file.refresh_ahead, section(&v, &path, &mut problems))
                    }
                    "cors" => set(&mut file.cors, section(&v, &path, &mut problems)),
                    "cdn" => set(&mut file.cdn, section(&v, &path, &mut problems)),
                    "key" => set(&mut file.key, section(&v, &path, &mut problems)),
                    "access_log" => set(&mut file.access_log, section(&v, &path, &mut problems)),
                    "console" => set(&mut file.console, section(&v, &path, &mut problems)),
                    "routes" => {
                        let before = problems.len();
                        file.routes = routes(&v, &path, &mut problems);
                        // Routes that failed to parse were reported already; an empty list was not.
                        routes_reported = problems.len() > before;
                    }
                    other => problems.push((
                        path,
                        format!("unknown section `{other}` (expected one of: {SECTIONS})"),
                    )),
                }
            }
        }
        _ => problems.push((
            root,
            format!("the file must be a mapping of sections ({SECTIONS})"),
        )),
    }

    let config = build::build(&file, source, routes_reported, &mut problems);
    if problems.is_empty() {
        return Ok(config);
    }
    let locations = Locations::index(text);
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(path, message)| {
            let pos = locations.find(&path);
            ConfigError {
                line: pos.line,
                column: pos.col,
                path: path.to_string(),
                message,
            }
        })
        .collect();
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    Err(ConfigErrors {
        file: source.to_string(),
        errors,
    })
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn routes(
    v: &Value,
    path: &KeyPath,
    problems: &mut Problems,
) -> Vec<Option<super::file::RouteFile>> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| section(item, &path.index(i), problems))
            .collect(),
        Value::Null => Vec::new(),
        _ => {
            problems.push((path.clone(), "must be a list of routes".into()));
            Vec::new()
        }
    }
}

/// Deserializes one part of the file, recording every unknown key and the first type error.
fn section<T: DeserializeOwned>(v: &Value, base: &KeyPath, problems: &mut Problems) -> Option<T> {
    // An empty section (`memory:` with nothing under it) means all defaults.
    let empty = Value::Mapping(Default::default());
    let v = if v.is_null() { &empty } else { v };
    let mut unknown: Vec<KeyPath> = Vec::new();
    let result: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        v.clone(),
        &mut |p: serde_ignored::Path| unknown.push(ignored_path(&p)),
    ));
    for p in unknown {
        let name = match p.0.last() {
            Some(Seg::Key(k)) => k.clone(),
            _ => p.to_string(),
        };
        problems.push((base.join(&p), format!("unknown key `{name}`")));
    }
    match result {
        Ok(t) => Some(t),
        Err(e) => {
            let mut rel = KeyPath::root();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => rel = rel.index(*index),
                    serde_path_to_error::Segment::Map { key } => rel = rel.key(key),
                    _ => {}
                }
            }
            problems.push((base.join(&rel), e.into_inner().to_string()));
            None
        }
    }
}

fn ignored_path(p: &serde_ignored::Path) -> KeyPath {
    match p {
        serde_ignored::Path::Root => KeyPath::root(),
        serde_ignored::Path::Seq { parent, index } => ignored_path(parent).index(*index),
        serde_ignored::Path::Map { parent, key } => ignored_path(parent).key(key),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../../conf/rentcache.yaml");
        let c = parse_str(text, "conf/rentcache.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.routes.len(), 5);
        assert_eq!(c.routes[0].name, "featured");
        assert_eq!(c.routes[0].ttl.as_secs(), 600);
        assert_eq!(c.upstream.host, "www.rentman.online");
        assert!(c.upstream.tls);
    }

    #[test]
    fn reports_every_error_with_position() {
        let text = "\
server:
  listen: [\"nowhere\"]
  thread: 4
upstream:
  base_url: ftp://x
routes:
  - name: a
    match: {path: /a}
    ttl: 5m
  - name: a
    match: {path: b}
    ttl: 1m
    tll: 2m
  - name: c
    match: {path: /c}
    ttl: 5x
";
        let e = parse_str(text, "t.yaml").unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
        let expect = [
            "t.yaml:2:12: server.listen[0]:",
            "t.yaml:3:3: server.thread: unknown key `thread`",
            "t.yaml:5:3: upstream.base_url:",
            "t.yaml:10:5: routes[1].name: `a` is already the name of routes[0]",
            "t.yaml:11:13: routes[1].match.path: `b` must start with /",
            "t.yaml:13:5: routes[1].tll: unknown key `tll`",
            "t.yaml:16:5: routes[2].ttl: invalid duration",
        ];
        for want in expect {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "missing {want:?} in:\n{e}"
            );
        }
    }

    #[test]
    fn media_max_scans_defaults_and_is_checked_where_it_is_written() {
        let routes = "routes: [{name: a, match: {path: /a}, ttl: 1m}]\n";
        let c = parse_str(routes, "d.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.media.max_scans, 100);
        let c = parse_str(&format!("media:\n  max_scans: 7\n{routes}"), "s.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.media.max_scans, 7);
        for (value, want) in [
            (
                "0",
                "m.yaml:3:3: media.max_scans: 0 is not a number of scans from 1 to 10000",
            ),
            (
                "10001",
                "m.yaml:3:3: media.max_scans: 10001 is not a number",
            ),
            ("many", "m.yaml:3:3: media.max_scans: invalid type"),
        ] {
            let text = format!("media:\n  webp: true\n  max_scans: {value}\n{routes}");
            let e = parse_str(&text, "m.yaml").unwrap_err().to_string();
            assert!(e.lines().any(|l| l.starts_with(want)), "{want:?} in:\n{e}");
        }
    }

    #[test]
    fn a_panicking_load_is_an_error_for_the_file() {
        let e = caught("p.yaml", || panic!("overflow when adding durations")).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        let text = e.to_string();
        assert!(text.starts_with("p.yaml:0:0: file: "), "{text}");
        assert!(text.contains("overflow when adding durations"), "{text}");
    }

    #[test]
    fn huge_durations_and_sizes_are_located_errors() {
        // One text per bad upstream value: a section stops at its first type error.
        let cases = [
            (
                "upstream:\n  connect_timeout: 18446744073709551615\n",
                "x.yaml:2:3: upstream.connect_timeout: invalid duration",
            ),
            (
                "upstream:\n  read_timeout: 99999999999999999d\n",
                "x.yaml:2:3: upstream.read_timeout: invalid duration",
            ),
            (
                "memory:\n  max_bytes: 99999999999GiB\n",
                "x.yaml:2:3: memory.max_bytes: invalid size",
            ),
            (
                "server:\n  grace_period: 400d\n",
                "x.yaml:2:3: server.grace_period: invalid duration",
            ),
            (
                "server:\n  threads: 100000\n",
                "x.yaml:2:3: server.threads: 100000 is more than 256",
            ),
            (
                "upstream:\n  connect_timeout: 365d\n",
                "x.yaml:2:3: upstream.connect_timeout: 365d is longer than 1m",
            ),
            (
                "upstream:\n  read_timeout: 365d\n",
                "x.yaml:2:3: upstream.read_timeout: 365d is longer than 10m",
            ),
            (
                "upstream:\n  max_concurrent: 18446744073709551615\n",
                "x.yaml:2:3: upstream.max_concurrent: 18446744073709551615 is more than 100000",
            ),
            (
                "redis:\n  url: redis://127.0.0.1:1\n  op_timeout: 2h\n",
                "x.yaml:3:3: redis.op_timeout: 2h is longer than 1m",
            ),
        ];
        let routes = "routes:\n  - name: a\n    match: {path: /a}\n    ttl: 5m\n";
        for (head, want) in cases {
            let e = parse_str(&format!("{head}{routes}"), "x.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                e.lines().any(|l| l.starts_with(want)),
                "missing {want:?} in:\n{e}"
            );
        }
        let e = parse_str(&format!("{routes}    upstream_timeout: 11m\n"), "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.yaml:5:5: routes[0].upstream_timeout: 11m is longer than 10m"),
            "{e}"
        );
    }

    #[test]
    fn body_dir_must_be_a_directory_that_takes_unnamed_files() {
        let routes = "routes:\n  - name: a\n    match: {path: /a}\n    ttl: 5m\n";
        for (dir, want) in [
            (
                "relative/dir",
                "must be an absolute path, `auto` or `memory`",
            ),
            (
                "/nonexistent/rentcache",
                "/nonexistent/rentcache is not a directory",
            ),
            // procfs cannot make files: the check is the one the store relies on.
            ("/proc", "cannot make an unnamed file in /proc (O_TMPFILE)"),
        ] {
            let text = format!("memory:\n  max_bytes: 64MiB\n  body_dir: {dir}\n{routes}");
            let e = parse_str(&text, "b.yaml").unwrap_err().to_string();
            let want = format!("b.yaml:3:3: memory.body_dir: {want}");
            assert!(e.starts_with(&want), "missing {want:?} in:\n{e}");
        }
        let dir = std::env::temp_dir();
        let text = format!("memory:\n  body_dir: {}\n{routes}", dir.display());
        let c = parse_str(&text, "b.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.memory.body_dir.as_deref(), Some(dir.as_path()));
        let with = |v: &str| {
            let text = format!("memory:\n  body_dir: {v}\n{routes}");
            parse_str(&text, "b.yaml")
                .unwrap_or_else(|e| panic!("{e}"))
                .memory
                .body_dir
        };
        assert_eq!(with("memory"), None, "memory files when asked for");
        // Unset is `auto`: /var/tmp when it is on a disk filesystem that makes unnamed
        // files, memory files otherwise.
        let unset = parse_str(routes, "b.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unset.memory.body_dir, with("auto"));
        let var_tmp = std::path::Path::new("/var/tmp");
        let usable = var_tmp.is_dir()
            && !super::super::build::in_memory_filesystem(var_tmp)
            && crate::storage::shared_body::unnamed_file(var_tmp).is_some();
        assert_eq!(
            unset.memory.body_dir.as_deref(),
            usable.then_some(var_tmp),
            "auto picks /var/tmp exactly when it can hold the bodies"
        );
        // A memory filesystem never: its files are shared memory without the seal.
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            assert!(super::super::build::in_memory_filesystem(shm));
        }
    }

    #[test]
    fn huge_dependency_globs_are_located_errors() {
        let text = format!(
            "dependencies:\n  - when: \"property:*\"\n    purge: [a]\n  - when: \"{}\"\n    purge: [b]\nroutes: [{{name: a, match: {{path: /a}}, ttl: 1m}}]\n",
            "*".repeat(100_000)
        );
        let e = parse_str(&text, "d.yaml").unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert!(
            e.to_string()
                .starts_with("d.yaml:4:5: dependencies[1].when: the pattern is 100000 bytes long"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse_str("routes:\n  - name: [unclosed\n", "s.yaml").unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].path, "yaml");
        assert!(e.errors[0].line >= 2, "{e}");
    }

    #[test]
    fn shadowed_route_is_reported() {
        let text = "routes:\n  - {name: all, match: {path_prefix: /}, ttl: 1m}\n  - {name: x, match: {path: /x}, ttl: 1m}\n";
        let e = parse_str(text, "r.yaml").unwrap_err().to_string();
        assert!(e.contains("routes[1].match: never used"), "{e}");
    }

    #[test]
    fn missing_routes_is_an_error() {
        let e = parse_str("server: {threads: 1}\n", "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("routes: at least one route"), "{e}");
        let e = parse_str("routes: []\n", "m.yaml").unwrap_err().to_string();
        assert!(e.contains("m.yaml:1:1: routes: at least one route"), "{e}");
    }
}

/// The loader on generated text: any text is a config or located errors, never a panic
/// (`PROPTEST_CASES` sets how many; `bench/fuzz.sh` runs millions).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const SHIPPED: &str = include_str!("../../conf/rentcache.yaml");

    /// Pieces of YAML, of this file format, and of values at and past every bound.
    const PIECES: &[&str] = &[
        "\n",
        "  ",
        "    ",
        "- ",
        ": ",
        ":",
        ",",
        "{",
        "}",
        "[",
        "]",
        "#",
        "'",
        "\"",
        "&a ",
        "*a",
        "<<: *a",
        "!!str ",
        "!!binary ",
        "? ",
        "---\n",
        "...\n",
        "|\n",
        ">\n",
        "\t",
        "~",
        "null",
        "true",
        "-1",
        "0",
        "1",
        "1.5e308",
        "-0",
        ".nan",
        "0x10",
        "99999999999999999d",
        "18446744073709551615",
        "18446744073709551616",
        "365d",
        "366d",
        "1h30m",
        "250ms",
        "8760h1ms",
        "1TiB",
        "1025GiB",
        "64MiB",
        "99999999999GiB",
        "routes:",
        "name: a",
        "match: {path: /a}",
        "ttl: ",
        "server:",
        "upstream:",
        "redis:",
        "memory:",
        "cors:",
        "key:",
        "warm:",
        "dependencies:",
        "refresh_ahead:",
        "admin:",
        "read_timeout: ",
        "connect_timeout: ",
        "max_concurrent: ",
        "threads: ",
        "max_bytes: ",
        "when: ",
        "purge: [x]",
        "property:*",
        "**********",
        "[z-a]",
        "url: redis://x",
        "lists:",
        "follow:",
        "every: ",
        "urls: [/a]",
        "path_prefix: /",
        "query: {a: 1}",
        "include_params:",
        "key_headers: {accept: []}",
        "base_url: ",
        "http://",
        "https://h:99999",
        "é",
        "\u{0}",
        "\u{feff}",
    ];

    fn yamlish() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|p| p.concat())
    }

    /// The shipped file with lines deleted, repeated, or with pieces put in them.
    fn mutated() -> impl Strategy<Value = String> {
        let lines = SHIPPED.lines().count();
        prop::collection::vec(
            (0..lines, 0u8..4, prop::sample::select(PIECES), 0usize..80),
            1..6,
        )
        .prop_map(|edits| {
            let mut lines: Vec<String> = SHIPPED.lines().map(String::from).collect();
            for (at, kind, piece, col) in edits {
                let at = at.min(lines.len().saturating_sub(1));
                let Some(line) = lines.get_mut(at) else {
                    continue;
                };
                match kind {
                    0 => {
                        lines.remove(at);
                    }
                    1 => {
                        let copy = line.clone();
                        lines.insert(at, copy);
                    }
                    2 => {
                        // Replace the value of a `key: value` line.
                        if let Some(i) = line.find(": ") {
                            line.truncate(i + 2);
                            line.push_str(piece);
                        }
                    }
                    _ => {
                        let mut i = col.min(line.len());
                        while !line.is_char_boundary(i) {
                            i -= 1;
                        }
                        line.insert_str(i, piece);
                    }
                }
            }
            lines.join("\n")
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_is_a_config_or_errors(text in "\\PC{0,200}") {
            let _ = parse_str(&text, "fuzz.yaml");
        }

        #[test]
        fn yamlish_text_is_a_config_or_errors(text in yamlish()) {
            if let Err(e) = parse_str(&text, "fuzz.yaml") {
                prop_assert!(!e.errors.is_empty());
            }
        }

        #[test]
        fn mutated_shipped_config_is_a_config_or_located_errors(text in mutated()) {
            if let Err(e) = parse_str(&text, "fuzz.yaml") {
                prop_assert!(!e.errors.is_empty());
                let shown = e.to_string();
                prop_assert!(shown.lines().all(|l| l.starts_with("fuzz.yaml:")), "{}", shown);
            }
        }
    }
}
