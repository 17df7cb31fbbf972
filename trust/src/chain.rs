//! The tamper-evident chain of the audit log: each JSON line carries, in its
//! `prev` field, the SHA-256 of the previous line's bytes (without the
//! newline); the first line of a chain carries [`GENESIS`].
//!
//! Model: pure functions over text. [`link`] gives the `prev` value for the
//! line to append after a given last line; [`verify`] walks a log and names
//! the first line whose `prev` is not the hash of the line before it (an
//! edited, inserted, removed or reordered line breaks the chain right after
//! it). A rotated log continues the chain: the first line of the new file
//! carries the hash of the last line of the old one, so [`verify_files`]
//! checks several files in order as one chain.
//!
//! Invariant: what is hashed is exactly the bytes written, so the check needs
//! no JSON canonicalization.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `prev` value of a line appended after `last` (`None`: empty log).
pub fn link(last: Option<&str>) -> String {
    match last {
        Some(l) => crate::sha256_hex(l.as_bytes()),
        None => GENESIS.to_string(),
    }
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// The files checked, in order.
    pub files: Vec<PathBuf>,
    /// Lines checked.
    pub lines: usize,
    /// Hash of the last line (the `prev` of the next one to be written).
    pub head: String,
}

/// Checks the chain of one log's text, continuing from `prev` (the hash of
/// the line before the first, or [`GENESIS`]). Returns the next `prev` and
/// the number of lines.
pub fn verify_text(path: &Path, text: &str, mut prev: String) -> Result<(String, usize)> {
    let broken = |line: usize, detail: String| Error::Chain {
        path: path.to_path_buf(),
        line,
        detail,
    };
    let mut n = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let Some(body) = line.strip_suffix('\n') else {
            return Err(broken(i + 1, "incomplete last line (no newline)".into()));
        };
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| broken(i + 1, format!("not JSON: {e}")))?;
        let got = v.get("prev").and_then(|p| p.as_str()).unwrap_or("");
        if got != prev {
            return Err(broken(
                i + 1,
                format!(
                    "prev is {got:?}, the line before hashes to {prev}: a line was changed, removed or inserted here or just before"
                ),
            ));
        }
        prev = crate::sha256_hex(body.as_bytes());
        n += 1;
    }
    Ok((prev, n))
}

/// Checks the chain across `files` in order (oldest rotated file first).
pub fn verify_files(files: &[PathBuf]) -> Result<Summary> {
    let mut prev = GENESIS.to_string();
    let mut lines = 0;
    for (k, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).map_err(|e| Error::Chain {
            path: f.clone(),
            line: 0,
            detail: format!("unreadable: {e}"),
        })?;
        if k == 0 {
            // A first file may start mid-chain (older files deleted): take
            // its first line's prev as given.
            prev = first_prev(&text).unwrap_or(prev);
        }
        let (p, n) = verify_text(f, &text, prev)?;
        prev = p;
        lines += n;
    }
    Ok(Summary {
        files: files.to_vec(),
        lines,
        head: prev,
    })
}

fn first_prev(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let v: serde_json::Value = serde_json::from_str(first).ok()?;
    Some(v.get("prev")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> String {
        let mut s = String::new();
        let mut last: Option<String> = None;
        for i in 0..n {
            let line = format!(r#"{{"i":{i},"prev":"{}"}}"#, link(last.as_deref()));
            s.push_str(&line);
            s.push('\n');
            last = Some(line);
        }
        s
    }

    #[test]
    fn a_written_chain_verifies() {
        let (_, n) = verify_text(Path::new("x"), &log(5), GENESIS.into()).expect("chain");
        assert_eq!(n, 5);
    }

    #[test]
    fn an_edited_line_breaks_the_next() {
        let t = log(5).replacen(r#""i":2"#, r#""i":7"#, 1);
        let e = verify_text(Path::new("x"), &t, GENESIS.into()).expect_err("broken");
        assert!(matches!(e, Error::Chain { line: 4, .. }), "{e}");
    }

    #[test]
    fn a_removed_line_breaks_the_chain() {
        let full = log(5);
        let t: Vec<&str> = full.lines().collect();
        let t = format!("{}\n{}\n{}\n{}\n", t[0], t[1], t[3], t[4]);
        let e = verify_text(Path::new("x"), &t, GENESIS.into()).expect_err("broken");
        assert!(matches!(e, Error::Chain { line: 3, .. }), "{e}");
    }

    #[test]
    fn a_truncated_tail_is_named() {
        let mut t = log(3);
        t.truncate(t.len() - 5);
        let e = verify_text(Path::new("x"), &t, GENESIS.into()).expect_err("broken");
        assert!(matches!(e, Error::Chain { line: 3, .. }), "{e}");
    }
}
