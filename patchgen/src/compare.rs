//! Deciding what changed between two correlated objects.
//!
//! Model: two paired entities are *the same* when they have the same size,
//! the same bytes outside relocated places, and the same relocations at the
//! same offsets with the same type and the same *target*: the paired entity
//! (or same-named undefined symbol) with the same addend relative to it, the
//! same string content for references into mergeable string sections, and a
//! recursively equal section for anonymous data (jump tables, constants).
//! Raw section offsets and label names never matter.
//!
//! A function whose only differences are immediates of `mov <argument
//! register>, imm32` instructions feeding the next call (a `__LINE__`
//! passed to a logging or assert function) is *line-only* and not changed;
//! `docs/diff-rules.md` states the exact rule.
//!
//! [`analyze`] then applies the policy: which functions are changed or new
//! (with their `.cold`/`.part` relatives), which data is new, which changed
//! read-only locals are copied, and every [`Refusal`].
//!
//! Invariants: [`analyze`] never reads a running target; its output indices
//! are symbol indices of the patched object unless named `orig`.

use crate::Error;
use crate::correlate::{self, Correlation};
use crate::error::{Refusal, RefusalKind};
use crate::read::{Bind, ObjectFile, Reloc, Target};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Outcome of comparing two paired entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Functionally identical.
    Same,
    /// Identical except for `__LINE__` immediates (not a change).
    LineOnly,
    /// Changed, with a human reason.
    Changed(String),
}

/// The comparison context: both objects and their pairing.
#[derive(Debug)]
pub struct Comparer<'a> {
    /// The original object.
    pub orig: &'a ObjectFile,
    /// The patched object.
    pub patched: &'a ObjectFile,
    /// Their pairing.
    pub corr: &'a Correlation,
    anon_memo: HashMap<(usize, usize), bool>,
    special_memo: HashMap<(usize, usize), bool>,
}

/// Human description of a relocation target in `obj`.
pub fn describe(obj: &ObjectFile, t: Target) -> String {
    let name = |i: usize| obj.sym(i).map_or("?", |s| s.name.as_str()).to_owned();
    let plus = |n: i64| match n {
        0 => String::new(),
        n if n > 0 => format!("+{n:#x}"),
        n => format!("-{:#x}", n.unsigned_abs()),
    };
    match t {
        Target::Entity { sym, offset } => format!("{}{}", name(sym), plus(offset)),
        Target::Undefined { sym, addend } | Target::Absolute { sym, addend } => {
            format!("{}{}", name(sym), plus(addend))
        }
        Target::Str {
            section,
            start,
            end,
            rel,
        } => {
            let s = obj
                .sec(section)
                .and_then(|s| s.bytes(start, end.saturating_sub(start)))
                .unwrap_or(&[]);
            let s = s.strip_suffix(&[0]).unwrap_or(s);
            format!("{:?}{}", String::from_utf8_lossy(s), plus(rel))
        }
        Target::Anon { section, offset } => format!(
            "{}{}",
            obj.sec(section).map_or("?", |s| s.name.as_str()),
            plus(offset)
        ),
    }
}

impl<'a> Comparer<'a> {
    /// A comparer over two objects and their pairing.
    pub fn new(orig: &'a ObjectFile, patched: &'a ObjectFile, corr: &'a Correlation) -> Self {
        Comparer {
            orig,
            patched,
            corr,
            anon_memo: HashMap::new(),
            special_memo: HashMap::new(),
        }
    }

    /// Whether relocation targets `o` (orig) and `p` (patched) are the same.
    pub fn same_target(&mut self, o: Target, p: Target) -> bool {
        let oname = |i: usize| self.orig.sym(i).map(|s| s.name.as_str());
        let pname = |i: usize| self.patched.sym(i).map(|s| s.name.as_str());
        match (o, p) {
            (Target::Entity { sym: a, offset: x }, Target::Entity { sym: b, offset: y }) => {
                x == y && (self.corr.orig_of(b) == Some(a) || self.same_special(a, b))
            }
            (Target::Undefined { sym: a, addend: x }, Target::Undefined { sym: b, addend: y })
            | (Target::Absolute { sym: a, addend: x }, Target::Absolute { sym: b, addend: y }) => {
                x == y && oname(a) == pname(b)
            }
            (
                Target::Str {
                    section: sa,
                    start: a0,
                    end: a1,
                    rel: x,
                },
                Target::Str {
                    section: sb,
                    start: b0,
                    end: b1,
                    rel: y,
                },
            ) => {
                let a = self.orig.sec(sa).and_then(|s| s.bytes(a0, a1 - a0));
                let b = self.patched.sec(sb).and_then(|s| s.bytes(b0, b1 - b0));
                x == y && a.is_some() && a == b
            }
            (
                Target::Anon {
                    section: a,
                    offset: x,
                },
                Target::Anon {
                    section: b,
                    offset: y,
                },
            ) => x == y && self.same_anon(a, b),
            _ => false,
        }
    }

    /// Two special statics (never paired, see [`correlate`]) are the same
    /// when they are of the same kind and have the same size, section kind,
    /// relocation targets and bytes; for debug descriptors the bytes (line
    /// number, flags) may differ.
    fn same_special(&mut self, a: usize, b: usize) -> bool {
        let (Some(sa), Some(sb)) = (self.orig.sym(a), self.patched.sym(b)) else {
            return false;
        };
        if !correlate::is_special(sa)
            || !correlate::is_special(sb)
            || correlate::special_kind(&sa.name) != correlate::special_kind(&sb.name)
        {
            return false;
        }
        if let Some(&v) = self.special_memo.get(&(a, b)) {
            return v;
        }
        self.special_memo.insert((a, b), true);
        let lenient = correlate::is_debug_descriptor(&sb.name);
        let (Some(os), Some(ps)) = (sa.section, sb.section) else {
            return false;
        };
        let kind = |o: &ObjectFile, i: usize| o.sec(i).map(|s| (s.sh_type, s.flags & 0x7));
        let v = sa.size == sb.size
            && kind(self.orig, os) == kind(self.patched, ps)
            && match self.diff_ranges(os, sa.value, sa.size, ps, sb.value, sb.size) {
                RangeDiff::Equal => true,
                RangeDiff::Bytes(_) => lenient,
                RangeDiff::Reloc(_) => false,
            };
        self.special_memo.insert((a, b), v);
        v
    }

    fn same_anon(&mut self, a: usize, b: usize) -> bool {
        if let Some(&v) = self.anon_memo.get(&(a, b)) {
            return v;
        }
        // Co-inductive: a cycle through the same pair is assumed equal.
        self.anon_memo.insert((a, b), true);
        let (Some(sa), Some(sb)) = (self.orig.sec(a), self.patched.sec(b)) else {
            return false;
        };
        let v = sa.size == sb.size
            && sa.flags == sb.flags
            && sa.sh_type == sb.sh_type
            && matches!(
                self.diff_ranges(a, 0, sa.size, b, 0, sb.size),
                RangeDiff::Equal
            );
        self.anon_memo.insert((a, b), v);
        v
    }

    /// Compares `[o_start, o_start+len)` of orig section `os` with the same
    /// range of patched section `ps`, relocations included.
    fn diff_ranges(
        &mut self,
        os: usize,
        o_start: u64,
        o_len: u64,
        ps: usize,
        p_start: u64,
        p_len: u64,
    ) -> RangeDiff {
        let (Some(osec), Some(psec)) = (self.orig.sec(os), self.patched.sec(ps)) else {
            return RangeDiff::Reloc("missing section".into());
        };
        if o_len != p_len {
            return RangeDiff::Reloc(format!("size {o_len:#x} -> {p_len:#x}"));
        }
        let orel: Vec<Reloc> = osec
            .relocs_in(o_start, o_start.saturating_add(o_len))
            .to_vec();
        let prel: Vec<Reloc> = psec
            .relocs_in(p_start, p_start.saturating_add(p_len))
            .to_vec();
        for (i, (ro, rp)) in orel.iter().zip(prel.iter()).enumerate() {
            let (oo, po) = (ro.offset - o_start, rp.offset - p_start);
            let (to, tp) = (self.orig.resolve(ro), self.patched.resolve(rp));
            if oo != po || ro.r_type != rp.r_type || !self.same_target(to, tp) {
                return RangeDiff::Reloc(format!(
                    "reference #{i} at +{oo:#x}: {} -> {} at +{po:#x}",
                    describe(self.orig, to),
                    describe(self.patched, tp)
                ));
            }
        }
        if orel.len() != prel.len() {
            return RangeDiff::Reloc(format!(
                "{} references -> {} references",
                orel.len(),
                prel.len()
            ));
        }
        let (Some(ob), Some(pb)) = (
            osec.bytes(o_start, o_len)
                .or(osec.data.is_empty().then_some(&[][..])),
            psec.bytes(p_start, p_len)
                .or(psec.data.is_empty().then_some(&[][..])),
        ) else {
            return RangeDiff::Reloc("contents out of bounds".into());
        };
        if ob.len() != pb.len() {
            return RangeDiff::Reloc("one side has no contents".into());
        }
        let mut masked = vec![false; ob.len()];
        for r in &orel {
            let s = (r.offset - o_start) as usize;
            for m in masked.iter_mut().skip(s).take(r.width() as usize) {
                *m = true;
            }
        }
        let diffs: Vec<usize> = (0..ob.len())
            .filter(|&i| !masked[i] && ob[i] != pb[i])
            .collect();
        if diffs.is_empty() {
            RangeDiff::Equal
        } else {
            RangeDiff::Bytes(diffs)
        }
    }

    /// Compares orig entity `o` with patched entity `p`.
    pub fn compare(&mut self, o: usize, p: usize) -> Verdict {
        let (Some(os), Some(ps)) = (self.orig.sym(o), self.patched.sym(p)) else {
            return Verdict::Changed("missing symbol".into());
        };
        let (Some(osec), Some(psec)) = (os.section, ps.section) else {
            return Verdict::Changed("missing section".into());
        };
        if os.size != ps.size {
            return Verdict::Changed(format!("size {:#x} -> {:#x}", os.size, ps.size));
        }
        let (ot, pt) = (
            self.orig.sec(osec).map(|s| (s.sh_type, s.flags & 0x7)),
            self.patched.sec(psec).map(|s| (s.sh_type, s.flags & 0x7)),
        );
        if ot != pt {
            return Verdict::Changed("section kind changed".into());
        }
        match self.diff_ranges(osec, os.value, os.size, psec, ps.value, ps.size) {
            RangeDiff::Equal => Verdict::Same,
            RangeDiff::Reloc(r) => Verdict::Changed(r),
            RangeDiff::Bytes(d) => {
                let first = d.first().copied().unwrap_or(0);
                if ps.is_func() {
                    let ob = self.orig.symbol_bytes(os);
                    let pb = self.patched.symbol_bytes(ps);
                    let callees: HashMap<u64, String> = self
                        .patched
                        .symbol_relocs(ps)
                        .map(|r| {
                            let name = match self.patched.resolve(r) {
                                Target::Entity { sym, .. }
                                | Target::Undefined { sym, .. }
                                | Target::Absolute { sym, .. } => self
                                    .patched
                                    .sym(sym)
                                    .map_or(String::new(), |s| s.name.clone()),
                                _ => String::new(),
                            };
                            (r.offset - ps.value, name)
                        })
                        .collect();
                    if line_only(ob, pb, &callees) {
                        return Verdict::LineOnly;
                    }
                    Verdict::Changed(format!("instructions differ at +{first:#x}"))
                } else {
                    Verdict::Changed(format!("contents differ at +{first:#x}"))
                }
            }
        }
    }
}

enum RangeDiff {
    Equal,
    Reloc(String),
    Bytes(Vec<usize>),
}

/// Whether `name` looks like a logging, tracing or assertion function (the
/// functions a `__LINE__` is passed to).
pub fn is_logging_callee(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "log", "trace", "print", "warn", "assert", "debug", "panic", "bug", "msg",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// The `__LINE__` rule: `old` and `new` decode to the same instruction
/// sequence, and every instruction that differs is `mov r32/r64, imm`
/// into an argument register (rdi, rsi, rdx, rcx, r8, r9) with both
/// immediates in `1..=999_999`, followed — before any other control
/// transfer and before the register is written again — by a relocated
/// `call` to a logging/assertion function ([`is_logging_callee`]), with at
/// most one such differing immediate per call. `callees` maps the offsets
/// of relocated places in `new` to their target symbol names.
pub fn line_only(old: &[u8], new: &[u8], callees: &HashMap<u64, String>) -> bool {
    use iced_x86::{
        Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess,
        OpKind, Register,
    };
    if old.len() != new.len() {
        return false;
    }
    let decode = |b: &[u8]| {
        let mut d = Decoder::with_ip(64, b, 0, DecoderOptions::NONE);
        let mut v = Vec::new();
        while d.can_decode() {
            let i = d.decode();
            if i.code() == Code::INVALID {
                return None;
            }
            v.push(i);
        }
        Some(v)
    };
    let (Some(a), Some(b)) = (decode(old), decode(new)) else {
        return false;
    };
    if a.len() != b.len() {
        return false;
    }
    let args = [
        Register::RDI,
        Register::RSI,
        Register::RDX,
        Register::RCX,
        Register::R8,
        Register::R9,
    ];
    let mut info = InstructionInfoFactory::new();
    let mut any = false;
    let mut calls_fed: HashSet<u64> = HashSet::new();
    for (k, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        let (s, l) = (x.ip() as usize, x.len());
        if y.ip() != x.ip() || y.len() != l {
            return false;
        }
        if old.get(s..s + l) == new.get(s..s + l) {
            continue;
        }
        let imm_ok = |i: &iced_x86::Instruction| {
            matches!(
                i.op1_kind(),
                OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64
            ) && (1..=999_999).contains(&i.immediate(1))
        };
        if x.code() != y.code()
            || y.mnemonic() != Mnemonic::Mov
            || y.op_count() != 2
            || y.op0_kind() != OpKind::Register
            || x.op0_register() != y.op0_register()
            || !args.contains(&y.op0_register().full_register())
            || !imm_ok(x)
            || !imm_ok(y)
        {
            return false;
        }
        let reg = y.op0_register().full_register();
        let mut fed_call = false;
        for z in &b[k + 1..] {
            match z.flow_control() {
                FlowControl::Call => {
                    let (cs, ce) = (z.ip(), z.ip() + z.len() as u64);
                    fed_call = callees
                        .iter()
                        .any(|(&r, n)| r >= cs && r < ce && is_logging_callee(n))
                        && calls_fed.insert(cs);
                    break;
                }
                FlowControl::Next => {}
                _ => break,
            }
            let written = info.info(z).used_registers().iter().any(|u| {
                u.register().full_register() == reg
                    && matches!(
                        u.access(),
                        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite
                    )
            });
            if written {
                break;
            }
        }
        if !fed_call {
            return false;
        }
        any = true;
    }
    any
}

/// One function of the patch that has a counterpart in the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Patched symbol index.
    pub patched: usize,
    /// Original symbol index.
    pub orig: usize,
    /// Why it is in the patch.
    pub reason: String,
    /// Whether the original gets a jump to it (false for `.cold` children,
    /// which are entered only from their parent).
    pub replace: bool,
}

/// Everything [`analyze`] decided.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// The pairing.
    pub corr: Correlation,
    /// Functions changed (with an original), patched symtab order.
    pub changed: Vec<Change>,
    /// Functions without an original (patched symbol indices).
    pub new_funcs: Vec<usize>,
    /// Data objects without an original (patched symbol indices).
    pub new_data: Vec<usize>,
    /// Changed read-only static locals (`CSWTCH.N`, `static const` in a
    /// function) copied into the patch for the functions using them.
    pub copied_data: Vec<usize>,
    /// Functions that differ only in `__LINE__` immediates (patched indices).
    pub line_only: Vec<usize>,
    /// Everything that prevents a safe patch.
    pub refusals: Vec<Refusal>,
}

impl Analysis {
    /// Whether anything is to be patched.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.new_funcs.is_empty()
            && self.new_data.is_empty()
            && self.copied_data.is_empty()
    }
}

/// Functions referenced from constructor/destructor tables.
fn constructors(obj: &ObjectFile) -> HashSet<usize> {
    let mut out = HashSet::new();
    for sec in obj.sections.iter().filter(|s| s.is_init_table()) {
        for r in &sec.relocs {
            if let Target::Entity { sym, .. } = obj.resolve(r) {
                out.insert(sym);
            }
        }
    }
    out
}

/// Descriptions of the init-table entries of `obj`, for comparison.
fn init_tables(obj: &ObjectFile) -> Vec<String> {
    let mut v = Vec::new();
    for sec in obj.sections.iter().filter(|s| s.is_init_table()) {
        for r in &sec.relocs {
            v.push(format!("{} {}", sec.name, describe(obj, obj.resolve(r))));
        }
    }
    v.sort();
    v
}

/// Static locals (by symbol index) that entity `sym` references.
fn static_locals_used(obj: &ObjectFile, sym: usize) -> BTreeSet<usize> {
    let Some(s) = obj.sym(sym) else {
        return BTreeSet::new();
    };
    obj.symbol_relocs(s)
        .filter_map(|r| match obj.resolve(r) {
            Target::Entity { sym, .. } => Some(sym),
            _ => None,
        })
        .filter(|&t| {
            obj.sym(t).is_some_and(|t| {
                t.is_data()
                    && t.bind == Bind::Local
                    && correlate::static_local_base(&t.name).is_some()
                    && !correlate::is_special(t)
            })
        })
        .collect()
}

/// Compares `orig` with `patched` and applies the patch policy.
pub fn analyze(orig: &ObjectFile, patched: &ObjectFile) -> Result<Analysis, Error> {
    let corr = correlate::correlate(orig, patched)?;
    let mut cmp = Comparer::new(orig, patched, &corr);
    let mut an = Analysis::default();
    let mut changed: HashMap<usize, (usize, String)> = HashMap::new();
    let mut new_funcs: BTreeSet<usize> = BTreeSet::new();
    let pfuncs: Vec<usize> = patched
        .symbols
        .iter()
        .filter(|s| s.is_defined_entity() && s.is_func())
        .map(|s| s.index)
        .collect();
    for &p in &pfuncs {
        match corr.orig_of(p) {
            None => {
                new_funcs.insert(p);
            }
            Some(o) => match cmp.compare(o, p) {
                Verdict::Same => {}
                Verdict::LineOnly => an.line_only.push(p),
                Verdict::Changed(r) => {
                    changed.insert(p, (o, r));
                }
            },
        }
    }
    // Data.
    let ro_copy_reason = |name: &str| format!("uses changed read-only data {name}");
    let p_refs = correlate::referrers(patched);
    for s in patched
        .symbols
        .iter()
        .filter(|s| s.is_defined_entity() && s.is_data())
    {
        let Some(o) = corr.orig_of(s.index) else {
            if correlate::is_special(s) {
                continue; // carried fresh only by code that uses it
            }
            if let Some(sec) = s.section.and_then(|i| patched.sec(i))
                && is_percpu(&sec.name)
            {
                an.refusals.push(Refusal {
                    kind: RefusalKind::NewPerCpuData,
                    symbol: s.name.clone(),
                    reason: format!(
                        "new per-CPU variable in {}: per-CPU areas are laid out when the kernel or module loads; a patch cannot add one (use a global, or allocate with alloc_percpu)",
                        sec.name
                    ),
                });
                continue;
            }
            an.new_data.push(s.index);
            continue;
        };
        let Verdict::Changed(reason) = cmp.compare(o, s.index) else {
            continue;
        };
        let writable = s
            .section
            .and_then(|i| patched.sec(i))
            .is_some_and(|sec| sec.is_writable());
        let users = p_refs.get(&s.index).cloned().unwrap_or_default();
        let only_funcs = users
            .iter()
            .all(|&u| patched.sym(u).is_some_and(|u| u.is_func()));
        let oname = orig.sym(o).map_or(s.name.clone(), |x| x.name.clone());
        if writable {
            an.refusals.push(Refusal {
                kind: RefusalKind::DataChanged,
                symbol: oname,
                reason: format!(
                    "initializer or size of existing data changed ({reason}); the running copy would keep its old value"
                ),
            });
        } else if s.bind == Bind::Local
            && correlate::static_local_base(&s.name).is_some()
            && only_funcs
            && !users.is_empty()
        {
            an.copied_data.push(s.index);
            for u in users {
                if let Some(uo) = corr.orig_of(u) {
                    changed
                        .entry(u)
                        .or_insert_with(|| (uo, ro_copy_reason(&s.name)));
                }
            }
        } else {
            an.refusals.push(Refusal {
                kind: RefusalKind::SectionNotIncluded,
                symbol: oname,
                reason: format!(
                    "read-only object changed ({reason}) but would not be included: existing code keeps using the old copy"
                ),
            });
        }
    }
    // Groups: a parent and its .cold/.part children go together.
    let by_name: HashMap<&str, usize> = pfuncs
        .iter()
        .filter_map(|&p| patched.sym(p).map(|s| (s.name.as_str(), p)))
        .collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for &p in &pfuncs {
        let mut cur = p;
        while let Some(parent) = patched
            .sym(cur)
            .and_then(|s| correlate::parent_of(&s.name))
            .and_then(|n| by_name.get(n).copied())
        {
            cur = parent;
        }
        groups.entry(cur).or_default().push(p);
    }
    for (root, members) in &groups {
        let hit = members
            .iter()
            .find(|m| changed.contains_key(m) || (new_funcs.contains(m) && *m != root))
            .copied();
        let Some(hit) = hit else { continue };
        let hit_name = patched.sym(hit).map_or("?", |s| s.name.as_str()).to_owned();
        for &m in members {
            if m == hit || changed.contains_key(&m) || new_funcs.contains(&m) {
                continue;
            }
            if let Some(o) = corr.orig_of(m) {
                changed.insert(m, (o, format!("same group as changed {hit_name}")));
            }
        }
    }
    // Constructors.
    let (octors, pctors) = (constructors(orig), constructors(patched));
    if init_tables(orig).len() != init_tables(patched).len()
        || pctors
            .iter()
            .any(|p| corr.orig_of(*p).is_none_or(|o| !octors.contains(&o)))
    {
        an.refusals.push(Refusal {
            kind: RefusalKind::InitCode,
            symbol: ".init_array".into(),
            reason: "constructor table changed; constructors already ran in the target".into(),
        });
    }
    let mut order: Vec<usize> = changed.keys().copied().collect();
    order.sort_unstable();
    for p in order {
        let Some((o, reason)) = changed.get(&p).cloned() else {
            continue;
        };
        let (Some(os), Some(ps)) = (orig.sym(o), patched.sym(p)) else {
            continue;
        };
        if let Some(sec) = os.section.and_then(|i| orig.sec(i))
            && is_once_only(&sec.name)
        {
            an.refusals.push(Refusal {
                kind: RefusalKind::InitCode,
                symbol: os.name.clone(),
                reason: format!(
                    "function in {} changed: __init/__exit code runs only when the kernel or module loads or unloads, a live patch cannot change it",
                    sec.name
                ),
            });
            continue;
        }
        if pctors.contains(&p) || octors.contains(&o) {
            an.refusals.push(Refusal {
                kind: RefusalKind::InitCode,
                symbol: os.name.clone(),
                reason: "constructor/init code changed; it already ran in the target and a patch cannot take effect".into(),
            });
            continue;
        }
        let used_now = static_locals_used(patched, p);
        for sl in static_locals_used(orig, o) {
            let still = corr.patched_of(sl).is_some_and(|q| used_now.contains(&q));
            if !still {
                an.refusals.push(Refusal {
                    kind: RefusalKind::StaticLocalRemoved,
                    symbol: os.name.clone(),
                    reason: format!(
                        "no longer references static local {}; its state cannot be carried over",
                        orig.sym(sl).map_or("?", |s| s.name.as_str())
                    ),
                });
            }
        }
        let is_cold = ps.name.ends_with(".cold");
        let replace = !is_cold;
        if replace {
            let need = if orig.symbol_bytes(os).starts_with(&ENDBR64) {
                9
            } else {
                5
            };
            if os.size < need {
                an.refusals.push(Refusal {
                    kind: RefusalKind::TooShort,
                    symbol: os.name.clone(),
                    reason: format!(
                        "function is {} bytes, shorter than the {need}-byte jump that would replace it",
                        os.size
                    ),
                });
            }
        }
        an.changed.push(Change {
            patched: p,
            orig: o,
            reason,
            replace,
        });
    }
    an.new_funcs = new_funcs.into_iter().collect();
    an.corr = corr;
    Ok(an)
}

/// Sections of code run only once, at kernel or module load or unload
/// (`__init`, `__exit`, their `.init.*`/`.exit.*` relatives).
pub fn is_once_only(section: &str) -> bool {
    section.starts_with(".init.") || section.starts_with(".exit.")
}

/// Per-CPU data sections (`DEFINE_PER_CPU`: `.data..percpu`,
/// `.data..percpu..shared_aligned`, ...).
pub fn is_percpu(section: &str) -> bool {
    section.starts_with(".data..percpu")
}

/// The `endbr64` instruction.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
