//! The registry of applied patches, kept inside the target: the first page
//! of every patch mapping starts with [`MAGIC`] and a version, followed by
//! the offset and length of a JSON [`Record`] stored in the mapping's data
//! part. Any later hotfix invocation finds the patches of a process by
//! scanning its anonymous mappings for the magic (`hotfix list --pid`).
//!
//! Truthfulness: a record says what was loaded; whether it is *active* is
//! read from the target itself, by comparing each replaced function's live
//! entry bytes with the record's jump ([`State`]). A mapping left by an
//! apply that was killed before its jumps were written shows as
//! [`State::Inactive`]; nothing the target runs depends on it.
//!
//! Stacking: each function keeps the bytes its jump overwrote (the original
//! bytes, or the previous patch's jump), so reverts restore them in
//! last-in-first-out order; a revert whose jump has been overwritten by a
//! later patch is refused.

use crate::error::{Error, Result};
use crate::target::Mapping;
use serde::{Deserialize, Serialize};

/// First bytes of a patch mapping.
pub const MAGIC: &[u8; 16] = b"HOTFIX-REGISTRY\0";
/// Version of the registry layout.
pub const VERSION: u32 = 1;
/// Size of the header: magic, version, reserved, record offset, record length.
pub const HEADER_LEN: usize = 40;

/// One replaced function in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuncRecord {
    /// Function name.
    pub name: String,
    /// Object (path) holding the old function.
    pub object: String,
    /// Build-id of that object.
    pub build_id: String,
    /// Address of the old function.
    pub old_addr: u64,
    /// Size of the old function.
    pub old_size: u64,
    /// Address where the jump is written (after `endbr64` when present).
    pub site: u64,
    /// Address of the new function.
    pub new_addr: u64,
    /// Size of the new function.
    pub new_size: u64,
    /// Hex of the 5 bytes the jump replaced.
    pub saved: String,
    /// Hex of the jump.
    pub jump: String,
}

/// What a patch mapping records about its patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Patch id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Source hash.
    pub source_hash: String,
    /// Seconds since the epoch at apply.
    pub applied_at: u64,
    /// Nanosecond sequence (orders patches applied within one second).
    pub seq: u128,
    /// Pid of the hotfix that applied it.
    pub applied_by: u32,
    /// Start of the mapping.
    pub base: u64,
    /// Length of the mapping.
    pub size: u64,
    /// The code range (start, end).
    pub code: (u64, u64),
    /// Relocated `.eh_frame` (address, length) for unwinding through new code.
    pub eh_frame: Option<(u64, u64)>,
    /// The target objects: (build-id, path).
    pub targets: Vec<(String, String)>,
    /// Replaced functions.
    pub funcs: Vec<FuncRecord>,
    /// New functions: (name, address, size).
    pub new_funcs: Vec<(String, u64, u64)>,
    /// New data: (name, address, size).
    pub new_data: Vec<(String, u64, u64)>,
}

/// Whether a patch is in effect, read from the live code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Every function jumps to this patch.
    Active,
    /// Active, but some function has a later patch stacked on top.
    Stacked,
    /// No function jumps to this patch (interrupted apply or revert).
    Inactive,
    /// Some functions jump to this patch and others do not.
    Partial,
}

/// Encodes the header for a record at `record_off` of length `record_len`.
pub fn header(record_off: u64, record_len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&record_off.to_le_bytes());
    h.extend_from_slice(&record_len.to_le_bytes());
    h
}

/// Decodes a header: (record offset, record length), `None` if no magic.
pub fn parse_header(pid: i32, base: u64, h: &[u8]) -> Result<Option<(u64, u64)>> {
    if h.len() < HEADER_LEN || &h[..16] != MAGIC {
        return Ok(None);
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let v = u32_at(16);
    if v != VERSION {
        return Err(Error::Registry {
            pid,
            id: format!("(mapping {base:#x})"),
            reason: format!("registry version {v}, this hotfix reads {VERSION}"),
        });
    }
    Ok(Some((u64_at(24), u64_at(32))))
}

/// A record found in a process, with its state.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// Its state.
    pub state: State,
    /// For [`State::Stacked`]: functions overridden by later patches.
    pub overridden: Vec<String>,
}

/// Reads every registry record of process `pid` (mappings from `maps`),
/// oldest first, with its state.
pub fn scan(pid: i32, maps: &[Mapping]) -> Result<Vec<Entry>> {
    let mut records = Vec::new();
    for m in maps {
        if m.inode != 0 || !m.path.is_empty() || !m.perms.starts_with('r') {
            continue;
        }
        let mut h = [0u8; HEADER_LEN];
        if crate::mem::read(pid, m.start, &mut h).is_err() {
            continue;
        }
        let Some((off, len)) = parse_header(pid, m.start, &h)? else {
            continue;
        };
        if len > 16 << 20 {
            continue;
        }
        let json = crate::mem::read_vec(pid, m.start + off, len as usize)?;
        match serde_json::from_slice::<Record>(&json) {
            Ok(r)
                if r.base == m.start
                    && r.funcs.iter().all(|f| {
                        f.saved.len() == 10 && f.jump.len() == 10 && hex::decode(&f.saved).is_ok()
                    }) =>
            {
                records.push(r)
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Registry {
                    pid,
                    id: format!("(mapping {:#x})", m.start),
                    reason: format!("malformed record: {e}"),
                });
            }
        }
    }
    records.sort_by_key(|r| r.seq);
    let mut out = Vec::new();
    for r in records {
        let mut active = 0;
        let mut overridden = Vec::new();
        for f in &r.funcs {
            let mut live = [0u8; 5];
            crate::mem::read(pid, f.site, &mut live)?;
            if hex::encode(live) == f.jump {
                active += 1;
            } else if live != hex::decode(&f.saved).unwrap_or_default().as_slice() {
                overridden.push(f.name.clone());
            }
        }
        let n = r.funcs.len();
        let state = if active == n && n > 0 {
            State::Active
        } else if active + overridden.len() == n && n > 0 && !overridden.is_empty() {
            State::Stacked
        } else if active == 0 && overridden.is_empty() {
            State::Inactive
        } else {
            State::Partial
        };
        out.push(Entry {
            record: r,
            state,
            overridden,
        });
    }
    Ok(out)
}
