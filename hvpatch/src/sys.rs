//! Every `unsafe` operation of `hvpatch`: the Linux privcmd interface to Xen
//! (`IOCTL_PRIVCMD_HYPERCALL` on `/dev/xen/privcmd`) and the hypercall
//! buffers whose addresses the hypervisor reads and writes.
//!
//! Model: a hypercall made through privcmd passes guest-virtual addresses
//! (of the calling Dom0 process) to Xen, which copies from and to them with
//! the process's page tables while the call runs. Such memory must be
//! resident and must not move: [`HypercallBuf`] maps it from
//! `/dev/xen/hypercall` (kernel-allocated, never swapped or migrated, what
//! libxencall does), or, where that device is missing, from anonymous memory
//! that is populated and `mlock`ed (what older libxc did).
//!
//! Invariants: a [`HypercallBuf`] owns its mapping for its whole life and
//! unmaps it on drop; every access goes through bounds-checked slices; the
//! ioctl is given only a pointer to a live, correctly sized argument block.
//! Errors are `std::io::Error` from `errno` (Xen's error codes are Linux
//! errno values on x86).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `struct privcmd_hypercall` of `include/uapi/xen/privcmd.h`.
#[repr(C)]
struct PrivcmdHypercall {
    op: u64,
    arg: [u64; 5],
}

/// `IOCTL_PRIVCMD_HYPERCALL` = `_IOC(_IOC_NONE, 'P', 0, sizeof(privcmd_hypercall))`.
const IOCTL_PRIVCMD_HYPERCALL: libc::c_ulong =
    ((std::mem::size_of::<PrivcmdHypercall>() as libc::c_ulong) << 16)
        | ((b'P' as libc::c_ulong) << 8);

/// Issues hypercall `op` with `args` through an open `/dev/xen/privcmd`.
/// Returns the hypercall's non-negative result; a negative Xen error code
/// comes back as the matching `io::Error`.
///
/// Pointer arguments must be addresses inside a [`HypercallBuf`] that stays
/// alive for the call (the callers in `xen::sysctl` guarantee it).
pub fn hypercall(privcmd: &File, op: u64, args: [u64; 5]) -> io::Result<i64> {
    let mut call = PrivcmdHypercall { op, arg: args };
    // SAFETY: the fd is an open privcmd device (a wrong fd yields ENOTTY, not
    // UB); the argument is a live, properly sized `privcmd_hypercall` that
    // the kernel only reads. Memory the hypercall itself touches is checked
    // by Xen (copy_{from,to}_guest fail with EFAULT, never corrupt us) and is
    // kept resident by `HypercallBuf`.
    let r = unsafe {
        libc::ioctl(
            privcmd.as_raw_fd(),
            IOCTL_PRIVCMD_HYPERCALL,
            &mut call as *mut PrivcmdHypercall,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i64::from(r))
    }
}

/// Memory Xen may read and write during a hypercall: page-aligned, resident,
/// zero-initialised.
pub struct HypercallBuf {
    ptr: *mut u8,
    len: usize,
    /// `false` when the memory is anonymous and locked with `mlock`.
    from_device: bool,
}

// SAFETY: the buffer is plain memory owned exclusively by this value; moving
// it to another thread moves that ownership.
unsafe impl Send for HypercallBuf {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

impl HypercallBuf {
    /// Allocates at least `len` bytes: from `hypercall_dev`
    /// (`/dev/xen/hypercall`) when given, else anonymous memory, populated and
    /// locked.
    pub fn new(hypercall_dev: Option<&File>, len: usize) -> io::Result<Self> {
        let page = page_size();
        let len = len.max(1).div_ceil(page) * page;
        if let Some(dev) = hypercall_dev {
            // SAFETY: a fresh shared mapping of the device at a kernel-chosen
            // address; no existing memory is affected. The kernel backs it
            // with pages allocated for hypercalls.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    dev.as_raw_fd(),
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                let buf = HypercallBuf {
                    ptr: p.cast(),
                    len,
                    from_device: true,
                };
                // The device hands out zeroed pages already; make it explicit.
                // SAFETY: `ptr..ptr+len` is the mapping just created.
                unsafe { std::ptr::write_bytes(buf.ptr, 0, len) };
                return Ok(buf);
            }
            tracing::debug!(error = %io::Error::last_os_error(), "mmap of /dev/xen/hypercall failed, using mlock");
        }
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // affected. MAP_POPULATE faults every page in now.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let buf = HypercallBuf {
            ptr: p.cast(),
            len,
            from_device: false,
        };
        // SAFETY: locks exactly the mapping created above.
        if unsafe { libc::mlock(p, len) } != 0 {
            return Err(io::Error::last_os_error()); // `buf` unmaps on drop
        }
        Ok(buf)
    }

    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live mapping owned by `self`, readable
        // and initialised (zeroed at creation); `&self` prevents mutation
        // through this value for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The buffer's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The guest-virtual address of byte `offset` (what Xen is given).
    pub fn addr(&self, offset: usize) -> u64 {
        self.ptr as u64 + offset as u64
    }

    /// Whether the memory came from `/dev/xen/hypercall` (else `mlock`).
    pub fn device_backed(&self) -> bool {
        self.from_device
    }
}

impl Drop for HypercallBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns; no slice of it
        // can outlive `self`. munmap also drops an mlock.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_linux_uapi() {
        // _IOC(_IOC_NONE, 'P', 0, 48): size 48 in bits 16..29, type 'P' in 8..15.
        assert_eq!(std::mem::size_of::<PrivcmdHypercall>(), 48);
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
    }

    #[test]
    fn anonymous_buffer_is_locked_zeroed_and_page_sized() -> io::Result<()> {
        let mut b = HypercallBuf::new(None, 10)?;
        assert_eq!(b.as_slice().len() % page_size(), 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[3] = 7;
        assert_eq!(b.as_slice()[3], 7);
        assert!(!b.device_backed());
        assert_eq!(b.addr(3), b.as_slice().as_ptr() as u64 + 3);
        Ok(())
    }
}
