//! Reading and writing the target's memory. Reads use `process_vm_readv`
//! (bulk, no stop needed); writes go through `/proc/PID/mem`, which can
//! write read-only and executable pages (`process_vm_writev` cannot).
//!
//! Invariant: every write is a single `pwrite` of the whole buffer, so a
//! 5-byte jump is written in one operation while all threads are stopped.

use crate::error::{Error, Result};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

/// Page size of the target (x86-64).
pub const PAGE: u64 = 4096;

/// Reads `buf.len()` bytes at `addr` of process `pid`.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<()> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let mut local = [IoSliceMut::new(buf)];
    match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(Error::Memory {
            pid,
            op: "read",
            addr,
            len,
            err: std::io::Error::other(format!("short read ({n} bytes)")),
        }),
        Err(e) => Err(Error::Memory {
            pid,
            op: "read",
            addr,
            len,
            err: std::io::Error::from(e),
        }),
    }
}

/// Reads `len` bytes at `addr`.
pub fn read_vec(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    read(pid, addr, &mut v)?;
    Ok(v)
}

/// Reads a little-endian u64 at `addr`.
pub fn read_u64(pid: i32, addr: u64) -> Result<u64> {
    let mut b = [0u8; 8];
    read(pid, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A writer through `/proc/PID/mem`.
pub struct Writer {
    pid: i32,
    file: std::fs::File,
}

impl Writer {
    /// Opens `/proc/PID/mem` for writing.
    pub fn open(pid: i32) -> Result<Self> {
        let path = format!("/proc/{pid}/mem");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Process {
                pid,
                reason: format!("cannot open {path}: {e}"),
            })?;
        Ok(Self { pid, file })
    }

    /// Writes `data` at `addr` in one `pwrite`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        let err = |err| Error::Memory {
            pid: self.pid,
            op: "write",
            addr,
            len: data.len(),
            err,
        };
        match self.file.write_at(data, addr) {
            Ok(n) if n == data.len() => Ok(()),
            Ok(n) => Err(err(std::io::Error::other(format!(
                "short write ({n} bytes)"
            )))),
            Err(e) => Err(err(e)),
        }
    }
}
