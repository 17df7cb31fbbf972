//! The trusted comment of a hotfix signature: what was signed, as one line
//! of JSON (minisign's trusted comment is one line, signed with the file).
//!
//! Model: `{"hotfix":1,"kind":"hfx","file":"x.hfx","sha256":"…","id":"…",
//! "target":"…"}`. `file` is the base name at signing time, `sha256` the
//! SHA-256 of the whole file, `id` the patch id (the `.hfx` patch id, the
//! kernel module name, the Xen payload name), `target` what it patches (the
//! target object's build-id, the kernel's vermagic, the hypervisor's
//! build-id). Invariant: a [`Subject`] read back from a verified signature is
//! exactly what the signer wrote.

use serde::{Deserialize, Serialize};

/// Version of the trusted-comment layout.
pub const COMMENT_VERSION: u32 = 1;

/// What a signature is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Layout version ([`COMMENT_VERSION`]).
    pub hotfix: u32,
    /// `hfx`, `ko` or `livepatch`.
    pub kind: String,
    /// Base name of the signed file.
    pub file: String,
    /// Hex SHA-256 of the signed file.
    pub sha256: String,
    /// The patch id.
    pub id: String,
    /// The target (build-id, vermagic).
    pub target: String,
}

impl Subject {
    /// The one-line trusted comment.
    pub fn to_comment(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a trusted comment; `None` when it is not hotfix's layout.
    pub fn from_comment(comment: &str) -> Option<Subject> {
        serde_json::from_str::<Subject>(comment.trim())
            .ok()
            .filter(|s| s.hotfix == COMMENT_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_round_trip() {
        let s = Subject {
            hotfix: 1,
            kind: "hfx".into(),
            file: "a b.hfx".into(),
            sha256: "00".into(),
            id: "fix \"1\"".into(),
            target: "abcd".into(),
        };
        let c = s.to_comment();
        assert!(!c.contains('\n'));
        assert_eq!(Subject::from_comment(&c), Some(s));
        assert_eq!(Subject::from_comment("timestamp:1234"), None);
    }
}
