//! Explaining a diff: per changed function, why it counts as changed and a
//! symbolized disassembly diff.
//!
//! Model: each function is disassembled (iced-x86, Intel syntax) from
//! offset 0; every operand covered by a relocation is printed as the
//! relocation's target (`symbol+off`, `"string"`, `section+off`), and
//! branches inside the function as `<+0x1a>`, so the text does not depend on
//! where the linker or the assembler placed things. The old and new texts
//! are compared line by line (`similar`) into a unified diff.
//!
//! Invariants: explaining never refuses (refusals are reported by `diff`);
//! the output is deterministic for given inputs (snapshot-tested).

use crate::compare::{self, describe};
use crate::read::{ObjectFile, Symbol, Target};
use crate::{Error, correlate};
use iced_x86::{
    Decoder, DecoderOptions, Formatter, FormatterOutput, FormatterTextKind, Instruction,
    IntelFormatter, SymbolResolver, SymbolResult,
};
use serde::Serialize;
use std::collections::HashMap;

/// The explanation of one function.
#[derive(Debug, Clone, Serialize)]
pub struct FuncExplanation {
    /// Name in the patched object.
    pub name: String,
    /// Name in the original object (`None` for a new function).
    pub old_name: Option<String>,
    /// Why it counts as changed.
    pub reason: String,
    /// Unified diff of the symbolized disassemblies (old → new).
    pub diff: String,
}

/// The explanation of a pair of objects.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The original object.
    pub orig: String,
    /// The patched object.
    pub patched: String,
    /// Changed and new functions (or the one asked for).
    pub funcs: Vec<FuncExplanation>,
    /// Functions that differ only in `__LINE__` immediates.
    pub line_only: Vec<String>,
}

struct Resolver {
    /// Instruction offset → text of the relocation target in it.
    relocs: HashMap<u64, String>,
}

impl SymbolResolver for Resolver {
    fn symbol(
        &mut self,
        instruction: &Instruction,
        _operand: u32,
        _instruction_operand: Option<u32>,
        address: u64,
        _address_size: u32,
    ) -> Option<SymbolResult<'_>> {
        if let Some(t) = self.relocs.get(&instruction.ip())
            && (address == instruction.next_ip() || address == 0)
        {
            return Some(SymbolResult::with_string(address, t.clone()));
        }
        if instruction.is_jcc_short_or_near()
            || instruction.is_jmp_short_or_near()
            || instruction.is_call_near()
        {
            return Some(SymbolResult::with_string(
                address,
                format!("<+{address:#x}>"),
            ));
        }
        None
    }
}

struct Text(String);
impl FormatterOutput for Text {
    fn write(&mut self, text: &str, _kind: FormatterTextKind) {
        self.0.push_str(text);
    }
}

fn shift(t: Target, by: i64) -> Target {
    match t {
        Target::Entity { sym, offset } => Target::Entity {
            sym,
            offset: offset.saturating_add(by),
        },
        Target::Undefined { sym, addend } => Target::Undefined {
            sym,
            addend: addend.saturating_add(by),
        },
        Target::Absolute { sym, addend } => Target::Absolute {
            sym,
            addend: addend.saturating_add(by),
        },
        Target::Str {
            section,
            start,
            end,
            rel,
        } => Target::Str {
            section,
            start,
            end,
            rel: rel.saturating_add(by),
        },
        Target::Anon { section, offset } => Target::Anon {
            section,
            offset: offset.saturating_add(by),
        },
    }
}

/// Symbolized disassembly of function `sym` of `obj`, one line per
/// instruction (`+off: text`).
pub fn disassemble(obj: &ObjectFile, sym: &Symbol) -> Vec<String> {
    let bytes = obj.symbol_bytes(sym);
    let mut relocs = HashMap::new();
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let insns: Vec<Instruction> = decoder.iter().collect();
    let rel: Vec<_> = obj.symbol_relocs(sym).copied().collect();
    for i in &insns {
        for r in &rel {
            let off = r.offset - sym.value;
            if off >= i.ip() && off < i.next_ip() {
                // Show the address the instruction uses: for PC-relative
                // fields, the addend's bias to the next instruction is removed.
                let t = obj.resolve(r);
                let t = if r.is_pc_relative() {
                    shift(t, (i.next_ip() - off) as i64)
                } else {
                    t
                };
                relocs.insert(i.ip(), describe(obj, t));
            }
        }
    }
    let mut f = IntelFormatter::with_options(Some(Box::new(Resolver { relocs })), None);
    f.options_mut().set_rip_relative_addresses(true);
    f.options_mut().set_space_after_operand_separator(true);
    insns
        .iter()
        .map(|i| {
            let mut t = Text(String::new());
            f.format(i, &mut t);
            format!("{:>5}: {}", format!("+{:x}", i.ip()), t.0)
        })
        .collect()
}

/// Explains the differences between `orig` and `patched`; `func` limits the
/// output to one function (patched or original name, suffix numbers ignored).
pub fn explain(
    orig: &[u8],
    orig_name: &str,
    patched: &[u8],
    patched_name: &str,
    func: Option<&str>,
) -> Result<Explanation, Error> {
    let o = ObjectFile::parse(orig, orig_name)?;
    let p = ObjectFile::parse(patched, patched_name)?;
    let an = compare::analyze(&o, &p)?;
    let mut funcs = Vec::new();
    let mut items: Vec<(usize, Option<usize>, String)> = an
        .changed
        .iter()
        .map(|c| (c.patched, Some(c.orig), c.reason.clone()))
        .collect();
    items.extend(
        an.new_funcs
            .iter()
            .map(|&n| (n, None, "new function".to_owned())),
    );
    items.sort_by_key(|i| i.0);
    let wanted = |s: &Symbol| {
        func.is_none_or(|f| s.name == f || correlate::normalize(&s.name) == correlate::normalize(f))
    };
    for (pi, oi, reason) in items {
        let Some(ps) = p.sym(pi) else { continue };
        let os = oi.and_then(|i| o.sym(i));
        if !wanted(ps) && !os.is_some_and(wanted) {
            continue;
        }
        let old = os.map(|s| disassemble(&o, s)).unwrap_or_default();
        let new = disassemble(&p, ps);
        let (old, new) = (old.join("\n") + "\n", new.join("\n") + "\n");
        let diff = similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(
                &os.map_or("/dev/null".to_owned(), |s| {
                    format!("{orig_name}:{}", s.name)
                }),
                &format!("{patched_name}:{}", ps.name),
            )
            .to_string();
        funcs.push(FuncExplanation {
            name: ps.name.clone(),
            old_name: os.map(|s| s.name.clone()),
            reason,
            diff,
        });
    }
    if let Some(f) = func
        && funcs.is_empty()
    {
        return Err(Error::NotChanged {
            file: patched_name.to_owned(),
            symbol: f.to_owned(),
            changed: an
                .changed
                .iter()
                .filter_map(|c| p.sym(c.patched).map(|s| s.name.clone()))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Explanation {
        orig: orig_name.to_owned(),
        patched: patched_name.to_owned(),
        funcs,
        line_only: an
            .line_only
            .iter()
            .filter_map(|&i| p.sym(i).map(|s| s.name.clone()))
            .collect(),
    })
}

impl Explanation {
    /// The human rendering (stable; snapshot-tested).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.funcs {
            match &f.old_name {
                Some(o) if *o != f.name => {
                    out.push_str(&format!("function {} (was {o}): {}\n", f.name, f.reason))
                }
                _ => out.push_str(&format!("function {}: {}\n", f.name, f.reason)),
            }
            out.push_str(&f.diff);
            out.push('\n');
        }
        for l in &self.line_only {
            out.push_str(&format!(
                "function {l}: only __LINE__ immediates differ (not a change)\n"
            ));
        }
        out
    }
}
