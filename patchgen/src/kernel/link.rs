//! Linking a livepatch module: the patch objects of the object diff, a
//! generated klp registration stub, kbuild, then klp relocations.
//!
//! Model (Documentation/livepatch/module-elf-format.rst): the module's init
//! registers a `klp_patch` whose `klp_object`s (`NULL` name for vmlinux, else
//! a module name) list `klp_func`s (`old_name`, `old_sympos`, `new_func`).
//! New code reaches unexported or local symbols of the patched object
//! through *livepatch symbols* — `.klp.sym.<object>.<name>,<sympos>`, with
//! `st_shndx = SHN_LIVEPATCH` — and *livepatch relocation sections* —
//! `.klp.rela.<object>.<section>`, flagged `SHF_RELA_LIVEPATCH`, which the
//! module loader skips and livepatch applies once the object is loaded
//! (at once for vmlinux or a loaded module; later for a module loaded later).
//!
//! Steps: [`prepare_patch_object`] renames, in each patch object, the new
//! functions to unique globals (`__hotfix_new_N`, referenced by the stub) and
//! the references needing klp relocations to unique placeholders
//! (`__hotfix_klp_N`); [`stub_c`] writes the registration; [`kbuild_module`]
//! links both with kbuild (`KBUILD_MODPOST_WARN=1`: the placeholders are
//! undefined on purpose); [`klp_convert`] turns placeholders into livepatch
//! symbols and moves their relocations into `.klp.rela` sections.
//!
//! Invariant: after [`klp_convert`] no placeholder is left undefined and no
//! ordinary relocation references a livepatch symbol.

use crate::Error;
use object::build::elf::{Builder, SectionData};
use object::elf;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `st_shndx` of livepatch symbols.
pub const SHN_LIVEPATCH: u16 = 0xff20;
/// `sh_flags` bit of livepatch relocation sections.
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;

/// One function the patch replaces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KlpFunc {
    /// `vmlinux` or the module name.
    pub object: String,
    /// Name of the old function.
    pub old_name: String,
    /// Position among same-named local symbols of the object (0: unique).
    pub sympos: u32,
    /// Global symbol of the new function in the linked patch.
    pub new_symbol: String,
}

/// One reference of new code resolved by livepatch at patch time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KlpSym {
    /// Placeholder symbol in the linked patch (`__hotfix_klp_N`).
    pub placeholder: String,
    /// `vmlinux` or the module name.
    pub object: String,
    /// Name in the object's symbol table.
    pub name: String,
    /// Position among same-named local symbols (0: unique).
    pub sympos: u32,
}

impl KlpSym {
    /// The livepatch symbol name, `.klp.sym.<object>.<name>,<sympos>`.
    pub fn klp_name(&self) -> String {
        format!(".klp.sym.{}.{},{}", self.object, self.name, self.sympos)
    }
}

fn emit_err(file: &str) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Emit {
        file: file.to_owned(),
        reason,
    }
}

/// Renames symbols of a patch object (`from -> to`; a renamed local becomes
/// global) and drops its `.hotfix.meta` section.
pub fn prepare_patch_object(
    data: &[u8],
    file: &str,
    renames: &BTreeMap<String, String>,
) -> Result<Vec<u8>, Error> {
    let err = emit_err(file);
    let mut b = Builder::read(data).map_err(|e| err(e.to_string()))?;
    let mut seen = BTreeSet::new();
    for sym in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        if let Some(to) = renames.get(&name) {
            sym.name = to.clone().into_bytes().into();
            if sym.section.is_some() && sym.st_bind() == elf::STB_LOCAL {
                sym.st_info = elf::SymbolInfo::new(elf::STB_GLOBAL, sym.st_type());
            }
            seen.insert(name);
        }
    }
    if let Some(missing) = renames.keys().find(|k| !seen.contains(*k)) {
        return Err(err(format!(
            "symbol {missing} not found in the patch object"
        )));
    }
    let meta: Vec<_> = b
        .sections
        .iter()
        .filter(|s| s.name.as_slice() == crate::format::META_SECTION.as_bytes())
        .map(|s| s.id())
        .collect();
    for sec in b.sections.iter_mut() {
        if meta.contains(&sec.id()) || sec.sh_info_section.is_some_and(|t| meta.contains(&t)) {
            sec.delete = true;
        }
    }
    b.delete_orphans();
    let mut out = Vec::new();
    b.write(&mut out).map_err(|e| err(e.to_string()))?;
    Ok(out)
}

fn c_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => o.push(c),
            _ => o.push('?'),
        }
    }
    o.push('"');
    o
}

/// The C source of the registration stub.
pub fn stub_c(description: &str, replace: bool, funcs: &[KlpFunc]) -> String {
    let mut by_obj: BTreeMap<&str, Vec<&KlpFunc>> = BTreeMap::new();
    for f in funcs {
        by_obj.entry(f.object.as_str()).or_default().push(f);
    }
    let mut s = String::from(
        "// SPDX-License-Identifier: GPL-2.0\n\
         /* Generated by hotfix build --kernel: livepatch registration. */\n\
         #include <linux/module.h>\n#include <linux/kernel.h>\n#include <linux/livepatch.h>\n\n",
    );
    for f in funcs {
        s.push_str(&format!("extern void {}(void);\n", f.new_symbol));
    }
    for (i, (_, fs)) in by_obj.iter().enumerate() {
        s.push_str(&format!("\nstatic struct klp_func funcs_{i}[] = {{\n"));
        for f in fs {
            s.push_str(&format!(
                "\t{{ .old_name = {}, .new_func = {}, .old_sympos = {} }},\n",
                c_string(&f.old_name),
                f.new_symbol,
                f.sympos
            ));
        }
        s.push_str("\t{ }\n};\n");
    }
    s.push_str("\nstatic struct klp_object objs[] = {\n");
    for (i, (obj, _)) in by_obj.iter().enumerate() {
        let name = if *obj == "vmlinux" {
            "NULL".to_string()
        } else {
            c_string(obj)
        };
        s.push_str(&format!("\t{{ .name = {name}, .funcs = funcs_{i} }},\n"));
    }
    s.push_str("\t{ }\n};\n\n");
    s.push_str(&format!(
        "static struct klp_patch patch = {{\n\t.mod = THIS_MODULE,\n\t.objs = objs,\n\t.replace = {},\n}};\n\n",
        if replace { "true" } else { "false" }
    ));
    s.push_str(
        "static int __init hotfix_klp_init(void)\n{\n\treturn klp_enable_patch(&patch);\n}\n\n\
         static void __exit hotfix_klp_exit(void)\n{\n}\n\n\
         module_init(hotfix_klp_init);\nmodule_exit(hotfix_klp_exit);\n\
         MODULE_LICENSE(\"GPL\");\nMODULE_INFO(livepatch, \"Y\");\n",
    );
    s.push_str(&format!("MODULE_DESCRIPTION({});\n", c_string(description)));
    s
}

/// Builds `NAME.ko` in `dir` from `klp.c` (the stub) and `patch.o` (the
/// prepared patch objects, linked with `ld -r`).
pub fn kbuild_module(
    headers: &Path,
    dir: &Path,
    name: &str,
    stub: &str,
    patch_objects: &[Vec<u8>],
) -> Result<PathBuf, Error> {
    kbuild_module_with(headers, dir, name, stub, patch_objects, &[])
}

/// [`kbuild_module`], with other modules' `Module.symvers` given to modpost
/// (`KBUILD_EXTRA_SYMBOLS`): ordinary references to their exports (a static
/// key of the patched module in a carried `__jump_table` entry) then get
/// their symbol versions (`CONFIG_MODVERSIONS` refuses a module without
/// them) and a `depends=` on that module.
pub fn kbuild_module_with(
    headers: &Path,
    dir: &Path,
    name: &str,
    stub: &str,
    patch_objects: &[Vec<u8>],
    extra_symbols: &[PathBuf],
) -> Result<PathBuf, Error> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut inputs = Vec::new();
    for (i, o) in patch_objects.iter().enumerate() {
        let p = dir.join(format!("part{i}.o.in"));
        std::fs::write(&p, o).map_err(|e| io(&p, e))?;
        inputs.push(p);
    }
    let patch_o = dir.join("patch.o");
    super::kbuild::run_logged(
        "merge the patch objects (ld -r)",
        std::process::Command::new("ld")
            .arg("-r")
            .arg("-o")
            .arg(&patch_o)
            .args(&inputs),
        &dir.join("ld.log"),
    )?;
    // kbuild wants a .cmd file for each object it links; patch.o is ours.
    let cmd = dir.join(".patch.o.cmd");
    std::fs::write(&cmd, "savedcmd_patch.o := true\ncmd_patch.o := true\n")
        .map_err(|e| io(&cmd, e))?;
    let stub_path = dir.join("klp.c");
    std::fs::write(&stub_path, stub).map_err(|e| io(&stub_path, e))?;
    let kbuild = dir.join("Kbuild");
    std::fs::write(
        &kbuild,
        format!("obj-m := {name}.o\n{name}-y := klp.o patch.o\n"),
    )
    .map_err(|e| io(&kbuild, e))?;
    super::kbuild::run_logged(
        "kbuild of the livepatch module",
        std::process::Command::new("make")
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", dir.display()))
            .arg("KBUILD_MODPOST_WARN=1")
            .args((!extra_symbols.is_empty()).then(|| {
                let list: Vec<String> = extra_symbols
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("KBUILD_EXTRA_SYMBOLS={}", list.join(" "))
            }))
            .arg("modules"),
        &dir.join("kbuild.log"),
    )?;
    Ok(dir.join(format!("{name}.ko")))
}

/// What [`klp_convert`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Converted {
    /// Livepatch symbols written.
    pub symbols: Vec<String>,
    /// Livepatch relocation sections written, with their entry counts.
    pub sections: Vec<(String, usize)>,
}

/// Turns placeholders into livepatch symbols and moves their relocations
/// into `.klp.rela.<object>.<section>` sections.
pub fn klp_convert(ko: &[u8], file: &str, syms: &[KlpSym]) -> Result<(Vec<u8>, Converted), Error> {
    let err = emit_err(file);
    let mut b = Builder::read(ko).map_err(|e| err(e.to_string()))?;
    let by_name: BTreeMap<&str, &KlpSym> =
        syms.iter().map(|s| (s.placeholder.as_str(), s)).collect();
    // Placeholder symbol id -> its object.
    let mut klp_ids = Vec::new();
    let mut done = Converted::default();
    for sym in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        let Some(k) = by_name.get(name.as_str()) else {
            continue;
        };
        if sym.section.is_some() {
            return Err(err(format!("placeholder {name} is defined in the module")));
        }
        let klp = k.klp_name();
        sym.name = klp.clone().into_bytes().into();
        sym.st_shndx = elf::SymbolSection(SHN_LIVEPATCH);
        sym.st_info = elf::SymbolInfo::new(elf::STB_GLOBAL, sym.st_type());
        klp_ids.push((sym.id(), k.object.clone()));
        done.symbols.push(klp);
    }
    if done.symbols.len() != syms.len() {
        let found: BTreeSet<&String> = done.symbols.iter().collect();
        let missing: Vec<String> = syms
            .iter()
            .filter(|s| !found.contains(&s.klp_name()))
            .map(|s| format!("{} ({})", s.placeholder, s.name))
            .collect();
        if !missing.is_empty() {
            tracing::debug!(?missing, "placeholders not referenced by the linked module");
        }
    }
    // Split every relocation section.
    let symtab = b
        .sections
        .iter()
        .find(|s| s.sh_type == elf::SHT_SYMTAB)
        .map(|s| s.id())
        .ok_or_else(|| err("no symbol table".into()))?;
    let mut new_sections = Vec::new();
    for sec in b.sections.iter_mut() {
        let Some(target) = sec.sh_info_section else {
            continue;
        };
        let SectionData::Relocation(relocs) = &mut sec.data else {
            continue;
        };
        let mut moved: BTreeMap<String, Vec<object::build::elf::Relocation>> = BTreeMap::new();
        relocs.retain(|r| {
            let Some((_, obj)) = r
                .symbol
                .and_then(|s| klp_ids.iter().find(|(id, _)| *id == s))
            else {
                return true;
            };
            moved.entry(obj.clone()).or_default().push(*r);
            false
        });
        for (obj, rs) in moved {
            new_sections.push((obj, target, rs));
        }
    }
    for (obj, target, rs) in new_sections {
        let target_name = String::from_utf8_lossy(&b.sections.get(target).name).into_owned();
        let name = format!(".klp.rela.{obj}.{target_name}");
        done.sections.push((name.clone(), rs.len()));
        let s = b.sections.add();
        s.name = name.into_bytes().into();
        s.sh_type = elf::SHT_RELA;
        s.sh_flags =
            elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_INFO_LINK.0 | SHF_RELA_LIVEPATCH);
        s.sh_link_section = Some(symtab);
        s.sh_info_section = Some(target);
        s.sh_addralign = 8;
        s.sh_entsize = 24;
        s.data = SectionData::Relocation(rs);
    }
    let mut out = Vec::with_capacity(ko.len());
    b.write(&mut out).map_err(|e| err(e.to_string()))?;
    Ok((out, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSymbol, write};

    fn funcs() -> Vec<KlpFunc> {
        vec![
            KlpFunc {
                object: "hfx_x2apic".into(),
                old_name: "x2apic_msr_read".into(),
                sympos: 0,
                new_symbol: "__hotfix_new_0".into(),
            },
            KlpFunc {
                object: "vmlinux".into(),
                old_name: "cmdline_proc_show".into(),
                sympos: 2,
                new_symbol: "__hotfix_new_1".into(),
            },
        ]
    }

    #[test]
    fn stub_registers_every_function_per_object() {
        insta::assert_snapshot!(stub_c("fix \"range\"\n", true, &funcs()));
    }

    /// A relocatable object whose `.text.f` calls an undefined placeholder.
    fn object_with_placeholder() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut o = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = o.add_section(vec![], b".text.f".to_vec(), object::SectionKind::Text);
        let off = o.append_section_data(text, &[0xe8, 0, 0, 0, 0, 0xc3], 16);
        o.add_symbol(write::Symbol {
            name: b"f".to_vec(),
            value: off,
            size: 6,
            kind: object::SymbolKind::Text,
            scope: object::SymbolScope::Compilation,
            weak: false,
            section: write::SymbolSection::Section(text),
            flags: object::SymbolFlags::None,
        });
        let ph = o.add_symbol(write::Symbol {
            name: b"__hotfix_klp_0".to_vec(),
            value: 0,
            size: 0,
            kind: object::SymbolKind::Unknown,
            scope: object::SymbolScope::Unknown,
            weak: false,
            section: write::SymbolSection::Undefined,
            flags: object::SymbolFlags::None,
        });
        let exported = o.add_symbol(write::Symbol {
            name: b"_printk".to_vec(),
            value: 0,
            size: 0,
            kind: object::SymbolKind::Unknown,
            scope: object::SymbolScope::Unknown,
            weak: false,
            section: write::SymbolSection::Undefined,
            flags: object::SymbolFlags::None,
        });
        for (offset, symbol) in [(1, ph), (3, exported)] {
            o.add_relocation(
                text,
                write::Relocation {
                    offset,
                    symbol,
                    addend: -4,
                    flags: object::RelocationFlags::Elf {
                        r_type: object::elf::R_X86_64_PC32,
                    },
                },
            )?;
        }
        Ok(o.write()?)
    }

    #[test]
    fn placeholders_become_livepatch_symbols_and_relocations()
    -> Result<(), Box<dyn std::error::Error>> {
        let data = object_with_placeholder()?;
        let syms = [KlpSym {
            placeholder: "__hotfix_klp_0".into(),
            object: "hfx_x2apic".into(),
            name: "reads.12".into(),
            sympos: 0,
        }];
        let (out, done) = klp_convert(&data, "t.o", &syms)?;
        assert_eq!(
            done.symbols,
            vec![".klp.sym.hfx_x2apic.reads.12,0".to_string()]
        );
        assert_eq!(
            done.sections,
            vec![(".klp.rela.hfx_x2apic..text.f".to_string(), 1)]
        );
        let f = object::File::parse(out.as_slice())?;
        let klp = f
            .symbols()
            .find(|s| s.name() == Ok(".klp.sym.hfx_x2apic.reads.12,0"))
            .ok_or("no livepatch symbol")?;
        let object::SymbolFlags::Elf { .. } = klp.flags() else {
            return Err("not an ELF symbol".into());
        };
        // st_shndx is SHN_LIVEPATCH: neither undefined nor a section.
        assert!(!klp.is_undefined());
        assert_eq!(klp.section_index(), None);
        let sec = f
            .section_by_name(".klp.rela.hfx_x2apic..text.f")
            .ok_or("no .klp.rela section")?;
        let object::SectionFlags::Elf { sh_flags, .. } = sec.flags() else {
            return Err("not an ELF section".into());
        };
        assert_eq!(
            sh_flags.0,
            elf::SHF_ALLOC.0 | elf::SHF_INFO_LINK.0 | SHF_RELA_LIVEPATCH
        );
        // Both relocations remain, the exported one in the ordinary
        // section (one 24-byte entry), the other in the .klp.rela section.
        let text = f.section_by_name(".text.f").ok_or("no .text.f")?;
        let mut seen: Vec<(u64, String)> = text
            .relocations()
            .map(|(off, r)| {
                let name = match r.target() {
                    object::RelocationTarget::Symbol(i) => f
                        .symbol_by_index(i)
                        .ok()
                        .and_then(|s| s.name().ok().map(str::to_owned))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                (off, name)
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (1, ".klp.sym.hfx_x2apic.reads.12,0".to_string()),
                (3, "_printk".to_string())
            ]
        );
        let rela = f.section_by_name(".rela.text.f").ok_or("no .rela.text.f")?;
        assert_eq!(rela.size(), 24);
        Ok(())
    }

    #[test]
    fn renames_globalize_and_missing_symbols_are_errors() -> Result<(), Box<dyn std::error::Error>>
    {
        let data = object_with_placeholder()?;
        let mut renames = BTreeMap::new();
        renames.insert("f".to_string(), "__hotfix_new_0".to_string());
        let out = prepare_patch_object(&data, "t.o", &renames)?;
        let f = object::File::parse(out.as_slice())?;
        let s = f
            .symbols()
            .find(|s| s.name() == Ok("__hotfix_new_0"))
            .ok_or("not renamed")?;
        assert!(s.is_global());
        renames.insert("nope".to_string(), "x".to_string());
        let e = prepare_patch_object(&data, "t.o", &renames)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("symbol nope not found"), "{e}");
        Ok(())
    }

    #[test]
    fn c_strings_are_escaped() {
        assert_eq!(c_string("a\"b\\c\nd"), "\"a\\\"b\\\\c?d\"");
    }
}
