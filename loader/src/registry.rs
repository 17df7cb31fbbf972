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
//! Switch (version 2): a patch whose entry sites span several pages records
//! per function the [`crate::detour`] slot and detour; such a function runs
//! the new code when its site holds the patch's `jmp *slot(%rip)` and the
//! slot holds the new address, and the old code when the slot holds the
//! detour (or the site its saved bytes). Version-1 records (5-byte jumps
//! only) are still read.
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
/// Version of the registry layout written (2: slots and detours).
pub const VERSION: u32 = 2;
/// Oldest version read.
pub const MIN_VERSION: u32 = 1;
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
    /// Hex of the bytes the jump replaced (5, or 6 with a slot).
    pub saved: String,
    /// Hex of the jump: `jmp rel32` to the new code, or `jmp *slot(%rip)`.
    pub jump: String,
    /// With a switch: the slot's address (holds the detour or the new code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// With a switch: the detour (address, length) replaying the old entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detour: Option<(u64, u64)>,
}

/// Where a function's entry leads now, for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this record's new code.
    New,
    /// To the old code (the site holds the saved bytes, or the jump through a
    /// slot that holds the detour).
    Old,
    /// Elsewhere: a later patch's jump (stacked), or unknown bytes.
    Other,
}

impl FuncRecord {
    /// The jump's bytes.
    pub fn jump_bytes(&self) -> Vec<u8> {
        hex::decode(&self.jump).unwrap_or_default()
    }

    /// The saved bytes.
    pub fn saved_bytes(&self) -> Vec<u8> {
        hex::decode(&self.saved).unwrap_or_default()
    }

    /// Reads where the entry of this function leads in process `pid`.
    pub fn route(&self, pid: i32) -> Result<Route> {
        let jump = self.jump_bytes();
        let live = crate::mem::read_vec(pid, self.site, jump.len())?;
        if live == jump {
            return Ok(match (self.slot, self.detour) {
                (Some(slot), Some((detour, _))) => {
                    let v = crate::mem::read_u64(pid, slot)?;
                    if v == self.new_addr {
                        Route::New
                    } else if v == detour {
                        Route::Old
                    } else {
                        Route::Other
                    }
                }
                _ => Route::New,
            });
        }
        let saved = self.saved_bytes();
        Ok(
            if crate::mem::read_vec(pid, self.site, saved.len())? == saved {
                Route::Old
            } else {
                Route::Other
            },
        )
    }
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
    if !(MIN_VERSION..=VERSION).contains(&v) {
        return Err(Error::Registry {
            pid,
            id: format!("(mapping {base:#x})"),
            reason: format!("registry version {v}, this hotfix reads {MIN_VERSION} to {VERSION}"),
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
                        matches!(f.saved.len(), 10 | 12)
                            && matches!(f.jump.len(), 10 | 12)
                            && hex::decode(&f.saved).is_ok()
                            && hex::decode(&f.jump).is_ok()
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
            match f.route(pid)? {
                Route::New => active += 1,
                Route::Old => {}
                Route::Other => overridden.push(f.name.clone()),
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
