//! The kernel's `jump` method: the stop-all-CPUs core module
//! (`testkernels/kmod/core/hotfix_core.c`) driven from userspace.
//!
//! Model: a kernel patch is the same livepatch-shaped module as for `klp`
//! (a `struct klp_patch` whose init calls `klp_enable_patch`). For the jump
//! method the driver loads a rewritten copy of it ([`rewrite_for_jump`]):
//! - the init's call to `klp_enable_patch` becomes a call to the core's
//!   `hotfix_jmp_apply` (same signature; the name is overwritten in place, the
//!   two names have the same length);
//! - every livepatch symbol (`.klp.sym.<object>.<name>,<sympos>`,
//!   `SHN_LIVEPATCH`) becomes an absolute symbol (`SHN_ABS`) whose value is
//!   the address of that symbol in the running kernel, from `/proc/kallsyms`
//!   (the running kernel's addresses: KASLR is accounted for; `sympos` counts
//!   same-named symbols of the object in kallsyms order, as livepatch does);
//! - every `.klp.rela.*` section loses `SHF_RELA_LIVEPATCH` (and
//!   `SHF_ALLOC`), so the module loader applies it like any relocation;
//! - `.modinfo`'s `livepatch=Y` becomes `hotfixjmp=Y`: the kernel loads it as
//!   an ordinary module (no livepatch taint; works without
//!   `CONFIG_LIVEPATCH` for modules that do not need its headers).
//!
//! The core itself is loaded on first use with the kallsyms addresses of the
//! kernel internals it needs (its `ksym_<symbol>` parameters, listed in its
//! `.modinfo`). The patch module's init returns the core's verdict: `EBUSY`
//! (a function on a stack: the driver backs off and retries until the
//! timeout, then reports the task and function), `EILSEQ` (a site changed:
//! exit 4), `EPERM` (refused: NMI/entry/noinstr code...). Details come from
//! the core's `/proc/hotfix_core` (`last ...` line). Revert writes
//! `revert NAME` there (same stack check against the new functions), then
//! removes the module.
//!
//! Invariants: nothing is written to the kernel before the vermagic check
//! and the rewrite succeeded; a failed apply leaves no module loaded; a
//! record (`/run/hotfix/kernel/NAME.json`, method `jump`) exists exactly for
//! the patches the core lists as applied by this driver.

use super::{Options, Record, read_for_running, running_release};
use crate::Error;
use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The core's control file.
pub const CORE_PROC: &str = "/proc/hotfix_core";
/// The core module's name.
pub const CORE_NAME: &str = "hotfix_core";
/// Where the core module is looked for when `HOTFIX_CORE_MODULE` is unset
/// (`{release}` is the running kernel's).
pub const CORE_PATHS: &[&str] = &[
    "/lib/modules/hotfix/hotfix_core.ko",
    "/lib/modules/{release}/extra/hotfix_core.ko",
    "/lib/modules/{release}/updates/hotfix_core.ko",
];

const SHN_LIVEPATCH: u16 = 0xff20;
const SHN_ABS: u16 = 0xfff1;
const SHF_ALLOC: u64 = 0x2;
const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;
const KLP_ENABLE: &[u8] = b"klp_enable_patch";
const CORE_APPLY: &[u8] = b"hotfix_jmp_apply";

/// One symbol of `/proc/kallsyms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KSym {
    /// Address.
    pub addr: u64,
    /// Type letter (`t`, `T`, `d`...).
    pub kind: char,
    /// Name.
    pub name: String,
    /// `vmlinux` or the module name.
    pub object: String,
}

/// The running kernel's symbols, in kallsyms order.
#[derive(Debug, Clone, Default)]
pub struct Kallsyms {
    syms: Vec<KSym>,
    by_name: HashMap<String, Vec<usize>>,
}

impl Kallsyms {
    /// Parses the text of `/proc/kallsyms`.
    pub fn parse(text: &str) -> Kallsyms {
        Kallsyms::parse_only(text, None).0
    }

    /// Parses the text of `/proc/kallsyms`, keeping only the symbols named
    /// in `wanted` (all when `None`); also says whether any address was
    /// non-zero. One pass over the bytes, no allocation per line: the file
    /// has ~90,000 lines and this runs in slow (emulated) guests too.
    pub fn parse_only(text: &str, wanted: Option<&HashSet<String>>) -> (Kallsyms, bool) {
        let mut k = Kallsyms::default();
        let mut any_addr = false;
        for line in text.split('\n') {
            let mut it = line.splitn(3, ' ');
            let (Some(a), Some(t), Some(rest)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let (n, module) = match rest.split_once('\t') {
                Some((n, m)) => (n, Some(m)),
                None => (rest, None),
            };
            if !any_addr && a.bytes().any(|b| b != b'0') {
                any_addr = true;
            }
            if wanted.is_some_and(|w| !w.contains(n)) {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(a, 16) else {
                continue;
            };
            let object = module
                .map(|m| {
                    m.trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string()
                })
                .unwrap_or_else(|| "vmlinux".to_string());
            k.by_name
                .entry(n.to_string())
                .or_default()
                .push(k.syms.len());
            k.syms.push(KSym {
                addr,
                kind: t.chars().next().unwrap_or('?'),
                name: n.to_string(),
                object,
            });
        }
        (k, any_addr)
    }

    /// Reads `/proc/kallsyms`, keeping the symbols named in `wanted`;
    /// refuses hidden addresses (`kptr_restrict`).
    pub fn read(wanted: &HashSet<String>) -> Result<Kallsyms, Error> {
        let path = Path::new("/proc/kallsyms");
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (k, any_addr) = Kallsyms::parse_only(&text, Some(wanted));
        if !any_addr {
            return Err(Error::Symbol {
                object: "vmlinux".into(),
                name: "/proc/kallsyms".into(),
                reason: "all addresses read as 0 (not root, or kernel.kptr_restrict=2)".into(),
            });
        }
        Ok(k)
    }

    /// The address of `name` in `object` (`vmlinux` or a module): with
    /// `sympos` 0 the symbol must be unique in the object, else the
    /// `sympos`-th occurrence (livepatch's rule).
    pub fn lookup(&self, object: &str, name: &str, sympos: u64) -> Result<u64, Error> {
        let all: Vec<&KSym> = self
            .by_name
            .get(name)
            .map(|v| v.iter().map(|&i| &self.syms[i]).collect())
            .unwrap_or_default();
        let hits: Vec<&KSym> = all.into_iter().filter(|s| s.object == object).collect();
        let err = |reason: String| Error::Symbol {
            object: object.to_string(),
            name: name.to_string(),
            reason,
        };
        match (sympos, hits.len()) {
            (_, 0) => Err(err("not in /proc/kallsyms (object not loaded?)".into())),
            (0, 1) => Ok(hits[0].addr),
            (0, n) => Err(err(format!(
                "{n} symbols of this name; the patch must give a sympos"
            ))),
            (p, n) => hits
                .get(usize::try_from(p - 1).unwrap_or(usize::MAX))
                .map(|s| s.addr)
                .ok_or_else(|| err(format!("sympos {p} but only {n} occurrences"))),
        }
    }
}

/// What [`rewrite_for_jump`] resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// `object.name,sympos`.
    pub symbol: String,
    /// Its address in the running kernel.
    pub addr: u64,
}

fn rd(b: &[u8], at: usize, len: usize) -> Option<u64> {
    let mut v = [0u8; 8];
    v.get_mut(..len)?.copy_from_slice(b.get(at..at + len)?);
    Some(u64::from_le_bytes(v))
}

fn wr(b: &mut [u8], at: usize, v: &[u8]) -> Option<()> {
    b.get_mut(at..at + v.len())?.copy_from_slice(v);
    Some(())
}

/// The lines of the module's `.hotfix.expect` section (the build's
/// expected bytes per jump site, `OBJECT FUNCTION SYMPOS HEX`; see
/// `patchgen::kernel::jump`); empty when the module has none.
pub fn expect_lines(image: &[u8]) -> Vec<String> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(image) else {
        return Vec::new();
    };
    let Some(data) = file
        .section_by_name(patchgen::kernel::jump::SECTION)
        .and_then(|s| s.data().ok())
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| l.split(' ').count() == 4)
        .map(String::from)
        .collect()
}

/// Stages the expected bytes of `name`'s next apply in the core.
fn stage_expect(name: &str, lines: &[String]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: CORE_PROC.into(),
        source,
    };
    std::fs::write(CORE_PROC, format!("expect {name}\n")).map_err(io)?;
    for l in lines {
        std::fs::write(CORE_PROC, format!("expect {name} {l}\n")).map_err(io)?;
    }
    Ok(())
}

/// The symbol names a livepatch module's `.klp.sym.<object>.<name>,<pos>`
/// symbols refer to.
pub fn klp_sym_names(image: &[u8]) -> HashSet<String> {
    use object::{Object, ObjectSymbol};
    let Ok(file) = object::File::parse(image) else {
        return HashSet::new();
    };
    file.symbols()
        .filter_map(|s| {
            let rest = s.name().ok()?.strip_prefix(".klp.sym.")?;
            let (_, name_pos) = rest.split_once('.')?;
            Some(name_pos.rsplit_once(',')?.0.to_string())
        })
        .collect()
}

/// The kernel symbols the core wants (its `ksym_<symbol>` parameters, from
/// the `parmtype=` entries of its `.modinfo`).
pub fn core_ksyms(core_path: &Path, core_image: &[u8]) -> Result<Vec<String>, Error> {
    let info = super::read::modinfo(core_image).map_err(|reason| Error::KernelModule {
        path: core_path.to_path_buf(),
        reason,
    })?;
    Ok(info
        .iter()
        .filter(|(k, _)| k == "parmtype")
        .filter_map(|(_, v)| v.split(':').next()?.strip_prefix("ksym_").map(String::from))
        .collect())
}

/// The modversions CRC of the core's `hotfix_jmp_apply` (from its
/// `__crc_hotfix_jmp_apply` symbol), `None` when the core has none.
pub fn core_crc(core_image: &[u8]) -> Option<u32> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = object::File::parse(core_image).ok()?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok("__crc_hotfix_jmp_apply"))?;
    let sec = file.section_by_index(sym.section_index()?).ok()?;
    let data = sec.data().ok()?;
    let at = usize::try_from(sym.address().checked_sub(sec.address())?).ok()?;
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Rewrites a livepatch module image for the jump method (see the module
/// documentation); returns the new image and the symbols it resolved.
/// `crc`: the core's modversions CRC of `hotfix_jmp_apply`, written into the
/// module's `__versions` entry of `klp_enable_patch` (renamed).
pub fn rewrite_for_jump(
    path: &Path,
    image: &[u8],
    ksyms: &Kallsyms,
    crc: Option<u32>,
) -> Result<(Vec<u8>, Vec<Resolved>), Error> {
    let bad = |reason: String| Error::KernelModule {
        path: path.to_path_buf(),
        reason,
    };
    let e = object::LittleEndian;
    let hdr = elf::FileHeader64::<object::LittleEndian>::parse(image)
        .map_err(|err| bad(format!("not an ELF64 object: {err}")))?;
    let sections = hdr
        .sections(e, image)
        .map_err(|err| bad(format!("section headers: {err}")))?;
    let symtab = sections
        .symbols(e, image, elf::SHT_SYMTAB)
        .map_err(|err| bad(format!("symbol table: {err}")))?;
    let symtab_sec = sections
        .iter()
        .find(|s| s.sh_type(e) == elf::SHT_SYMTAB)
        .ok_or_else(|| bad("no symbol table".into()))?;
    let sym_off = symtab_sec.sh_offset(e) as usize;
    let str_off = sections
        .section(symtab.string_section())
        .map_err(|err| bad(format!("string table: {err}")))?
        .sh_offset(e) as usize;
    let mut out = image.to_vec();
    let mut resolved = Vec::new();

    // Symbol names: where each lies in the string table, to overwrite
    // klp_enable_patch only when no other undefined symbol's name shares its
    // bytes (a defined local such as `patch` may share its tail: its name
    // only shows in kallsyms).
    let mut enable: Option<(usize, usize)> = None;
    let mut names: Vec<(usize, usize)> = Vec::new();
    for (i, sym) in symtab.iter().enumerate() {
        let name = symtab
            .symbol_name(e, sym)
            .map_err(|err| bad(format!("symbol {i}: {err}")))?;
        let st_name = sym.st_name(e) as usize;
        let at = sym_off + i * std::mem::size_of::<elf::Sym64<object::LittleEndian>>();
        // st_shndx is at offset 6 of an Elf64_Sym.
        let shndx =
            rd(image, at + 6, 2).ok_or_else(|| bad(format!("symbol {i} outside the file")))?;
        if shndx == 0 {
            names.push((st_name, name.len()));
        }
        if name == KLP_ENABLE && shndx == 0 {
            enable = Some((i, st_name));
        }
        if shndx == u64::from(SHN_LIVEPATCH) {
            let full = String::from_utf8_lossy(name).into_owned();
            let rest = full
                .strip_prefix(".klp.sym.")
                .ok_or_else(|| bad(format!("livepatch symbol {full} without .klp.sym.")))?;
            // Module names have no dots; symbol names may (`reads.0`).
            let (obj, name_pos) = rest
                .split_once('.')
                .ok_or_else(|| bad(format!("livepatch symbol {full}: no object")))?;
            let (sname, pos) = name_pos
                .rsplit_once(',')
                .ok_or_else(|| bad(format!("livepatch symbol {full}: no sympos")))?;
            let pos: u64 = pos
                .parse()
                .map_err(|_| bad(format!("livepatch symbol {full}: bad sympos")))?;
            let addr = ksyms.lookup(obj, sname, pos)?;
            // st_shndx (offset 6) = SHN_ABS; st_value (offset 8) = address.
            wr(&mut out, at + 6, &SHN_ABS.to_le_bytes())
                .and_then(|_| wr(&mut out, at + 8, &addr.to_le_bytes()))
                .ok_or_else(|| bad(format!("symbol {full} outside the file")))?;
            resolved.push(Resolved {
                symbol: format!("{obj}.{sname},{pos}"),
                addr,
            });
        }
    }
    let (_, st_name) = enable.ok_or_else(|| {
        bad("the module does not call klp_enable_patch (not a livepatch-shaped module)".into())
    })?;
    if names
        .iter()
        .any(|&(o, l)| o != st_name && o < st_name + KLP_ENABLE.len() && o + l > st_name)
    {
        return Err(bad(
            "klp_enable_patch shares string-table bytes with another undefined symbol".into(),
        ));
    }
    wr(&mut out, str_off + st_name, CORE_APPLY)
        .ok_or_else(|| bad("string table outside the file".into()))?;

    // Livepatch relocation sections become ordinary ones.
    let shoff = hdr.e_shoff(e) as usize;
    let shentsize = usize::from(hdr.e_shentsize(e));
    for i in 0..sections.len() {
        // sh_flags is at offset 8 of an Elf64_Shdr.
        let flags = rd(image, shoff + i * shentsize + 8, 8)
            .ok_or_else(|| bad(format!("section header {i} outside the file")))?;
        if flags & SHF_RELA_LIVEPATCH != 0 {
            let new = flags & !(SHF_RELA_LIVEPATCH | SHF_ALLOC);
            wr(&mut out, shoff + i * shentsize + 8, &new.to_le_bytes())
                .ok_or_else(|| bad(format!("section header {i} outside the file")))?;
        }
    }

    // __versions (struct modversion_info: u64 crc, char name[56]): the
    // klp_enable_patch entry becomes hotfix_jmp_apply with the core's CRC.
    if let Some(v) = sections.iter().find(|s| {
        sections
            .section_name(e, s)
            .is_ok_and(|n| n == b"__versions")
    }) {
        let (vo, vs) = (v.sh_offset(e) as usize, v.sh_size(e) as usize);
        let crc = crc.ok_or_else(|| {
            bad(
                "the module has __versions but the core module has no CRC for hotfix_jmp_apply"
                    .into(),
            )
        })?;
        let mut found = false;
        for at in (vo..vo + vs).step_by(64) {
            let name = out.get(at + 8..at + 64).unwrap_or_default();
            if name.starts_with(KLP_ENABLE) && name.get(KLP_ENABLE.len()) == Some(&0) {
                wr(&mut out, at, &u64::from(crc).to_le_bytes())
                    .and_then(|_| wr(&mut out, at + 8, CORE_APPLY))
                    .ok_or_else(|| bad("__versions outside the file".into()))?;
                found = true;
            }
        }
        if !found {
            return Err(bad("__versions has no entry for klp_enable_patch".into()));
        }
    }

    // .modinfo: livepatch=Y -> hotfixjmp=Y (same length).
    let modinfo = sections
        .iter()
        .find(|s| sections.section_name(e, s).is_ok_and(|n| n == b".modinfo"))
        .ok_or_else(|| bad("no .modinfo".into()))?;
    let (mo, ms) = (modinfo.sh_offset(e) as usize, modinfo.sh_size(e) as usize);
    let info = out
        .get(mo..mo + ms)
        .ok_or_else(|| bad(".modinfo outside the file".into()))?;
    let key = b"livepatch=Y\0";
    let at = info
        .windows(key.len())
        .position(|w| w == key)
        .filter(|&p| p == 0 || info[p - 1] == 0)
        .ok_or_else(|| bad("no livepatch=Y in .modinfo".into()))?;
    wr(&mut out, mo + at, b"hotfixjmp=Y\0").ok_or_else(|| bad(".modinfo".into()))?;
    Ok((out, resolved))
}

/// The core's view, parsed from `/proc/hotfix_core`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CoreState {
    /// Applied patches, oldest first.
    pub patches: Vec<CorePatch>,
    /// Outcome of the latest operation.
    pub last: Option<CoreLast>,
}

/// One patch the core has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorePatch {
    /// Patch (module) name.
    pub name: String,
    /// Stop window of its apply (interrupts off on every CPU), ns.
    pub window_ns: u64,
    /// Whole `stop_machine` call of its apply, ns.
    pub stop_ns: u64,
    /// Seconds since the epoch.
    pub applied_at: u64,
    /// Its functions.
    pub funcs: Vec<CoreFunc>,
}

/// One function a jump patch replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreFunc {
    /// `vmlinux` or a module name.
    pub object: String,
    /// Function name.
    pub name: String,
    /// Position among same-named symbols (0: unique).
    pub sympos: u64,
    /// The old function.
    pub old_addr: u64,
    /// Where the jump is written.
    pub site: u64,
    /// The new function.
    pub new_addr: u64,
    /// Whether the site was checked against the build's expected bytes.
    pub expected: bool,
}

/// The core's `last` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreLast {
    /// Operations the core has run so far (this one included).
    pub seq: u64,
    /// Patch name.
    pub name: String,
    /// `apply` or `revert`.
    pub op: String,
    /// 0 or a negative errno.
    pub rc: i32,
    /// Stop window, ns (0 when the switch did not run).
    pub window_ns: u64,
    /// Whole `stop_machine` call, ns.
    pub stop_ns: u64,
    /// Blocking task's pid (0: none).
    pub pid: i32,
    /// Its comm (`-`: none).
    pub comm: String,
    /// The blocking function, or the reason of a refusal.
    pub what: String,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

impl CoreState {
    /// Parses the text of `/proc/hotfix_core`.
    pub fn parse(text: &str) -> CoreState {
        let mut st = CoreState::default();
        for line in text.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            match w.first().copied() {
                Some("patch") if w.len() >= 6 => st.patches.push(CorePatch {
                    name: w[1].into(),
                    window_ns: w[3].parse().unwrap_or(0),
                    stop_ns: w[4].parse().unwrap_or(0),
                    applied_at: w[5].parse().unwrap_or(0),
                    funcs: Vec::new(),
                }),
                Some("func") if w.len() >= 8 => {
                    if let Some(p) = st.patches.iter_mut().find(|p| p.name == w[1]) {
                        p.funcs.push(CoreFunc {
                            object: w[2].into(),
                            name: w[3].into(),
                            sympos: w[4].parse().unwrap_or(0),
                            old_addr: hex(w[5]).unwrap_or(0),
                            site: hex(w[6]).unwrap_or(0),
                            new_addr: hex(w[7]).unwrap_or(0),
                            expected: w.get(8) == Some(&"expected"),
                        });
                    }
                }
                Some("last") if w.len() >= 10 => {
                    st.last = Some(CoreLast {
                        seq: w[1].parse().unwrap_or(0),
                        name: w[2].into(),
                        op: w[3].into(),
                        rc: w[4].parse().unwrap_or(0),
                        window_ns: w[5].parse().unwrap_or(0),
                        stop_ns: w[6].parse().unwrap_or(0),
                        pid: w[7].parse().unwrap_or(0),
                        comm: w[8].into(),
                        what: w[9..].join(" "),
                    })
                }
                _ => {}
            }
        }
        st
    }

    /// Reads the core's state; empty when the core is not loaded.
    pub fn read() -> Result<CoreState, Error> {
        match std::fs::read_to_string(CORE_PROC) {
            Ok(t) => Ok(CoreState::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CoreState::default()),
            Err(source) => Err(Error::Io {
                path: CORE_PROC.into(),
                source,
            }),
        }
    }

    /// The `last` line if it is about `name` and newer than operation
    /// `after` (the sequence number seen before the operation started).
    fn last_for(&self, name: &str, after: u64) -> Option<&CoreLast> {
        self.last
            .as_ref()
            .filter(|l| l.name == name && l.seq > after)
    }

    /// The sequence number of the latest operation (0: none).
    fn seq(&self) -> u64 {
        self.last.as_ref().map(|l| l.seq).unwrap_or(0)
    }
}

/// Finds the core module file: `HOTFIX_CORE_MODULE`, else [`CORE_PATHS`].
pub fn core_module_path() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("HOTFIX_CORE_MODULE") {
        return Ok(PathBuf::from(p));
    }
    let release = running_release()?;
    CORE_PATHS
        .iter()
        .map(|p| PathBuf::from(p.replace("{release}", &release)))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::KernelOp {
            name: CORE_NAME.into(),
            op: "load core",
            reason: format!(
                "no core module found (set HOTFIX_CORE_MODULE; looked in {})",
                CORE_PATHS.join(", ")
            ),
        })
}

/// Loads the core if `/proc/hotfix_core` does not exist yet, passing the
/// kallsyms address of every `ksym_<symbol>` parameter it declares.
pub fn ensure_core(path: &Path, image: &[u8], ksyms: &Kallsyms) -> Result<(), Error> {
    if Path::new(CORE_PROC).exists() {
        return Ok(());
    }
    let path = path.to_path_buf();
    let info = super::read::modinfo(image).map_err(|reason| Error::KernelModule {
        path: path.clone(),
        reason,
    })?;
    if let Some((_, vm)) = info.iter().find(|(k, _)| k == "vermagic") {
        let running = running_release()?;
        if vm.split_whitespace().next() != Some(running.as_str()) {
            return Err(Error::KernelMismatch {
                path,
                vermagic: vm.clone(),
                running,
            });
        }
    }
    let mut params = Vec::new();
    for sym in core_ksyms(&path, image)? {
        let addr = ksyms.lookup("vmlinux", &sym, 1)?;
        params.push(format!("ksym_{sym}={addr:#x}"));
    }
    let file = std::fs::File::open(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let cparams = CString::new(params.join(" ")).map_err(|_| Error::KernelOp {
        name: CORE_NAME.into(),
        op: "load core",
        reason: "parameter with NUL".into(),
    })?;
    match finit_module(&file, &cparams, ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::KernelOp {
            name: CORE_NAME.into(),
            op: "load core",
            reason: format!(
                "finit_module({}): {e} (the kernel log, dmesg, says why)",
                path.display()
            ),
        }),
    }
}

/// What a jump apply did.
#[derive(Debug, Clone, Serialize)]
pub struct JumpApplied {
    /// The record written.
    pub record: Record,
    /// The core's view of the patch.
    pub patch: CorePatch,
    /// Symbols resolved from kallsyms for the patch's references.
    pub resolved: Vec<Resolved>,
    /// Load attempts (more than 1 when a function was busy).
    pub attempts: u32,
}

/// What a jump revert did.
#[derive(Debug, Clone, Serialize)]
pub struct JumpReverted {
    /// Patch name.
    pub name: String,
    /// Stop window of the revert, ns.
    pub window_ns: u64,
    /// Attempts.
    pub attempts: u32,
}

/// Backoff between busy attempts: 20 ms doubling to 500 ms, capped by what
/// is left of the timeout.
fn backoff(attempt: u32, left: Duration) -> Duration {
    let ms = 20u64 << attempt.min(5);
    Duration::from_millis(ms.min(500)).min(left)
}

fn busy_error(
    name: &str,
    action: &'static str,
    last: Option<&CoreLast>,
    timeout: Duration,
    attempts: u32,
) -> Error {
    let (pid, comm, func) = last
        .map(|l| (l.pid, l.comm.clone(), l.what.clone()))
        .unwrap_or((0, "?".into(), "?".into()));
    Error::KernelBusy {
        name: name.to_string(),
        action,
        pid,
        comm,
        func,
        timeout,
        attempts,
    }
}

/// Applies a livepatch-shaped module with the jump method.
pub fn apply(path: &Path, opts: &Options) -> Result<JumpApplied, Error> {
    let info = read_for_running(path)?;
    let name = info.name.clone();
    let op = |op: &'static str, reason: String| Error::KernelOp {
        name: name.clone(),
        op,
        reason,
    };
    if Path::new("/sys/module").join(&name).exists() {
        return Err(op(
            "apply",
            "a module of this name is loaded already (applied already?)".into(),
        ));
    }
    let image = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let core_path = core_module_path()?;
    let core_image = std::fs::read(&core_path).map_err(|source| Error::Io {
        path: core_path.clone(),
        source,
    })?;
    // /proc/kallsyms only when something must be resolved: the patch's
    // .klp.sym references, and the core's parameters if it is not loaded.
    let mut wanted = klp_sym_names(&image);
    if !Path::new(CORE_PROC).exists() {
        wanted.extend(core_ksyms(&core_path, &core_image)?);
    }
    let ksyms = if wanted.is_empty() {
        Kallsyms::default()
    } else {
        Kallsyms::read(&wanted)?
    };
    let (rewritten, resolved) = rewrite_for_jump(path, &image, &ksyms, core_crc(&core_image))?;
    ensure_core(&core_path, &core_image, &ksyms)?;
    std::fs::create_dir_all(&opts.registry).map_err(|source| Error::Io {
        path: opts.registry.clone(),
        source,
    })?;
    let copy = opts.registry.join(format!("{name}.jump.ko"));
    std::fs::write(&copy, &rewritten).map_err(|source| Error::Io {
        path: copy.clone(),
        source,
    })?;
    let expect = expect_lines(&image);
    let start = Instant::now();
    let mut attempts = 0u32;
    let load_us;
    loop {
        attempts += 1;
        stage_expect(&name, &expect)?;
        let before = CoreState::read()?.seq();
        let file = std::fs::File::open(&copy).map_err(|source| Error::Io {
            path: copy.clone(),
            source,
        })?;
        let t0 = Instant::now();
        let r = finit_module(&file, c"", ModuleInitFlags::empty());
        match r {
            Ok(()) => {
                load_us = t0.elapsed().as_micros() as u64;
                break;
            }
            Err(Errno::EBUSY) => {
                let st = CoreState::read()?;
                let left = opts.timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    let _ = std::fs::remove_file(&copy);
                    return Err(busy_error(
                        &name,
                        "apply",
                        st.last_for(&name, before),
                        opts.timeout,
                        attempts,
                    ));
                }
                if let Some(l) = st.last_for(&name, before) {
                    tracing::debug!(patch = %name, pid = l.pid, comm = %l.comm, func = %l.what, "busy; retrying");
                }
                std::thread::sleep(backoff(attempts, left));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&copy);
                let st = CoreState::read()?;
                let what = st
                    .last_for(&name, before)
                    .map(|l| l.what.clone())
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "see dmesg".into());
                return Err(match e {
                    Errno::EPERM => Error::KernelRefused { name, reason: what },
                    Errno::EILSEQ => Error::KernelSite {
                        name,
                        action: "apply",
                        reason: what,
                    },
                    _ => op(
                        "load",
                        format!("finit_module({}): {e}: {what}", path.display()),
                    ),
                });
            }
        }
    }
    let st = CoreState::read()?;
    let patch = st
        .patches
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| op("apply", "loaded, but the core does not list it".into()))?;
    let record = Record {
        name: name.clone(),
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        description: info.description,
        applied_at: patch.applied_at,
        load_us,
        transition_us: 0,
        method: "jump".into(),
        stop_window_ns: Some(patch.window_ns),
    };
    super::write_record(opts, &record)?;
    Ok(JumpApplied {
        record,
        patch,
        resolved,
        attempts,
    })
}

/// Reverts a jump patch: the core unpatches (retrying while a new function
/// is on a stack, until the timeout), then the module is removed.
pub fn revert(name: &str, opts: &Options) -> Result<JumpReverted, Error> {
    let st = CoreState::read()?;
    if !st.patches.iter().any(|p| p.name == name) {
        return Err(Error::KernelOp {
            name: name.to_string(),
            op: "revert",
            reason: "not applied with the jump method".into(),
        });
    }
    let start = Instant::now();
    let mut attempts = 0u32;
    let mut before;
    loop {
        attempts += 1;
        before = CoreState::read()?.seq();
        match std::fs::write(CORE_PROC, format!("revert {name}\n")) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let st = CoreState::read()?;
                let left = opts.timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(busy_error(
                        name,
                        "revert",
                        st.last_for(name, before),
                        opts.timeout,
                        attempts,
                    ));
                }
                if let Some(l) = st.last_for(name, before) {
                    tracing::debug!(patch = %name, pid = l.pid, comm = %l.comm, func = %l.what, "busy; retrying");
                }
                std::thread::sleep(backoff(attempts, left));
            }
            Err(e) if e.raw_os_error() == Some(libc::EILSEQ) => {
                return Err(Error::KernelSite {
                    name: name.to_string(),
                    action: "revert",
                    reason: "a patch site no longer holds the core's jump".into(),
                });
            }
            Err(source) => {
                return Err(Error::Io {
                    path: CORE_PROC.into(),
                    source,
                });
            }
        }
    }
    let window_ns = CoreState::read()?
        .last_for(name, before)
        .map(|l| l.window_ns)
        .unwrap_or(0);
    super::remove_module(name)?;
    super::drop_record(opts, name);
    let _ = std::fs::remove_file(opts.registry.join(format!("{name}.jump.ko")));
    Ok(JumpReverted {
        name: name.to_string(),
        window_ns,
        attempts,
    })
}

/// Whether `name` is a patch applied by the jump core.
pub fn is_applied(name: &str) -> bool {
    CoreState::read().is_ok_and(|s| s.patches.iter().any(|p| p.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "ffffffff81000000 T _stext\n\
        ffffffff81001000 t helper\n\
        ffffffff81002000 t helper\n\
        ffffffff81003000 D text_mutex\n\
        ffffffffc0001000 t helper\t[mod_a]\n\
        ffffffffc0002000 b reads.0\t[mod_a]\n";

    #[test]
    fn kallsyms_lookup_follows_livepatch_sympos() {
        let k = Kallsyms::parse(KALLSYMS);
        assert_eq!(
            k.lookup("vmlinux", "text_mutex", 0).ok(),
            Some(0xffffffff81003000)
        );
        assert!(
            k.lookup("vmlinux", "helper", 0).is_err(),
            "ambiguous without sympos"
        );
        assert_eq!(
            k.lookup("vmlinux", "helper", 2).ok(),
            Some(0xffffffff81002000)
        );
        assert!(k.lookup("vmlinux", "helper", 3).is_err());
        assert_eq!(
            k.lookup("mod_a", "helper", 0).ok(),
            Some(0xffffffffc0001000)
        );
        assert_eq!(
            k.lookup("mod_a", "reads.0", 1).ok(),
            Some(0xffffffffc0002000)
        );
        assert!(k.lookup("mod_b", "helper", 0).is_err());
    }

    #[test]
    fn parses_core_state() {
        let st = CoreState::parse(
            "patch lp_x 1 12000 90000 1700000000\n\
             func lp_x hfx_x2apic x2apic_msr_read 0 0xffffffffc0001000 0xffffffffc0001005 0xffffffffc0100000 expected\n\
             last 7 lp_k apply -16 0 0 77 hfx_worker hfx_worker_wait+0x1b/0x40 [hfx_kthread]\n",
        );
        assert_eq!(st.patches.len(), 1);
        assert_eq!(st.patches[0].window_ns, 12000);
        assert_eq!(st.patches[0].funcs[0].site, 0xffffffffc0001005);
        assert!(st.patches[0].funcs[0].expected);
        let l = st
            .last
            .as_ref()
            .map(|l| (l.rc, l.pid, l.comm.as_str(), l.what.as_str()));
        assert_eq!(
            l,
            Some((
                -16,
                77,
                "hfx_worker",
                "hfx_worker_wait+0x1b/0x40 [hfx_kthread]"
            ))
        );
        assert!(st.last_for("lp_x", 0).is_none());
        assert!(st.last_for("lp_k", 6).is_some());
        assert!(
            st.last_for("lp_k", 7).is_none(),
            "stale: not newer than seq 7"
        );
    }
}
