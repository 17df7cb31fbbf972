//! Pairing the functions and data objects of the original object with those
//! of the patched object.
//!
//! Model: an *entity* is a defined, named `STT_FUNC`/`STT_OBJECT`/`STT_TLS`
//! symbol. Entities pair by name after [`normalize`] (which drops the numbers
//! of the compiler's `.constprop.N`, `.isra.N`, `.part.N`, `.lto_priv.N`
//! suffixes); several entities with the same normalized name pair in
//! symbol-table order. Static locals (`counter.3`, `CSWTCH.12`,
//! `__func__.0`: a C identifier, a dot and a number) pair through the
//! functions that reference them: `counter.3` pairs with the `counter.N` of
//! the patched object whose referring functions overlap most with the
//! (already paired) referring functions of `counter.3`.
//!
//! *Special* statics ([`is_special_static`]: dynamic-debug and printk-index
//! descriptors, `__warned`, `__already_done`, `__key`, `__func__`, `_rs`,
//! `CSWTCH`...) are never paired: the compiler creates them per use site
//! (a `pr_debug` moved to another line gets another descriptor), so a
//! pairing would be a guess. They compare by content through their users
//! ([`crate::compare`]) and travel fresh with any carried code that uses
//! them ([`crate::include`]).
//!
//! Invariants: the pairing is one-to-one; only entities of the same class
//! (function with function, data with data) pair; undefined symbols are not
//! paired (they compare by name).

use crate::Error;
use crate::read::{ObjectFile, Target};
use std::collections::{BTreeSet, HashMap};

/// Compiler suffixes whose numbers are ignored.
const NUMBERED: [&str; 4] = ["constprop", "isra", "part", "lto_priv"];

/// `foo.constprop.3.isra.0` → `foo.constprop.isra`; other names unchanged.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut parts = name.split('.');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut skip_number = false;
    for p in parts {
        if skip_number && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            skip_number = false;
            continue;
        }
        skip_number = NUMBERED.contains(&p);
        out.push('.');
        out.push_str(p);
    }
    out
}

/// The base of a static local's name (`counter.3` → `counter`), or `None`
/// when `name` is not of that shape.
pub fn static_local_base(name: &str) -> Option<&str> {
    let (base, num) = name.rsplit_once('.')?;
    let ident = !base.is_empty()
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !base.as_bytes()[0].is_ascii_digit();
    (ident && !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// Base names of the special statics (see the module doc), matched on the
/// name without its `.N` suffix.
const SPECIAL: [&str; 12] = [
    "descriptor",
    "__fmt",
    "__warned",
    "__already_done",
    "__key",
    "__func__",
    "__FUNCTION__",
    "__PRETTY_FUNCTION__",
    "_rs",
    "CSWTCH",
    "_entry",
    "_entry_ptr",
];

/// Whether `name` (a local data object) is a special static: one of
/// [`SPECIAL`], or a dynamic-debug descriptor `__UNIQUE_ID_ddebugN`, with
/// or without the compiler's `.N` suffix.
pub fn is_special_static(name: &str) -> bool {
    let base = static_local_base(name).unwrap_or(name);
    base.starts_with("__UNIQUE_ID_ddebug") || SPECIAL.contains(&base)
}

/// Whether a special static is debug metadata whose raw bytes (line
/// number, flags) may differ without a functional change: dynamic-debug
/// and printk-index descriptors. Their relocations (format, function and
/// file names) still count.
pub fn is_debug_descriptor(name: &str) -> bool {
    let base = static_local_base(name).unwrap_or(name);
    base.starts_with("__UNIQUE_ID_ddebug") || matches!(base, "descriptor" | "_entry" | "__fmt")
}

/// The kind of a special static, for comparing two of them: the base name
/// with dynamic-debug counters dropped (`__UNIQUE_ID_ddebug123.4` →
/// `__UNIQUE_ID_ddebug`).
pub fn special_kind(name: &str) -> &str {
    let base = static_local_base(name).unwrap_or(name);
    if base.starts_with("__UNIQUE_ID_ddebug") {
        "__UNIQUE_ID_ddebug"
    } else {
        base
    }
}

/// The parent of a compiler-split child function: `foo.cold` → `foo`,
/// `foo.part.0` → `foo` (also `foo.isra.0.cold` → `foo.isra.0`).
pub fn parent_of(name: &str) -> Option<&str> {
    if let Some(p) = name.strip_suffix(".cold") {
        return Some(p);
    }
    let (head, num) = name.rsplit_once('.')?;
    if !num.bytes().all(|b| b.is_ascii_digit()) || num.is_empty() {
        return None;
    }
    head.strip_suffix(".part")
}

/// Whether symbol `s` is a special static: local data named like one.
pub fn is_special(s: &crate::read::Symbol) -> bool {
    s.is_data() && s.bind == crate::read::Bind::Local && is_special_static(&s.name)
}

/// The pairing of the entities of two objects.
#[derive(Debug, Clone, Default)]
pub struct Correlation {
    /// Patched symbol index → original symbol index.
    pub p2o: HashMap<usize, usize>,
    /// Original symbol index → patched symbol index.
    pub o2p: HashMap<usize, usize>,
}

impl Correlation {
    /// The original partner of patched entity `p`.
    pub fn orig_of(&self, p: usize) -> Option<usize> {
        self.p2o.get(&p).copied()
    }
    /// The patched partner of original entity `o`.
    pub fn patched_of(&self, o: usize) -> Option<usize> {
        self.o2p.get(&o).copied()
    }
    fn pair(&mut self, o: usize, p: usize) {
        self.o2p.insert(o, p);
        self.p2o.insert(p, o);
    }
}

/// Entities referencing each entity: `referrers[x]` = symbol indices of the
/// entities whose relocations point at entity `x`.
pub fn referrers(obj: &ObjectFile) -> HashMap<usize, BTreeSet<usize>> {
    let mut out: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    for s in obj.symbols.iter().filter(|s| s.is_defined_entity()) {
        for r in obj.symbol_relocs(s) {
            if let Target::Entity { sym, .. } = obj.resolve(r)
                && sym != s.index
            {
                out.entry(sym).or_default().insert(s.index);
            }
        }
    }
    out
}

/// Pairs the entities of `orig` and `patched`.
///
/// Fails with [`Error::DifferentSources`] when the objects name different
/// source files (`STT_FILE`) or have no function in common.
pub fn correlate(orig: &ObjectFile, patched: &ObjectFile) -> Result<Correlation, Error> {
    if let (Some(a), Some(b)) = (&orig.source_file, &patched.source_file)
        && a != b
    {
        return Err(Error::DifferentSources {
            orig: orig.name.clone(),
            patched: patched.name.clone(),
            reason: format!("source file {a:?} vs {b:?}"),
        });
    }
    let mut c = Correlation::default();
    let is_static_local = |o: &ObjectFile, i: usize| {
        o.sym(i).is_some_and(|s| {
            s.is_data()
                && s.bind == crate::read::Bind::Local
                && static_local_base(&s.name).is_some()
        })
    };
    let special = |o: &ObjectFile, i: usize| o.sym(i).is_some_and(is_special);
    // Pass 1: everything except static locals, by normalized name.
    let mut by_key: HashMap<(bool, String), Vec<usize>> = HashMap::new();
    for s in orig.symbols.iter().filter(|s| s.is_defined_entity()) {
        if !is_static_local(orig, s.index) && !special(orig, s.index) {
            by_key
                .entry((s.is_func(), normalize(&s.name)))
                .or_default()
                .push(s.index);
        }
    }
    let mut used: HashMap<(bool, String), usize> = HashMap::new();
    for s in patched.symbols.iter().filter(|s| s.is_defined_entity()) {
        if is_static_local(patched, s.index) || special(patched, s.index) {
            continue;
        }
        let key = (s.is_func(), normalize(&s.name));
        let n = used.entry(key.clone()).or_default();
        if let Some(&o) = by_key.get(&key).and_then(|v| v.get(*n)) {
            c.pair(o, s.index);
            *n += 1;
        }
    }
    let o_funcs = orig
        .symbols
        .iter()
        .filter(|s| s.is_defined_entity() && s.is_func())
        .count();
    let p_funcs = patched
        .symbols
        .iter()
        .filter(|s| s.is_defined_entity() && s.is_func())
        .count();
    let paired_funcs = c
        .o2p
        .keys()
        .filter(|&&o| orig.sym(o).is_some_and(|s| s.is_func()))
        .count();
    if o_funcs > 0 && p_funcs > 0 && paired_funcs == 0 {
        return Err(Error::DifferentSources {
            orig: orig.name.clone(),
            patched: patched.name.clone(),
            reason: "no function in common".into(),
        });
    }
    // Pass 2: static locals, through their referring entities.
    let o_refs = referrers(orig);
    let p_refs = referrers(patched);
    let mut p_by_base: HashMap<&str, Vec<usize>> = HashMap::new();
    for s in patched.symbols.iter().filter(|s| s.is_defined_entity()) {
        if is_static_local(patched, s.index)
            && !special(patched, s.index)
            && let Some(b) = static_local_base(&s.name)
        {
            p_by_base.entry(b).or_default().push(s.index);
        }
    }
    let mut o_by_base: HashMap<&str, usize> = HashMap::new();
    for s in orig.symbols.iter().filter(|s| s.is_defined_entity()) {
        if is_static_local(orig, s.index)
            && let Some(b) = static_local_base(&s.name)
        {
            *o_by_base.entry(b).or_default() += 1;
        }
    }
    // Patched statics by (base name, original index of a referrer).
    let mut by_referrer: HashMap<(&str, usize), Vec<usize>> = HashMap::new();
    for (&base, cands) in &p_by_base {
        for &p in cands {
            for &r in p_refs.get(&p).into_iter().flatten() {
                if let Some(o) = c.orig_of(r) {
                    by_referrer.entry((base, o)).or_default().push(p);
                }
            }
        }
    }
    let empty = BTreeSet::new();
    for s in orig.symbols.iter().filter(|s| s.is_defined_entity()) {
        if !is_static_local(orig, s.index) || special(orig, s.index) {
            continue;
        }
        let Some(base) = static_local_base(&s.name) else {
            continue;
        };
        let mine = o_refs.get(&s.index).unwrap_or(&empty);
        // Score candidates sharing a referrer; ties go to the first in
        // symbol-table order.
        let mut scores: HashMap<usize, usize> = HashMap::new();
        for &r in mine {
            for &p in by_referrer.get(&(base, r)).into_iter().flatten() {
                if !c.p2o.contains_key(&p) {
                    *scores.entry(p).or_default() += 1;
                }
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (&p, &score) in &scores {
            if best.is_none_or(|(bp, bs)| score > bs || (score == bs && p < bp)) {
                best = Some((p, score));
            }
        }
        if best.is_none()
            && mine.is_empty()
            && o_by_base.get(base) == Some(&1)
            && let Some(cands) = p_by_base.get(base)
            && let [p] = cands.as_slice()
            && !c.p2o.contains_key(p)
            && p_refs.get(p).is_none_or(|r| r.is_empty())
        {
            best = Some((*p, 0));
        }
        if let Some((p, _)) = best {
            c.pair(s.index, p);
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_suffix_numbers() {
        assert_eq!(normalize("foo.constprop.3"), "foo.constprop");
        assert_eq!(normalize("foo.isra.0.cold"), "foo.isra.cold");
        assert_eq!(normalize("foo.part.12"), "foo.part");
        assert_eq!(normalize("foo.lto_priv.0"), "foo.lto_priv");
        assert_eq!(normalize("counter.3"), "counter.3");
        assert_eq!(normalize("plain"), "plain");
    }

    #[test]
    fn static_local_names() {
        assert_eq!(static_local_base("counter.3"), Some("counter"));
        assert_eq!(static_local_base("CSWTCH.12"), Some("CSWTCH"));
        assert_eq!(static_local_base("foo.part.0"), None);
        assert_eq!(static_local_base("counter"), None);
        assert_eq!(static_local_base(".LC0"), None);
    }

    #[test]
    fn special_statics() {
        for n in [
            "__UNIQUE_ID_ddebug412.3",
            "descriptor.7",
            "__fmt.1",
            "__warned.12",
            "__already_done.4",
            "__key.0",
            "__func__.2",
            "_rs.9",
            "CSWTCH.33",
            "_entry.5",
        ] {
            assert!(is_special_static(n), "{n}");
        }
        for n in ["counter.3", "key", "__keys.1", "rs.2", "foo"] {
            assert!(!is_special_static(n), "{n}");
        }
        assert_eq!(
            special_kind("__UNIQUE_ID_ddebug412.3"),
            "__UNIQUE_ID_ddebug"
        );
        assert_eq!(special_kind("__warned.12"), "__warned");
        assert!(is_debug_descriptor("__UNIQUE_ID_ddebug1.0"));
        assert!(!is_debug_descriptor("CSWTCH.1"));
    }

    #[test]
    fn parents() {
        assert_eq!(parent_of("foo.cold"), Some("foo"));
        assert_eq!(parent_of("foo.part.0"), Some("foo"));
        assert_eq!(parent_of("foo.isra.0.cold"), Some("foo.isra.0"));
        assert_eq!(parent_of("foo.constprop.0"), None);
        assert_eq!(parent_of("foo"), None);
    }
}
