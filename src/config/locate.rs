//! Source positions of every key and sequence item in a YAML document, so that any error found
//! after parsing (a bad value, a rule that spans fields) can name `file:line:column`.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser};

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path such as `routes[2].match.path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    pub fn key(&self, k: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        KeyPath(v)
    }

    pub fn index(&self, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }

    /// `self` followed by every segment of `rest`.
    pub fn join(&self, rest: &KeyPath) -> KeyPath {
        let mut v = self.0.clone();
        v.extend(rest.0.iter().cloned());
        KeyPath(v)
    }

    fn parent(&self) -> Option<KeyPath> {
        if self.0.is_empty() {
            None
        } else {
            self.0
                .split_last()
                .map(|(_, parent)| KeyPath(parent.to_vec()))
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions of keys (and of sequence items) by path.
#[derive(Debug, Default)]
pub struct Locations {
    map: HashMap<KeyPath, Pos>,
}

enum Frame {
    Map {
        path: KeyPath,
        pending_key: Option<String>,
    },
    Seq {
        path: KeyPath,
        next: usize,
    },
}

impl Locations {
    /// Indexes `text`; a document the parser rejects yields an empty index (the YAML error
    /// itself is reported by the deserializer with its own position).
    pub fn index(text: &str) -> Locations {
        let mut map = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            // Where a new node sits: a key awaiting its value, or the next item of a sequence.
            let node_path = |stack: &mut Vec<Frame>| -> Option<KeyPath> {
                match stack.last_mut() {
                    Some(Frame::Map { path, pending_key }) => {
                        pending_key.take().map(|k| path.key(&k))
                    }
                    Some(Frame::Seq { path, next }) => {
                        let p = path.index(*next);
                        *next += 1;
                        Some(p)
                    }
                    None => Some(KeyPath::root()),
                }
            };
            match event {
                Event::Scalar(value, ..) => {
                    let is_key = matches!(
                        stack.last(),
                        Some(Frame::Map {
                            pending_key: None,
                            ..
                        })
                    );
                    if is_key {
                        if let Some(Frame::Map { path, pending_key }) = stack.last_mut() {
                            map.entry(path.key(&value)).or_insert(pos);
                            *pending_key = Some(value.into_owned());
                        }
                    } else if let Some(p) = node_path(&mut stack) {
                        map.entry(p).or_insert(pos);
                    }
                }
                Event::Alias(_) => {
                    if let Some(p) = node_path(&mut stack) {
                        map.entry(p).or_insert(pos);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = node_path(&mut stack).unwrap_or_default();
                    map.entry(path.clone()).or_insert(pos);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map {
                            path,
                            pending_key: None,
                        }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Locations { map }
    }

    /// The position of `path`, or of its closest ancestor that appears in the file (a missing
    /// key is reported where its parent starts).
    pub fn find(&self, path: &KeyPath) -> Pos {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(pos) = self.map.get(&cur) {
                return *pos;
            }
            p = cur.parent();
        }
        Pos { line: 1, col: 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "server:\n  listen: [\"a\", \"b\"]\nroutes:\n  - name: one\n    ttl: 5m\n  - name: two\n    match:\n      path: /x\n";

    fn p(parts: &[Seg]) -> KeyPath {
        KeyPath(parts.to_vec())
    }

    #[test]
    fn finds_keys_and_items() {
        let loc = Locations::index(DOC);
        let k = |s: &str| Seg::Key(s.into());
        assert_eq!(loc.find(&p(&[k("server")])), Pos { line: 1, col: 1 });
        assert_eq!(
            loc.find(&p(&[k("server"), k("listen"), Seg::Index(1)])),
            Pos { line: 2, col: 17 }
        );
        assert_eq!(
            loc.find(&p(&[k("routes"), Seg::Index(0), k("ttl")])),
            Pos { line: 5, col: 5 }
        );
        assert_eq!(
            loc.find(&p(&[k("routes"), Seg::Index(1), k("match"), k("path")])),
            Pos { line: 8, col: 7 }
        );
        // A missing key falls back to its parent.
        assert_eq!(
            loc.find(&p(&[k("routes"), Seg::Index(1), k("ttl")])),
            Pos { line: 6, col: 5 }
        );
    }

    #[test]
    fn displays_paths() {
        let path = KeyPath::root()
            .key("routes")
            .index(2)
            .key("match")
            .key("path");
        assert_eq!(path.to_string(), "routes[2].match.path");
    }
}
