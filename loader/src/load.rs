//! Step 2 of apply: load the laid-out patch into the target, with one
//! thread stopped. Injected `mmap(MAP_FIXED_NOREPLACE)` at a free range
//! within ±2 GiB of the patched object (range taken: lay out again at the
//! next one), write the image and its registry record through
//! `/proc/PID/mem`, injected `mprotect` (registry page `r--`, code `r-x`,
//! data stays `rw-`). Also the injected `munmap` of a mapping nothing runs.
//!
//! Invariants: the new code is unreachable when this step ends — no entry
//! jumps to it yet — so the target still runs only old code; a failure after
//! the `mmap` unmaps it again; injected system calls run in a cave of a
//! mapped object when there is one, which makes them kill-safe (see
//! [`crate::inject`]).

use crate::error::{Error, Result};
use crate::freeze;
use crate::image::{Builder, PatchImage};
use crate::inject::{self, Gadget};
use crate::mem::{self, PAGE};
use crate::registry::Record;
use crate::target::{Object, Process};

/// Where injected system calls run: a cave of a mapped object (kill-safe,
/// see [`inject`]), else an existing `syscall` instruction.
pub fn gadget(proc: &Process) -> Result<Gadget> {
    let syscall = proc.objects.iter().find_map(Object::syscall_gadget);
    let cave = proc.objects.iter().find_map(|o| o.cave(inject::CAVE_LEN));
    if let Some(c) = cave {
        tracing::debug!(
            "process {}: injected system calls run in the cave at {c:#x}",
            proc.pid
        );
    } else {
        tracing::warn!(
            "process {}: no {}-byte cave in any mapped object; a kill of hotfix during an injected system call would leave that thread with wrong registers",
            proc.pid,
            inject::CAVE_LEN
        );
    }
    Gadget::new(proc.pid, syscall, cave)
}

/// Loads the patch laid out by `builder` (`size` bytes, from a probe
/// layout) into `proc`; returns its record.
pub fn load(proc: &Process, builder: &Builder<'_>, size: u64) -> Result<Record> {
    let pid = proc.pid;
    let near = builder.near()?;
    let g = gadget(proc)?;
    let mut one = freeze::stop_any(pid)?;
    let mut loaded: Option<Record> = None;
    for skip in 0..16 {
        let Some(base) = proc.free_range_near(near.span, size, skip) else {
            break;
        };
        let image = builder.build(base)?;
        let Some(t) = one.threads.first_mut() else {
            break;
        };
        let prot_rw = libc::PROT_READ | libc::PROT_WRITE;
        if inject::mmap_fixed(pid, t, &g, base, image.record.size, prot_rw)?.is_none() {
            continue;
        }
        if let Err(e) = write_and_protect(pid, t, &g, base, &image) {
            let _ = inject::munmap(pid, t, &g, base, image.record.size);
            return Err(e);
        }
        loaded = Some(image.record);
        break;
    }
    one.resume();
    loaded.ok_or_else(|| Error::NoSpace {
        pid,
        object: near.path.clone(),
        size,
    })
}

/// Writes `image` into the fresh mapping at `base`, then makes its registry
/// page read-only and its code read-execute.
fn write_and_protect(
    pid: i32,
    t: &mut freeze::Thread,
    g: &Gadget,
    base: u64,
    image: &PatchImage,
) -> Result<()> {
    let w = mem::Writer::open(pid)?;
    w.write(base, &image.bytes)?;
    inject::mprotect(pid, t, g, base, PAGE, libc::PROT_READ)?;
    let code = image.code;
    if code.1 > 0 {
        inject::mprotect(
            pid,
            t,
            g,
            base + code.0,
            code.1,
            libc::PROT_READ | libc::PROT_EXEC,
        )?;
    }
    Ok(())
}

/// Unmaps a patch mapping nothing runs (a failed apply's, or a leftover of
/// an interrupted one), stopping one thread for the injected `munmap`;
/// failure is only logged.
pub fn unmap_leftover(proc: &Process, base: u64, size: u64) {
    let pid = proc.pid;
    let res = gadget(proc).and_then(|g| {
        let mut f = freeze::stop_any(pid)?;
        let r = match f.threads.first_mut() {
            Some(t) => inject::munmap(pid, t, &g, base, size),
            None => Ok(()),
        };
        f.resume();
        r
    });
    if let Err(e) = res {
        tracing::warn!("process {pid}: could not unmap the unused patch mapping at {base:#x}: {e}");
    }
}
