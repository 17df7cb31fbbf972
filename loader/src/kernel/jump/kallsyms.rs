//! `/proc/kallsyms`: the running kernel's symbol addresses, and livepatch's
//! rule for telling same-named symbols apart.
//!
//! Model: symbols are kept in kallsyms order, grouped by name; `sympos` 0
//! means "unique in its object", `sympos` N the N-th of that name in the
//! object. Invariant: a lookup either finds exactly one address or says why
//! not (absent, ambiguous, sympos past the last occurrence).

use crate::Error;
use std::collections::{HashMap, HashSet};
use std::path::Path;

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
}
