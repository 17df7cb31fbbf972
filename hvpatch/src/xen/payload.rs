//! Reading a Xen live-patch payload (an ELF relocatable object, the format of
//! `docs/misc/livepatch.pandoc`) before anything is sent to the hypervisor:
//! its name, its own build-id, the hypervisor build-id it was built for
//! (`.livepatch.xen_depends`), the payload it stacks on
//! (`.livepatch.depends`) and the functions it replaces (`.livepatch.funcs`
//! records, their `name` pointers resolved through the relocations).
//!
//! Invariant: every read is bounds-checked; a malformed file is an
//! [`Error::Payload`] naming the file, never a panic.

use super::abi;
use super::error::{Error, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One `struct livepatch_func` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Func {
    /// The replaced function's name (what Xen resolves when `old_addr` is 0).
    pub name: String,
    /// `new_size`: bytes of the new code (0 for a NOP-out).
    pub new_size: u32,
    /// `old_size`: bytes of the replaced function.
    pub old_size: u32,
    /// The expected first bytes of the replaced function, when the record
    /// asks Xen to check them.
    pub expect: Option<Vec<u8>>,
}

/// What hotfix knows about a payload file before uploading it.
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    /// The file.
    pub path: PathBuf,
    /// The name it is loaded under: the file name without its extension,
    /// as `xen-livepatch load` does.
    pub name: String,
    /// Its own GNU build-id (hex), which later payloads stack on.
    pub build_id: Option<String>,
    /// `.livepatch.xen_depends`: the hypervisor build-id (hex).
    pub xen_depends: Option<String>,
    /// `.livepatch.depends`: the build-id (hex) of the payload (or the
    /// hypervisor) it must be applied on top of.
    pub depends: Option<String>,
    /// The `.livepatch.funcs` records.
    pub funcs: Vec<Func>,
    /// The file's bytes, as uploaded.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::Payload {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The payload name for `path`: its file name up to the first `.`.
pub fn name_of(path: &Path) -> Result<String> {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| bad(path, "file name is not UTF-8"))?;
    let name = file.split('.').next().unwrap_or(file);
    check_name(name)?;
    Ok(name.to_string())
}

/// Checks that Xen can take `name` (1..=127 bytes, no NUL).
pub fn check_name(name: &str) -> Result<()> {
    let detail = if name.is_empty() {
        "empty"
    } else if name.len() >= abi::NAME_SIZE {
        "longer than 127 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::Name {
        name: name.to_string(),
        detail: detail.to_string(),
    })
}

/// The descriptor of a GNU build-id note (`n_namesz`, `n_descsz`, `n_type`,
/// name, desc), as hex.
pub fn note_build_id(note: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<usize> {
        let b: [u8; 4] = note.get(i..i + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let (namesz, descsz) = (word(0)?, word(4)?);
    let desc_off = 12usize.checked_add(namesz.checked_add(3)? & !3)?;
    let desc = note.get(desc_off..desc_off.checked_add(descsz)?)?;
    (!desc.is_empty()).then(|| hex(desc))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Payload {
    /// Reads and checks the payload at `path`.
    pub fn read(path: &Path) -> Result<Payload> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = name_of(path)?;
        Self::parse(path, name, bytes)
    }

    /// Parses `bytes` (read from `path`) as payload `name`.
    pub fn parse(path: &Path, name: String, bytes: Vec<u8>) -> Result<Payload> {
        let file = object::File::parse(&*bytes)
            .map_err(|e| bad(path, format!("not an ELF object: {e}")))?;
        if file.kind() != object::ObjectKind::Relocatable {
            return Err(bad(
                path,
                "not a relocatable ELF object (a live-patch payload is one)",
            ));
        }
        if file.architecture() != object::Architecture::X86_64 {
            return Err(bad(
                path,
                format!("built for {:?}, not x86-64", file.architecture()),
            ));
        }
        let section_note = |sname: &str| -> Result<Option<String>> {
            match file.section_by_name(sname) {
                None => Ok(None),
                Some(s) => {
                    let data = s.data().map_err(|e| bad(path, format!("{sname}: {e}")))?;
                    note_build_id(data)
                        .map(Some)
                        .ok_or_else(|| bad(path, format!("{sname} is not a GNU build-id note")))
                }
            }
        };
        let build_id = section_note(".note.gnu.build-id")?;
        let xen_depends = section_note(".livepatch.xen_depends")?;
        let depends = section_note(".livepatch.depends")?;
        let funcs = match file.section_by_name(".livepatch.funcs") {
            Some(s) => read_funcs(path, &file, &s)?,
            None => {
                return Err(bad(
                    path,
                    "no .livepatch.funcs section: not a Xen live-patch payload",
                ));
            }
        };
        Ok(Payload {
            path: path.to_path_buf(),
            name,
            build_id,
            xen_depends,
            depends,
            funcs,
            bytes,
        })
    }

    /// The names of the functions with expected bytes, comma-separated.
    pub fn expecting(&self) -> String {
        let v: Vec<&str> = self
            .funcs
            .iter()
            .filter(|f| f.expect.is_some())
            .map(|f| f.name.as_str())
            .collect();
        v.join(", ")
    }
}

fn read_funcs(
    path: &Path,
    file: &object::File<'_>,
    sec: &object::Section<'_, '_>,
) -> Result<Vec<Func>> {
    let data = sec
        .data()
        .map_err(|e| bad(path, format!(".livepatch.funcs: {e}")))?;
    if data.is_empty() || data.len() % abi::FUNC_SIZE != 0 {
        return Err(bad(
            path,
            format!(
                ".livepatch.funcs is {} bytes, not a multiple of {}",
                data.len(),
                abi::FUNC_SIZE
            ),
        ));
    }
    // The `name` pointer of record i is relocated at offset i * FUNC_SIZE.
    let mut names = std::collections::HashMap::new();
    for (offset, rel) in sec.relocations() {
        if offset % abi::FUNC_SIZE as u64 != 0 {
            continue;
        }
        let RelocationTarget::Symbol(idx) = rel.target() else {
            continue;
        };
        let Ok(sym) = file.symbol_by_index(idx) else {
            continue;
        };
        let Some(sidx) = sym.section_index() else {
            continue;
        };
        let Ok(target) = file.section_by_index(sidx) else {
            continue;
        };
        let Ok(tdata) = target.data() else { continue };
        let start = sym.address().wrapping_add(rel.addend() as u64);
        let Some(rest) = usize::try_from(start).ok().and_then(|s| tdata.get(s..)) else {
            continue;
        };
        let s = rest.split(|&b| b == 0).next().unwrap_or_default();
        names.insert(offset, String::from_utf8_lossy(s).into_owned());
    }
    let mut funcs = Vec::new();
    for (i, rec) in data.chunks_exact(abi::FUNC_SIZE).enumerate() {
        let version = rec[32];
        if version != abi::PAYLOAD_VERSION {
            return Err(bad(
                path,
                format!(
                    ".livepatch.funcs record {i}: version {version}, Xen 4.17 takes {}",
                    abi::PAYLOAD_VERSION
                ),
            ));
        }
        let new_size = abi::get_u32(rec, 24);
        let old_size = abi::get_u32(rec, 28);
        // struct livepatch_expectation at 72: bit 0 enabled, bits 1..5 len, then data[31].
        let flags = rec[72];
        let expect = (flags & 1 == 1).then(|| {
            let len = usize::from((flags >> 1) & 0x1f);
            rec[73..73 + len].to_vec()
        });
        let name = names
            .get(&((i * abi::FUNC_SIZE) as u64))
            .cloned()
            .unwrap_or_else(|| format!("<record {i}>"));
        funcs.push(Func {
            name,
            new_size,
            old_size,
            expect,
        });
    }
    Ok(funcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_xen_livepatch_load() -> Result<()> {
        assert_eq!(
            name_of(Path::new("/x/xen_hello_world.livepatch"))?,
            "xen_hello_world"
        );
        assert_eq!(name_of(Path::new("fix.a.livepatch"))?, "fix");
        assert!(name_of(Path::new(".livepatch")).is_err());
        assert!(check_name(&"a".repeat(128)).is_err());
        assert!(check_name(&"a".repeat(127)).is_ok());
        Ok(())
    }

    #[test]
    fn build_id_notes() {
        let mut n = vec![4, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0];
        n.extend_from_slice(b"GNU\0");
        n.extend_from_slice(&[0xab, 0xcd, 0xef]);
        assert_eq!(note_build_id(&n).as_deref(), Some("abcdef"));
        assert_eq!(note_build_id(&n[..14]), None);
        assert_eq!(note_build_id(&[0xff; 12]), None);
        assert_eq!(note_build_id(&[]), None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let e = Payload::parse(
            Path::new("junk.livepatch"),
            "junk".into(),
            b"not elf".to_vec(),
        );
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("junk.livepatch"), "{msg}");
    }
}
