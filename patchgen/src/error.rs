//! The one error type of `patchgen`. Every variant names the file and, where
//! there is one, the symbol concerned; [`Error::status`] gives its exit status.
//!
//! Refusals (changes that cannot be live-patched safely) are collected and
//! reported together in [`Error::Refused`], each as a [`Refusal`] with a
//! [`RefusalKind`], so that callers and tests can match them exactly.

use crate::Status;
use serde::Serialize;
use std::path::PathBuf;

/// Errors of reading, diffing and emitting objects and patches.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metadata section of a patch file is unreadable.
    #[error("{path}: {source}")]
    Format {
        /// The patch file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::format::FormatError,
    },
    /// The file is not a well-formed ELF object.
    #[error("{file}: malformed object: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The object is not for x86-64.
    #[error("{file}: not an x86-64 object (e_machine {machine}); hotfix patches x86-64 only")]
    WrongMachine {
        /// The file.
        file: String,
        /// Its `e_machine`.
        machine: u16,
    },
    /// The object is not relocatable (an executable or a shared library).
    #[error("{file}: not a relocatable object (e_type {e_type}); pass the .o files of the build")]
    NotRelocatable {
        /// The file.
        file: String,
        /// Its `e_type`.
        e_type: u16,
    },
    /// The object was built without `-ffunction-sections` (a function in
    /// `.text`).
    #[error(
        "{file}: function {symbol} is in the plain {section} section (built without -ffunction-sections); rebuild with -ffunction-sections -fdata-sections"
    )]
    NoFunctionSections {
        /// The file.
        file: String,
        /// A function found in a shared section.
        symbol: String,
        /// The section.
        section: String,
    },
    /// The two objects were not built from the same source file.
    #[error("{orig} and {patched} are not built from the same source: {reason}")]
    DifferentSources {
        /// The original object.
        orig: String,
        /// The patched object.
        patched: String,
        /// Why they do not match.
        reason: String,
    },
    /// The two objects are functionally identical (exit status 5).
    #[error("{orig} -> {patched}: no functional change{}", line_note(*line_only))]
    NoChange {
        /// The original object.
        orig: String,
        /// The patched object.
        patched: String,
        /// Functions that differ only by `__LINE__` immediates.
        line_only: usize,
    },
    /// The change cannot be live-patched safely.
    #[error("{file}: refused: {}", list(refusals))]
    Refused {
        /// The patched object.
        file: String,
        /// Every reason found, in symbol-table order.
        refusals: Vec<Refusal>,
    },
    /// A reference from the patch cannot be expressed.
    #[error("{file}: {symbol}: {reason}")]
    Unresolvable {
        /// The patched object.
        file: String,
        /// The referring symbol.
        symbol: String,
        /// What cannot be expressed.
        reason: String,
    },
    /// Writing the patch object failed.
    #[error("{file}: cannot write patch object: {reason}")]
    Emit {
        /// The output name.
        file: String,
        /// The writer's message.
        reason: String,
    },
    /// `explain` was asked about a function that did not change.
    #[error("{file}: function {symbol} did not change (changed: {changed})")]
    NotChanged {
        /// The patched object.
        file: String,
        /// The function asked about.
        symbol: String,
        /// The functions that did change, comma-separated.
        changed: String,
    },
    /// The DWARF of an object cannot be read.
    #[error("{path}: cannot read DWARF: {reason}")]
    Dwarf {
        /// The object.
        path: PathBuf,
        /// The reader's message.
        reason: String,
    },
    /// A step of `hotfix build` failed (the project's build, applying the
    /// fix, the compiler wrapper...).
    #[error("build step {step} failed: {reason}{}", log.as_ref().map(|l| format!(" (log: {})", l.display())).unwrap_or_default())]
    Build {
        /// The step: `original build`, `patched build`, `apply fix`...
        step: String,
        /// What went wrong.
        reason: String,
        /// The step's log, kept in the work directory.
        log: Option<PathBuf>,
    },
    /// The fix changes the layout of data types: live code would keep the
    /// old layout.
    #[error(
        "{file}: the fix changes the layout of {changes}; running code uses the old layout, so it cannot be patched live: this host needs a drain and restart instead"
    )]
    LayoutChanged {
        /// The object whose types changed.
        file: String,
        /// `struct T (what)`, semicolon-separated.
        changes: String,
    },
    /// A kernel object compiled from the kernel source is not the running
    /// kernel's (`hotfix build --kernel` with a kernel source directory).
    #[error("{file}: {symbol} (running kernel address {address:#x}): {reason}")]
    KernelMismatch {
        /// The compiled object.
        file: String,
        /// The function or symbol concerned.
        symbol: String,
        /// Its address in the running kernel (0 if not found).
        address: u64,
        /// What differs.
        reason: String,
    },
    /// The original build does not reproduce the running binary.
    #[error(
        "build-id mismatch: the running binary {running_path} has build-id {running}, the original build of the source has {built}: {explanation}"
    )]
    BuildIdMismatch {
        /// Path of the running binary (or `--against` file).
        running_path: String,
        /// Its build-id.
        running: String,
        /// The build-id of the binary the original build produced.
        built: String,
        /// Which build inputs differ (compiler, flags, paths).
        explanation: String,
    },
}

fn line_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} function(s) differ only in __LINE__ immediates)")
    }
}

fn list(r: &[Refusal]) -> String {
    r.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a change cannot be live-patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// The initializer or size of existing writable data changed: the
    /// running target's copy would not change.
    DataChanged,
    /// A changed section would not be included in the patch (for example a
    /// changed existing read-only object).
    SectionNotIncluded,
    /// A changed function no longer references a static local it used: its
    /// state could not be carried over.
    StaticLocalRemoved,
    /// Constructor/initialisation code changed: it already ran.
    InitCode,
    /// A function to replace is too short to hold a 5-byte jump.
    TooShort,
    /// The fix adds a per-CPU variable: per-CPU areas are laid out at load.
    NewPerCpuData,
    /// A kernel function to replace has no ftrace call site (`notrace`,
    /// `noinstr`): livepatch attaches to the old function through ftrace.
    NotTraceable,
}

impl RefusalKind {
    /// The rule's stable name (as serialized: `data-changed`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RefusalKind::DataChanged => "data-changed",
            RefusalKind::SectionNotIncluded => "section-not-included",
            RefusalKind::StaticLocalRemoved => "static-local-removed",
            RefusalKind::InitCode => "init-code",
            RefusalKind::TooShort => "too-short",
            RefusalKind::NewPerCpuData => "new-percpu-data",
            RefusalKind::NotTraceable => "not-traceable",
        }
    }
}

/// One reason to refuse, naming the symbol concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{symbol}: {reason} (rule {})", kind.name())]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// The symbol (function, object or section) concerned.
    pub symbol: String,
    /// Human explanation.
    pub reason: String,
}

impl Error {
    /// The exit status this error maps to.
    pub fn status(&self) -> Status {
        match self {
            Error::NoChange { .. } => Status::NoChange,
            Error::Io { .. }
            | Error::Format { .. }
            | Error::Parse { .. }
            | Error::WrongMachine { .. }
            | Error::NotRelocatable { .. }
            | Error::NoFunctionSections { .. }
            | Error::DifferentSources { .. }
            | Error::Refused { .. }
            | Error::Unresolvable { .. }
            | Error::Emit { .. }
            | Error::NotChanged { .. }
            | Error::Dwarf { .. }
            | Error::Build { .. }
            | Error::LayoutChanged { .. } => Status::Error,
            Error::BuildIdMismatch { .. } | Error::KernelMismatch { .. } => Status::Mismatch,
        }
    }
}
