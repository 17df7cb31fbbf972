//! The userspace patch-module format: one ELF relocatable file (`ET_REL`, x86-64)
//! plus a `.hotfix.meta` section that describes it.
//!
//! Model: the ELF part is an ordinary relocatable object holding the new and
//! changed functions (`.text.*`), the new data (`.data.*`, `.bss.*`,
//! `.rodata.*`) and their relocations. Every reference to code or data that
//! the patch does not carry is an *undefined* ELF symbol; the [`Meta::refs`]
//! table says how the loader resolves it in the running target (name,
//! binding, source file, position among same-named local symbols).
//!
//! The metadata section holds [`META_MAGIC`], a little-endian `u32` format
//! version, then one JSON document ([`Meta`]). JSON keeps the file
//! self-describing and diffable; the version guards incompatible changes.
//!
//! Invariants (checked by [`Meta::validate`], relied on by the loader;
//! [`Meta::validate_self`] checks those that do not need the ELF part):
//! - every [`Func::new_symbol`] names a defined `STT_FUNC` symbol of the ELF part;
//! - every undefined ELF symbol has exactly one [`Ref`] with the same `symbol`;
//! - every `target` index is in range of [`Meta::targets`];
//! - `expected` and `expected_mask` have the same length, at least 5 bytes
//!   (9 when the function starts with `endbr64`).
//!
//! The full specification is `docs/patch-format.md`.

use serde::{Deserialize, Serialize};

/// Name of the metadata section.
pub const META_SECTION: &str = ".hotfix.meta";
/// First bytes of the metadata section.
pub const META_MAGIC: &[u8; 8] = b"HOTFIX\0\0";
/// Current version of the format. Readers refuse any other version.
pub const FORMAT_VERSION: u32 = 1;

/// Everything the loader needs to know about a patch, besides the ELF part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Short identifier of the patch (`[A-Za-z0-9._-]+`), used by `revert`.
    pub id: String,
    /// Human description (one line or more).
    pub description: String,
    /// Hex SHA-256 of the source fix (the diff), or of the patched objects
    /// when the patch was made from objects alone.
    pub source_hash: String,
    /// The objects of the running target that this patch modifies.
    pub targets: Vec<Target>,
    /// Replaced functions: each old function gets a jump to its new version.
    pub funcs: Vec<Func>,
    /// Names (ELF symbols of this file) of functions new in the patch.
    pub new_funcs: Vec<String>,
    /// Names (ELF symbols of this file) of data objects new in the patch.
    pub new_data: Vec<String>,
    /// How to resolve each undefined ELF symbol in the running target.
    pub refs: Vec<Ref>,
}

/// One object of the target (an executable or a shared library).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Hex GNU build-id of the object; empty when unknown (the patch was made
    /// from objects only and cannot be applied until stamped).
    pub build_id: String,
    /// Path or soname, for humans; never used for matching.
    pub name: String,
}

/// Binding of a symbol in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    /// `STB_LOCAL`: resolved by name + file + sympos in the target's `.symtab`.
    Local,
    /// `STB_GLOBAL`.
    Global,
    /// `STB_WEAK`.
    Weak,
}

/// Kind of a symbol in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `STT_FUNC`.
    Func,
    /// `STT_OBJECT`.
    Object,
    /// `STT_TLS`.
    Tls,
    /// `STT_NOTYPE` or anything else.
    Notype,
}

/// A function of the target replaced by a function of the patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Func {
    /// Name of the old function in the target's symbol table.
    pub name: String,
    /// Source file (`STT_FILE`) of a local function; `None` for globals.
    pub file: Option<String>,
    /// Position among same-named local symbols of the target, 1-based;
    /// 0 means the name is unique (or global).
    pub sympos: u32,
    /// Binding of the old function.
    pub binding: Binding,
    /// Size in bytes of the old function (`st_size`), checked at load time.
    pub old_size: u64,
    /// ELF symbol of this file that holds the new function.
    pub new_symbol: String,
    /// Index into [`Meta::targets`].
    pub target: usize,
    /// Hex of the first bytes of the old function as compiled.
    pub expected: String,
    /// Hex mask for `expected`: `ff` bytes must match, `00` bytes were
    /// covered by relocations in the object and are checked against the
    /// target file on disk instead.
    pub expected_mask: String,
}

/// How to resolve one undefined ELF symbol of the patch in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ref {
    /// Undefined ELF symbol in this file (unique within the file).
    pub symbol: String,
    /// Name of the symbol in the target.
    pub name: String,
    /// Binding in the target.
    pub binding: Binding,
    /// Kind in the target.
    pub kind: Kind,
    /// Source file (`STT_FILE`) of a local symbol; `None` for globals.
    pub file: Option<String>,
    /// Position among same-named local symbols (1-based; 0 = unique/global).
    pub sympos: u32,
    /// Index into [`Meta::targets`].
    pub target: usize,
}

/// Errors of encoding and decoding the metadata section.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The section does not start with [`META_MAGIC`].
    #[error("metadata section {META_SECTION} has a bad magic")]
    BadMagic,
    /// The section's format version is not [`FORMAT_VERSION`].
    #[error(
        "patch format version {found} is not supported (this hotfix reads version {FORMAT_VERSION})"
    )]
    Version {
        /// Version found in the file.
        found: u32,
    },
    /// The JSON document is malformed.
    #[error("metadata section {META_SECTION} is malformed: {0}")]
    Json(#[from] serde_json::Error),
    /// An invariant of [`Meta`] does not hold.
    #[error("metadata is inconsistent: {0}")]
    Invalid(String),
    /// The file is not an ELF object, or has no [`META_SECTION`].
    #[error("not a hotfix patch: {0}")]
    NotPatch(String),
}

/// Reads the [`Meta`] of a patch file (the ELF part is left to the caller).
pub fn read_meta(elf: &[u8]) -> Result<Meta, FormatError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).map_err(|e| FormatError::NotPatch(e.to_string()))?;
    let section = file
        .section_by_name(META_SECTION)
        .ok_or_else(|| FormatError::NotPatch(format!("no {META_SECTION} section")))?;
    let data = section
        .data()
        .map_err(|e| FormatError::NotPatch(e.to_string()))?;
    Meta::decode(data)
}

/// Returns a copy of the ELF relocatable object `elf` carrying `meta` in its
/// [`META_SECTION`] (non-allocated `SHT_PROGBITS`, alignment 1), replacing any
/// metadata section it had. Everything else (sections, symbols, relocations)
/// is kept as it is; section and symbol indexes may be renumbered.
///
/// This is the ELF-level writer of the format: `read_meta(&attach_meta(e, m)?)`
/// gives back `m`. It is what `objcopy --add-section .hotfix.meta=FILE
/// --set-section-flags .hotfix.meta=readonly` does, without the tool.
pub fn attach_meta(elf: &[u8], meta: &Meta) -> Result<Vec<u8>, FormatError> {
    use object::build::elf::{Builder, SectionData};
    meta.validate_self()?;
    let mut builder = Builder::read(elf).map_err(|e| FormatError::NotPatch(e.to_string()))?;
    if builder.header.e_type != object::elf::ET_REL {
        return Err(FormatError::NotPatch(
            "not an ELF relocatable object (ET_REL)".into(),
        ));
    }
    for section in builder.sections.iter_mut() {
        if section.name.as_slice() == META_SECTION.as_bytes() {
            section.delete = true;
        }
    }
    let section = builder.sections.add();
    section.name = META_SECTION.as_bytes().to_vec().into();
    section.sh_type = object::elf::SHT_PROGBITS;
    section.sh_addralign = 1;
    section.data = SectionData::Data(meta.encode().into());
    let mut out = Vec::with_capacity(elf.len() + 1024);
    builder
        .write(&mut out)
        .map_err(|e| FormatError::NotPatch(e.to_string()))?;
    Ok(out)
}

impl Meta {
    /// Encodes the metadata section contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // Serialising plain structs of strings and integers cannot fail.
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.extend_from_slice(&json);
        out
    }

    /// Decodes the metadata section contents.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let rest = bytes
            .strip_prefix(META_MAGIC.as_slice())
            .ok_or(FormatError::BadMagic)?;
        let (ver, json) = rest.split_at_checked(4).ok_or(FormatError::BadMagic)?;
        let found = u32::from_le_bytes([ver[0], ver[1], ver[2], ver[3]]);
        if found != FORMAT_VERSION {
            return Err(FormatError::Version { found });
        }
        let meta: Meta = serde_json::from_slice(json)?;
        meta.validate_self()?;
        Ok(meta)
    }

    /// Checks every invariant of the format against the ELF part `elf` of
    /// the patch: those of [`Meta::validate_self`], plus: every
    /// [`Func::new_symbol`] and every name of [`Meta::new_funcs`] is a
    /// defined `STT_FUNC` symbol, every name of [`Meta::new_data`] a defined
    /// symbol; every undefined ELF symbol has exactly one [`Ref`] and every
    /// [`Ref::symbol`] is an undefined ELF symbol; `expected` covers 9 bytes
    /// when it starts with `endbr64`.
    pub fn validate(&self, elf: &[u8]) -> Result<(), FormatError> {
        use object::{Object, ObjectSymbol, SymbolKind};
        use std::collections::{HashMap, HashSet};
        self.validate_self()?;
        let bad = |m: String| Err(FormatError::Invalid(m));
        let file = object::File::parse(elf).map_err(|e| FormatError::NotPatch(e.to_string()))?;
        let mut funcs = HashSet::new();
        let mut defined = HashSet::new();
        let mut undefined = HashSet::new();
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if sym.is_undefined() {
                if !name.is_empty() {
                    undefined.insert(name);
                }
            } else if sym.is_definition() {
                defined.insert(name);
                if sym.kind() == SymbolKind::Text {
                    funcs.insert(name);
                }
            }
        }
        for f in &self.funcs {
            if !funcs.contains(f.new_symbol.as_str()) {
                return bad(format!(
                    "function {}: new symbol {} is not a defined function of the patch",
                    f.name, f.new_symbol
                ));
            }
            if f.expected.starts_with("f30f1efa") && f.expected.len() < 18 {
                return bad(format!(
                    "function {}: starts with endbr64 but expected covers {} bytes (need 9)",
                    f.name,
                    f.expected.len() / 2
                ));
            }
        }
        for n in &self.new_funcs {
            if !funcs.contains(n.as_str()) {
                return bad(format!("new function {n} is not defined in the patch"));
            }
        }
        for n in &self.new_data {
            if !defined.contains(n.as_str()) {
                return bad(format!("new datum {n} is not defined in the patch"));
            }
        }
        let mut refs: HashMap<&str, usize> = HashMap::new();
        for r in &self.refs {
            *refs.entry(r.symbol.as_str()).or_default() += 1;
            if !undefined.contains(r.symbol.as_str()) {
                return bad(format!(
                    "reference {} is not an undefined symbol of the patch",
                    r.symbol
                ));
            }
        }
        for u in &undefined {
            match refs.get(u) {
                Some(1) => {}
                Some(n) => return bad(format!("undefined symbol {u} has {n} references")),
                None => {
                    return bad(format!(
                        "undefined symbol {u} has no reference saying how to resolve it"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the invariants that do not need the ELF part.
    pub fn validate_self(&self) -> Result<(), FormatError> {
        let bad = |m: String| Err(FormatError::Invalid(m));
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return bad(format!("patch id {:?} is not [A-Za-z0-9._-]+", self.id));
        }
        for f in &self.funcs {
            if f.target >= self.targets.len() {
                return bad(format!("function {} names target {}", f.name, f.target));
            }
            let (Ok(e), Ok(m)) = (hex::decode(&f.expected), hex::decode(&f.expected_mask)) else {
                return bad(format!("function {}: expected bytes are not hex", f.name));
            };
            if e.len() != m.len() || e.len() < 5 {
                return bad(format!(
                    "function {}: expected bytes/mask lengths {}/{} (need equal, >= 5)",
                    f.name,
                    e.len(),
                    m.len()
                ));
            }
        }
        for r in &self.refs {
            if r.target >= self.targets.len() {
                return bad(format!("reference {} names target {}", r.symbol, r.target));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            id: "xsa108-fix".into(),
            description: "x2APIC MSR range".into(),
            source_hash: "00".repeat(32),
            targets: vec![Target {
                build_id: "ab".repeat(20),
                name: "minivmm".into(),
            }],
            funcs: vec![Func {
                name: "msr_read".into(),
                file: Some("vcpu.c".into()),
                sympos: 0,
                binding: Binding::Local,
                old_size: 64,
                new_symbol: "msr_read".into(),
                target: 0,
                expected: "f30f1efa4883ec08".into(),
                expected_mask: "ffffffffffffffff".into(),
            }],
            new_funcs: vec![],
            new_data: vec![],
            refs: vec![Ref {
                symbol: "counter".into(),
                name: "counter".into(),
                binding: Binding::Local,
                kind: Kind::Object,
                file: Some("vcpu.c".into()),
                sympos: 2,
                target: 0,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Meta::decode(&m.encode()).ok(), Some(m));
    }

    #[test]
    fn refuses_other_version_and_magic() {
        let mut b = sample().encode();
        b[8] = 9;
        assert!(matches!(
            Meta::decode(&b),
            Err(FormatError::Version { found: 9 })
        ));
        b[0] = b'X';
        assert!(matches!(Meta::decode(&b), Err(FormatError::BadMagic)));
        assert!(matches!(Meta::decode(&[]), Err(FormatError::BadMagic)));
    }

    #[test]
    fn refuses_inconsistent() {
        let mut m = sample();
        m.funcs[0].target = 3;
        assert!(matches!(
            Meta::decode(&m.encode()),
            Err(FormatError::Invalid(_))
        ));
    }
}
