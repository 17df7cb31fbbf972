//! The patch laid out for this target at a chosen base: the linked image
//! ([`crate::link`]), the detours and slots of a switch ([`crate::detour`]),
//! each function's entry jump, and the registry record that describes it
//! all ([`crate::registry`]), as the exact bytes to write into the mapping.
//!
//! Model: [`Builder`] holds the [`Plan`]; [`Builder::build`] lays the patch
//! out at one base, so the loader can try the next free range when a
//! mapping attempt finds its range taken, and the planner can learn the size
//! from a probe layout before anything is touched.
//!
//! Invariants: computed entirely in hotfix's memory; every write into the
//! image goes through the checked [`patchgen::bytes::write_at`]; the record's
//! size is the page-rounded size of the whole mapping, header included.

use crate::error::{Error, Result};
use crate::link::{self, Resolved};
use crate::mem::PAGE;
use crate::ops::Patch;
use crate::plan::{Plan, Planned};
use crate::registry::{self, FuncRecord, Record};
use crate::target::{Object, Process};
use crate::{detour, trampoline};
use patchgen::bytes::write_at;
use std::time::SystemTime;

/// Bytes to write into the image, at offsets.
type Writes = Vec<(u64, Vec<u8>)>;

/// A switched function's entry jump, slot, detour, and what to write.
struct Detour {
    jump: Vec<u8>,
    slot: u64,
    /// (address, length).
    code: (u64, u64),
    writes: Writes,
}

/// Lays out one planned patch for one process.
pub struct Builder<'a> {
    proc: &'a Process,
    patch: &'a Patch,
    plan: &'a Plan,
}

/// A patch laid out at a base.
#[derive(Debug, Clone)]
pub struct PatchImage {
    /// The bytes of the whole mapping (registry page, code, data, record).
    pub bytes: Vec<u8>,
    /// The registry record (also in `bytes`).
    pub record: Record,
    /// Code region (offset, length): mapped r-x.
    pub code: (u64, u64),
}

impl<'a> Builder<'a> {
    /// A builder of `plan` for `patch` in `proc`.
    pub fn new(proc: &'a Process, patch: &'a Patch, plan: &'a Plan) -> Self {
        Self { proc, patch, plan }
    }

    /// The object the mapping goes near (that of the first function).
    pub fn near(&self) -> Result<&'a Object> {
        self.plan
            .funcs
            .first()
            .and_then(|p| self.proc.objects.get(p.object))
            .ok_or_else(|| Error::Patch {
                path: self.patch.path.clone(),
                reason: "the patch names no function to replace".into(),
            })
    }

    /// Lays the patch out at `base`.
    pub fn build(&self, base: u64) -> Result<PatchImage> {
        let detour_space = if self.plan.switch {
            self.plan.funcs.len() as u64 * detour::DETOUR_LEN
        } else {
            0
        };
        let resolve = |name: &str| -> Result<Resolved> {
            self.plan
                .resolved
                .get(name)
                .copied()
                .ok_or_else(|| Error::Patch {
                    path: self.patch.path.clone(),
                    reason: format!("undefined symbol {name} has no entry in the metadata's refs"),
                })
        };
        let image = link::link(
            &self.patch.path,
            &self.patch.bytes,
            base,
            detour_space,
            &resolve,
        )?;
        let code = image.code;
        let (funcs, writes) = self.functions(&image)?;
        let record = self.record(&image, funcs)?;
        let bytes = self.assemble(image, &writes, &record)?;
        Ok(PatchImage {
            bytes,
            record,
            code,
        })
    }

    /// Every function's record, and the detours and slots to write.
    fn functions(&self, image: &link::Image) -> Result<(Vec<FuncRecord>, Writes)> {
        let mut funcs = Vec::new();
        let mut writes = Writes::new();
        for (i, p) in self.plan.funcs.iter().enumerate() {
            let (new_addr, new_size) =
                image
                    .symbols
                    .get(&p.new_symbol)
                    .copied()
                    .ok_or_else(|| Error::Patch {
                        path: self.patch.path.clone(),
                        reason: format!(
                            "new function {} is not defined in the patch",
                            p.new_symbol
                        ),
                    })?;
            let (jump, slot, detour) = if self.plan.switch {
                let d = self.detour(image, i, p)?;
                writes.extend(d.writes);
                (d.jump, Some(d.slot), Some(d.code))
            } else {
                let j = trampoline::jump(p.site, new_addr).ok_or_else(|| self.no_space(image))?;
                (j.to_vec(), None, None)
            };
            let obj = &self.proc.objects[p.object];
            funcs.push(FuncRecord {
                name: p.name.clone(),
                object: obj.path.clone(),
                build_id: obj.build_id.clone(),
                old_addr: p.old_addr,
                old_size: p.old_size,
                site: p.site,
                new_addr,
                new_size,
                saved: hex::encode(&p.saved),
                jump: hex::encode(jump),
                slot,
                detour,
            });
        }
        Ok((funcs, writes))
    }

    /// The `i`-th function's detour and slot; the slot starts out holding
    /// the detour's address.
    fn detour(&self, image: &link::Image, i: usize, p: &Planned) -> Result<Detour> {
        let off = image.detours_off + i as u64 * detour::DETOUR_LEN;
        let at = image.base + off;
        let slot_off = detour::SLOT_OFF + 8 * i as u64;
        let slot = image.base + slot_off;
        let (code, _) =
            detour::build(&p.live_entry, p.site, at).map_err(|reason| Error::Entry {
                pid: self.proc.pid,
                func: p.name.clone(),
                addr: p.old_addr,
                object: self.proc.objects[p.object].path.clone(),
                reason,
            })?;
        let len = code.len() as u64;
        let j = detour::indirect_jump(p.site, slot).ok_or_else(|| self.no_space(image))?;
        Ok(Detour {
            jump: j.to_vec(),
            slot,
            code: (at, len),
            writes: vec![(off, code), (slot_off, at.to_le_bytes().to_vec())],
        })
    }

    fn no_space(&self, image: &link::Image) -> Error {
        Error::NoSpace {
            pid: self.proc.pid,
            object: self.near().map(|o| o.path.clone()).unwrap_or_default(),
            size: image.bytes.len() as u64,
        }
    }

    /// The registry record, its `size` that of the whole mapping.
    fn record(&self, image: &link::Image, funcs: Vec<FuncRecord>) -> Result<Record> {
        let meta = &self.patch.meta;
        let (secs, nanos) = now_secs();
        let pick = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| image.symbols.get(n).map(|(a, s)| (n.clone(), *a, *s)))
                .collect::<Vec<_>>()
        };
        let mut rec = Record {
            id: meta.id.clone(),
            description: meta.description.clone(),
            source_hash: meta.source_hash.clone(),
            applied_at: secs,
            seq: nanos,
            applied_by: std::process::id(),
            base: image.base,
            size: 0,
            code: (
                image.base + image.code.0,
                image.base + image.code.0 + image.code.1,
            ),
            eh_frame: image.eh_frame,
            targets: self
                .plan
                .targets
                .iter()
                .map(|&i| {
                    let o = &self.proc.objects[i];
                    (o.build_id.clone(), o.path.clone())
                })
                .collect(),
            funcs,
            new_funcs: pick(&meta.new_funcs),
            new_data: pick(&meta.new_data),
        };
        // The size depends on the record's length, which includes the size:
        // fix the size at the page-rounded length of a generous estimate.
        let est = serde_json::to_vec(&rec).map(|v| v.len()).unwrap_or(0) as u64 + 64;
        rec.size = (image.bytes.len() as u64 + est).div_ceil(PAGE) * PAGE;
        Ok(rec)
    }

    /// The mapping's bytes: the linked image with the detours and slots
    /// written in, the registry header, the record.
    fn assemble(
        &self,
        image: link::Image,
        writes: &[(u64, Vec<u8>)],
        rec: &Record,
    ) -> Result<Vec<u8>> {
        let reg_err = |reason: String| Error::Registry {
            pid: self.proc.pid,
            id: rec.id.clone(),
            reason,
        };
        let json = serde_json::to_vec(rec).map_err(|e| reg_err(e.to_string()))?;
        let rec_off = image.bytes.len() as u64;
        let mut bytes = image.bytes;
        for (off, b) in writes {
            write_at(&mut bytes, *off, b).map_err(|e| reg_err(format!("detour: {e}")))?;
        }
        write_at(&mut bytes, 0, &registry::header(rec_off, json.len() as u64))
            .map_err(|e| reg_err(format!("header: {e}")))?;
        bytes.extend_from_slice(&json);
        bytes.resize(rec.size as usize, 0);
        Ok(bytes)
    }
}

fn now_secs() -> (u64, u128) {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.as_nanos())
}
