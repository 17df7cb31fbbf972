//! Reading a livepatch kernel module (`.ko`) before anything is loaded.
//!
//! Model: a `.ko` is an ELF relocatable object whose `.modinfo` section holds
//! NUL-separated `key=value` strings written by kbuild (`name`, `vermagic`,
//! `livepatch`, `description`, `depends`...). The module's name (the one
//! `/sys/module` and `/sys/kernel/livepatch` use) is `name=`.
//!
//! Invariant: [`read_module`] only reads the file; it refuses anything that
//! is not a module flagged `livepatch=Y`, so the kernel never sees it.

use crate::Error;
use object::{Object, ObjectSection};
use std::path::Path;

/// What hotfix needs to know about a livepatch module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name (`name=` in `.modinfo`); also the livepatch's name.
    pub name: String,
    /// `vermagic=`: the kernel release and options the module was built for.
    pub vermagic: String,
    /// `description=`, empty when absent.
    pub description: String,
    /// Size of the file in bytes.
    pub size: u64,
}

impl ModuleInfo {
    /// The kernel release the module was built for (first word of `vermagic`).
    pub fn release(&self) -> &str {
        self.vermagic.split_whitespace().next().unwrap_or("")
    }
}

/// Parses the `.modinfo` strings of a module image into `(key, value)` pairs.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
    if file.kind() != object::ObjectKind::Relocatable {
        return Err("not a kernel module (ELF type is not ET_REL)".into());
    }
    let sec = file
        .section_by_name(".modinfo")
        .ok_or("not a kernel module (no .modinfo section)")?;
    let data = sec
        .data()
        .map_err(|e| format!("unreadable .modinfo section: {e}"))?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let s = std::str::from_utf8(entry).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// Reads and checks a livepatch module file.
pub fn read_module(path: &Path) -> Result<ModuleInfo, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| Error::KernelModule {
        path: path.to_path_buf(),
        reason,
    };
    let info = modinfo(&bytes).map_err(bad)?;
    let get = |k: &str| {
        info.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let name = get("name").ok_or_else(|| bad("no name= in .modinfo".into()))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad(format!(
            "module name {name:?} is not a valid module name"
        )));
    }
    if get("livepatch").as_deref() != Some("Y") {
        return Err(bad(format!(
            "module {name} is not a livepatch module (no MODULE_INFO(livepatch, \"Y\"))"
        )));
    }
    let vermagic = get("vermagic").ok_or_else(|| bad("no vermagic= in .modinfo".into()))?;
    Ok(ModuleInfo {
        name,
        vermagic,
        description: get("description").unwrap_or_default(),
        size: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_elf_and_non_module() {
        assert!(modinfo(b"not an elf").is_err());
        // A relocatable object without .modinfo: an empty object written by
        // the `object` crate.
        let obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let bytes = obj.write().unwrap_or_default();
        let err = modinfo(&bytes).err().unwrap_or_default();
        assert!(err.contains(".modinfo"), "{err}");
    }

    #[test]
    fn parses_modinfo_and_requires_livepatch() -> Result<(), Box<dyn std::error::Error>> {
        let mut obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let sec = obj.add_section(vec![], b".modinfo".to_vec(), object::SectionKind::Data);
        obj.append_section_data(
            sec,
            b"description=fix it\0name=lp_demo\0vermagic=6.1.0-47-cloud-amd64 SMP preempt\0",
            1,
        );
        let dir = tempfile::tempdir()?;
        let plain = dir.path().join("plain.ko");
        std::fs::write(&plain, obj.write()?)?;
        let e = read_module(&plain)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("not a livepatch module") && e.contains("lp_demo"),
            "{e}"
        );
        obj.append_section_data(sec, b"livepatch=Y\0", 1);
        let lp = dir.path().join("lp.ko");
        std::fs::write(&lp, obj.write()?)?;
        let m = read_module(&lp)?;
        assert_eq!(m.name, "lp_demo");
        assert_eq!(m.release(), "6.1.0-47-cloud-amd64");
        assert_eq!(m.description, "fix it");
        Ok(())
    }
}
