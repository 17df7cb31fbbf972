//! layout: the data layout an object's DWARF records, and how two differ.
//!
//! Model: for every named `struct`/`union` type of an object's
//! `.debug_info`, its byte size and the name and offset of each member. A fix
//! that changes any of these for a type that both objects know changes the
//! layout of live data: code of the running target would keep using the old
//! layout while patched code uses the new one, so such a fix cannot be
//! applied live (the host needs a drain and restart instead).
//!
//! Objects are relocatable: `.debug_info` offsets into `.debug_str` and
//! friends are relocations, applied here through [`gimli::RelocateReader`]
//! with the object's own [`object::RelocationMap`] per section.
//!
//! Invariants: types with the same name but different layouts inside one
//! object (two files' private `struct state`) keep the first one seen; an
//! object without DWARF has no layouts and so never reports a change.

use crate::Error;
use object::{Object, ObjectSection};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// The layout of one named aggregate type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TypeLayout {
    /// `struct` or `union`.
    pub kind: &'static str,
    /// `DW_AT_byte_size`.
    pub size: u64,
    /// Members in declaration order: name (empty when anonymous) and offset
    /// in bits from the start of the type.
    pub members: Vec<(String, u64)>,
}

/// One type whose layout differs between the two objects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayoutChange {
    /// `struct NAME` or `union NAME`.
    pub type_name: String,
    /// What differs, for humans.
    pub what: String,
}

#[derive(Debug, Clone)]
struct Relocs(std::rc::Rc<object::RelocationMap>);

impl gimli::read::Relocate<usize> for Relocs {
    fn relocate_address(&self, offset: usize, value: u64) -> gimli::Result<u64> {
        Ok(self.0.relocate(offset as u64, value))
    }
    fn relocate_offset(&self, offset: usize, value: usize) -> gimli::Result<usize> {
        usize::try_from(self.0.relocate(offset as u64, value as u64))
            .map_err(|_| gimli::Error::OffsetOutOfBounds(offset as u64))
    }
}

type Reader<'a> = gimli::RelocateReader<gimli::EndianSlice<'a, gimli::LittleEndian>, Relocs>;

/// Reads the aggregate type layouts of one object (`path` only names it in
/// errors).
pub fn layouts(data: &[u8], path: &Path) -> Result<BTreeMap<String, TypeLayout>, Error> {
    let bad = |reason: String| Error::Dwarf {
        path: path.to_path_buf(),
        reason,
    };
    let file = object::File::parse(data).map_err(|e| bad(e.to_string()))?;
    // Section data must outlive the readers: keep them all in one arena.
    let mut sections: Vec<(Cow<'_, [u8]>, Relocs)> = Vec::new();
    let mut index = BTreeMap::new();
    for id in [
        gimli::SectionId::DebugAbbrev,
        gimli::SectionId::DebugInfo,
        gimli::SectionId::DebugStr,
        gimli::SectionId::DebugLineStr,
        gimli::SectionId::DebugStrOffsets,
        gimli::SectionId::DebugAddr,
        gimli::SectionId::DebugLine,
        gimli::SectionId::DebugRanges,
        gimli::SectionId::DebugRngLists,
        gimli::SectionId::DebugLoc,
        gimli::SectionId::DebugLocLists,
    ] {
        if let Some(s) = file.section_by_name(id.name()) {
            let bytes = s.uncompressed_data().map_err(|e| bad(e.to_string()))?;
            let map = s.relocation_map().map_err(|e| bad(e.to_string()))?;
            index.insert(id, sections.len());
            sections.push((bytes, Relocs(std::rc::Rc::new(map))));
        }
    }
    let empty = Relocs(std::rc::Rc::new(object::RelocationMap::default()));
    let load = |id: gimli::SectionId| -> Result<Reader<'_>, gimli::Error> {
        Ok(match index.get(&id) {
            Some(&i) => gimli::RelocateReader::new(
                gimli::EndianSlice::new(&sections[i].0, gimli::LittleEndian),
                sections[i].1.clone(),
            ),
            None => gimli::RelocateReader::new(
                gimli::EndianSlice::new(&[], gimli::LittleEndian),
                empty.clone(),
            ),
        })
    };
    let dwarf = gimli::Dwarf::load(load).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(|e| bad(e.to_string()))? {
        let unit = dwarf.unit(header).map_err(|e| bad(e.to_string()))?;
        read_unit(&dwarf, &unit, &mut out).map_err(|e| bad(e.to_string()))?;
    }
    Ok(out)
}

fn read_unit<'a>(
    dwarf: &gimli::Dwarf<Reader<'a>>,
    unit: &gimli::Unit<Reader<'a>>,
    out: &mut BTreeMap<String, TypeLayout>,
) -> gimli::Result<()> {
    use gimli::Reader as _;
    let name_of = |e: &gimli::DebuggingInformationEntry<Reader<'a>>| -> gimli::Result<String> {
        Ok(match e.attr_value(gimli::DW_AT_name) {
            Some(v) => dwarf.attr_string(unit, v)?.to_string_lossy()?.into_owned(),
            None => String::new(),
        })
    };
    let mut cursor = unit.entries();
    // The aggregate being read: its key and depth.
    let mut current: Option<(String, isize)> = None;
    while let Some(e) = cursor.next_dfs()? {
        let depth = e.depth();
        if let Some((_, d)) = &current
            && depth <= *d
        {
            current = None;
        }
        let kind = match e.tag() {
            gimli::DW_TAG_structure_type => Some("struct"),
            gimli::DW_TAG_union_type => Some("union"),
            _ => None,
        };
        if let Some(kind) = kind {
            let name = name_of(e)?;
            let declaration = e.attr_value(gimli::DW_AT_declaration).is_some();
            if name.is_empty() || declaration {
                continue;
            }
            let key = format!("{kind} {name}");
            if out.contains_key(&key) {
                continue;
            }
            let size = e
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            out.insert(
                key.clone(),
                TypeLayout {
                    kind,
                    size,
                    members: Vec::new(),
                },
            );
            current = Some((key, depth));
            continue;
        }
        if e.tag() == gimli::DW_TAG_member
            && let Some((key, d)) = &current
            && depth == d + 1
        {
            let bits = if let Some(v) = e.attr_value(gimli::DW_AT_data_bit_offset) {
                v.udata_value().unwrap_or(0)
            } else {
                e.attr_value(gimli::DW_AT_data_member_location)
                    .and_then(|v| v.udata_value())
                    .unwrap_or(0)
                    * 8
            };
            let name = name_of(e)?;
            if let Some(t) = out.get_mut(key) {
                t.members.push((name, bits));
            }
        }
    }
    Ok(())
}

/// The types known to both maps whose layout differs.
pub fn compare(
    orig: &BTreeMap<String, TypeLayout>,
    patched: &BTreeMap<String, TypeLayout>,
) -> Vec<LayoutChange> {
    let mut changes = Vec::new();
    for (name, old) in orig {
        let Some(new) = patched.get(name) else {
            continue;
        };
        if old == new {
            continue;
        }
        let what = if old.size != new.size {
            format!("size {} -> {} bytes", old.size, new.size)
        } else {
            let old_m: Vec<_> = old
                .members
                .iter()
                .map(|(n, o)| format!("{n}@{}", o / 8))
                .collect();
            let new_m: Vec<_> = new
                .members
                .iter()
                .map(|(n, o)| format!("{n}@{}", o / 8))
                .collect();
            format!("members [{}] -> [{}]", old_m.join(", "), new_m.join(", "))
        };
        changes.push(LayoutChange {
            type_name: name.clone(),
            what,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn compile(dir: &Path, name: &str, src: &str) -> Vec<u8> {
        let c = dir.join(format!("{name}.c"));
        let o = dir.join(format!("{name}.o"));
        std::fs::write(&c, src).expect("write source");
        let st = Command::new("gcc")
            .args([
                "-c",
                "-O2",
                "-g",
                "-ffunction-sections",
                "-fdata-sections",
                "-o",
            ])
            .arg(&o)
            .arg(&c)
            .status()
            .expect("run gcc");
        assert!(st.success());
        std::fs::read(&o).expect("read object")
    }

    const BASE: &str = "struct dev { int id; char name[8]; long regs[4]; };\n\
        union val { int i; long l; };\n\
        long use(struct dev *d, union val *v) { return d->regs[1] + d->id + v->l; }\n";

    #[test]
    fn same_source_same_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = layouts(&compile(dir.path(), "a", BASE), Path::new("a.o")).expect("a");
        let b = layouts(&compile(dir.path(), "b", BASE), Path::new("b.o")).expect("b");
        assert_eq!(a["struct dev"].size, 48);
        assert_eq!(
            a["struct dev"].members,
            vec![("id".into(), 0), ("name".into(), 32), ("regs".into(), 128)]
        );
        assert!(compare(&a, &b).is_empty());
    }

    #[test]
    fn added_member_is_a_change_naming_the_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = layouts(&compile(dir.path(), "a", BASE), Path::new("a.o")).expect("a");
        let patched = BASE.replace("int id;", "int id; int flags;");
        let b = layouts(&compile(dir.path(), "b", &patched), Path::new("b.o")).expect("b");
        let ch = compare(&a, &b);
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert_eq!(ch[0].type_name, "struct dev");
        assert_eq!(
            ch[0].what,
            "members [id@0, name@4, regs@16] -> [id@0, flags@4, name@8, regs@16]"
        );
    }

    #[test]
    fn resized_union_is_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = layouts(&compile(dir.path(), "a", BASE), Path::new("a.o")).expect("a");
        let patched = BASE.replace("long l; };", "long l; char pad[32]; };");
        let b = layouts(&compile(dir.path(), "b", &patched), Path::new("b.o")).expect("b");
        let ch = compare(&a, &b);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].type_name, "union val");
        assert_eq!(ch[0].what, "size 8 -> 32 bytes");
    }

    #[test]
    fn no_dwarf_no_layouts_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = dir.path().join("n.c");
        std::fs::write(&c, BASE).expect("write");
        let o = dir.path().join("n.o");
        let st = Command::new("gcc")
            .args(["-c", "-O2", "-o"])
            .arg(&o)
            .arg(&c)
            .status()
            .expect("gcc");
        assert!(st.success());
        let l = layouts(&std::fs::read(&o).expect("read"), &o).expect("layouts");
        assert!(l.is_empty());
        let err = layouts(b"\x7fELFgarbage", Path::new("bad.o")).expect_err("garbage");
        assert!(err.to_string().contains("bad.o"), "{err}");
    }
}
