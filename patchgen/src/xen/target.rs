//! The target hypervisor, `xen-syms`: its build-id, its symbol table (with
//! the source file of every local symbol) and its bytes at link addresses.
//!
//! Model: Xen is linked at fixed addresses and never relocated, so an
//! address read from `xen-syms` is the address in the running hypervisor.
//! Locals are grouped after the `STT_FILE` symbol of their translation unit
//! (`arch/x86/mm/shadow/guest_4.c`), which is the file recorded by the
//! object diff; among same-named locals of one file, the object's symbol
//! order (its `sympos`) is kept by the linker.
//!
//! Invariant: every lookup is by name and file; an ambiguous or missing
//! symbol is an error naming it, never a guess.

use crate::Error;
use crate::format::Binding;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One symbol of `xen-syms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenSym {
    /// Link (= run-time) address.
    pub addr: u64,
    /// `st_size`.
    pub size: u64,
    /// Source file of a local symbol.
    pub file: Option<String>,
}

/// The parsed target hypervisor.
#[derive(Debug, Clone)]
pub struct XenSyms {
    /// The file read.
    pub path: PathBuf,
    /// Its GNU build-id (raw bytes).
    pub build_id: Vec<u8>,
    globals: HashMap<String, XenSym>,
    locals: HashMap<String, Vec<XenSym>>,
    /// Loaded sections: (address, bytes).
    sections: Vec<(u64, Vec<u8>)>,
}

fn perr(path: &Path, reason: impl Into<String>) -> Error {
    Error::Parse {
        file: path.display().to_string(),
        reason: reason.into(),
    }
}

impl XenSyms {
    /// Reads `xen-syms`.
    pub fn read(path: &Path) -> Result<XenSyms, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses the bytes of `xen-syms`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<XenSyms, Error> {
        let file = object::File::parse(bytes).map_err(|e| perr(path, e.to_string()))?;
        let build_id = file
            .build_id()
            .map_err(|e| perr(path, format!("bad build-id note: {e}")))?
            .ok_or_else(|| {
                perr(
                    path,
                    "no GNU build-id note: not a Xen built with --build-id",
                )
            })?
            .to_vec();
        let mut globals = HashMap::new();
        let mut locals: HashMap<String, Vec<XenSym>> = HashMap::new();
        let mut current_file: Option<String> = None;
        for s in file.symbols() {
            let Ok(name) = s.name() else { continue };
            if s.kind() == SymbolKind::File {
                current_file = Some(name.to_owned());
                continue;
            }
            if name.is_empty() || s.kind() == SymbolKind::Section || s.is_undefined() {
                continue;
            }
            let sym = XenSym {
                addr: s.address(),
                size: s.size(),
                file: None,
            };
            if s.is_local() {
                locals.entry(name.to_owned()).or_default().push(XenSym {
                    file: current_file.clone(),
                    ..sym
                });
            } else {
                globals.entry(name.to_owned()).or_insert(sym);
            }
        }
        let mut sections = Vec::new();
        for sec in file.sections() {
            if sec.address() == 0 || sec.kind() == object::SectionKind::UninitializedData {
                continue;
            }
            if let Ok(data) = sec.data()
                && !data.is_empty()
            {
                sections.push((sec.address(), data.to_vec()));
            }
        }
        Ok(XenSyms {
            path: path.to_path_buf(),
            build_id,
            globals,
            locals,
            sections,
        })
    }

    /// The build-id as hex.
    pub fn build_id_hex(&self) -> String {
        hex::encode(&self.build_id)
    }

    /// Resolves a symbol the patch refers to: a global by name, a local by
    /// name, source file and position among same-named locals of that file.
    pub fn resolve(
        &self,
        name: &str,
        binding: Binding,
        file: Option<&str>,
        sympos: u32,
    ) -> Result<&XenSym, String> {
        if binding != Binding::Local {
            return self
                .globals
                .get(name)
                .ok_or_else(|| format!("no global symbol {name} in the target hypervisor"));
        }
        let all = self.locals.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let in_file: Vec<&XenSym> = all
            .iter()
            .filter(|s| file.is_none() || s.file.as_deref() == file)
            .collect();
        match (in_file.len(), sympos) {
            (0, _) => Err(format!(
                "no local symbol {name} of {} in the target hypervisor",
                file.unwrap_or("?")
            )),
            (1, _) => in_file
                .first()
                .copied()
                .ok_or_else(|| format!("no local symbol {name}")),
            (n, p) if p >= 1 && (p as usize) <= n => in_file
                .get(p as usize - 1)
                .copied()
                .ok_or_else(|| format!("no local symbol {name}")),
            (n, _) => Err(format!(
                "{n} local symbols {name} of {} in the target hypervisor; cannot tell which",
                file.unwrap_or("?")
            )),
        }
    }

    /// A global symbol's address, if any.
    pub fn global(&self, name: &str) -> Option<&XenSym> {
        self.globals.get(name)
    }

    /// `len` bytes at link address `addr`, when they lie in one loaded section.
    pub fn bytes_at(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.sections.iter().find_map(|(base, data)| {
            let off = addr.checked_sub(*base)?;
            let end = off.checked_add(len)?;
            if end <= data.len() as u64 {
                data.get(off as usize..end as usize)
            } else {
                None
            }
        })
    }

    /// Code ranges `(address, length)` that Xen's boot-time alternatives
    /// may have rewritten: the `orig` side of every `struct alt_instr`
    /// between `__alt_instructions` and `__alt_instructions_end`.
    pub fn alt_sites(&self, sizes: &super::build::Sizes) -> Vec<(u64, u64)> {
        let (Some(start), Some(end)) = (
            self.global("__alt_instructions"),
            self.global("__alt_instructions_end"),
        ) else {
            return Vec::new();
        };
        let entry = sizes.alt_instr;
        let mut out = Vec::new();
        if entry == 0 || end.addr <= start.addr {
            return out;
        }
        let Some(table) = self.bytes_at(start.addr, end.addr - start.addr) else {
            return out;
        };
        for (i, e) in table.chunks_exact(entry as usize).enumerate() {
            let field = start.addr.wrapping_add((i as u64).wrapping_mul(entry));
            let Some(off) = e.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                continue;
            };
            let Some(&len) = e.get(sizes.alt_orig_len as usize) else {
                continue;
            };
            let orig = field.wrapping_add_signed(i64::from(i32::from_le_bytes(off)));
            out.push((orig, u64::from(len)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn syms() -> XenSyms {
        let l = |addr, file: &str| XenSym {
            addr,
            size: 4,
            file: Some(file.into()),
        };
        XenSyms {
            path: "xen-syms".into(),
            build_id: vec![1, 2],
            globals: HashMap::from([(
                "memcpy".to_string(),
                XenSym {
                    addr: 0x10,
                    size: 8,
                    file: None,
                },
            )]),
            locals: HashMap::from([
                (
                    "f".to_string(),
                    vec![l(0x100, "a.c"), l(0x200, "b.c"), l(0x300, "b.c")],
                ),
                ("g".to_string(), vec![l(0x400, "a.c")]),
            ]),
            sections: vec![(0x100, vec![0xaa; 0x10])],
        }
    }

    #[test]
    fn locals_resolve_by_file_and_position() {
        let s = syms();
        assert_eq!(
            s.resolve("f", Binding::Local, Some("a.c"), 0).unwrap().addr,
            0x100
        );
        assert_eq!(
            s.resolve("f", Binding::Local, Some("b.c"), 2).unwrap().addr,
            0x300
        );
        let e = s.resolve("f", Binding::Local, Some("b.c"), 0).unwrap_err();
        assert!(e.contains("cannot tell which"), "{e}");
        assert!(s.resolve("g", Binding::Local, Some("b.c"), 0).is_err());
        assert_eq!(
            s.resolve("memcpy", Binding::Global, None, 0).unwrap().addr,
            0x10
        );
        assert!(s.resolve("f", Binding::Global, None, 0).is_err());
    }

    #[test]
    fn bytes_stay_inside_a_section() {
        let s = syms();
        assert_eq!(s.bytes_at(0x108, 8).unwrap().len(), 8);
        assert!(s.bytes_at(0x108, 9).is_none());
        assert!(s.bytes_at(0x50, 1).is_none());
        assert!(s.bytes_at(u64::MAX, 2).is_none());
    }
}
