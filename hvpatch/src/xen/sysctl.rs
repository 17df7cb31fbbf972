//! The four sub-operations of `XEN_SYSCTL_livepatch_op` (upload, get, list,
//! action), each one `__HYPERVISOR_sysctl` hypercall made through
//! `/dev/xen/privcmd` from Dom0 — no xen-utils, libxenctrl or xenstore needed,
//! so a minimal Dom0 (or a rescue shell) can patch its hypervisor.
//!
//! Model: each call lays out one hypercall buffer as
//! `[struct xen_sysctl][name][payload or list arrays]` and passes the
//! buffer-internal addresses as guest handles ([`super::abi`] has the
//! offsets). Buffers come from `/dev/xen/hypercall` when the kernel offers it
//! and from locked anonymous memory otherwise ([`crate::sys::HypercallBuf`]).
//!
//! Invariant: these calls are thin; deciding what to do and polling for
//! completion is [`super::apply`]'s job.

use super::abi::{self, off};
use super::error::{Error, Result};
use crate::sys::{self, HypercallBuf};
use serde::Serialize;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The privcmd device.
pub const PRIVCMD: &str = "/dev/xen/privcmd";
/// The hypercall-buffer device.
pub const HYPERCALL_DEV: &str = "/dev/xen/hypercall";
/// The running hypervisor's build-id (raw bytes), from Linux's
/// `CONFIG_XEN_SYS_HYPERVISOR`.
pub const SYSFS_BUILD_ID: &str = "/sys/hypervisor/properties/buildid";

/// `xen_livepatch_status` of one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `LIVEPATCH_STATE_*`.
    pub state: u32,
    /// 0, or `-XEN_Exx` (`-EAGAIN` while an action is in progress).
    pub rc: i32,
}

impl Status {
    /// Whether an action on the payload is still in progress.
    pub fn in_progress(&self) -> bool {
        self.rc == -libc::EAGAIN
    }
}

/// One entry of `XEN_SYSCTL_LIVEPATCH_LIST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The payload name.
    pub name: String,
    /// Its state (`CHECKED`, `APPLIED`).
    pub state: String,
    /// Its last action's result (0, or `-XEN_Exx`).
    pub rc: i32,
    /// Its `.modinfo` metadata strings.
    pub metadata: Vec<String>,
}

/// An open connection to the hypervisor's live-patch interface.
pub struct Hypervisor {
    privcmd: File,
    hypercall: Option<File>,
}

fn open_rw(path: &str) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

/// Xen's error code `rc` (negative errno) as text.
pub fn errno_text(rc: i32) -> String {
    format!(
        "{} ({rc})",
        io::Error::from_raw_os_error(rc.saturating_neg())
    )
}

impl Hypervisor {
    /// Opens `/dev/xen/privcmd` (and `/dev/xen/hypercall` if present).
    pub fn open() -> Result<Hypervisor> {
        let privcmd = open_rw(PRIVCMD).map_err(|e| Error::NoXen {
            path: PathBuf::from(PRIVCMD),
            detail: format!("{e} (is this a Xen Dom0 with xen-privcmd loaded?)"),
        })?;
        let hypercall = open_rw(HYPERCALL_DEV).ok();
        Ok(Hypervisor { privcmd, hypercall })
    }

    /// The running hypervisor's build-id (hex) from sysfs.
    pub fn build_id(&self) -> Result<String> {
        let p = Path::new(SYSFS_BUILD_ID);
        let raw = std::fs::read(p).map_err(|e| Error::NoXen {
            path: p.to_path_buf(),
            detail: format!("cannot read the hypervisor build-id: {e}"),
        })?;
        if raw.is_empty() {
            return Err(Error::NoXen {
                path: p.to_path_buf(),
                detail: "empty build-id".into(),
            });
        }
        Ok(super::payload::hex(&raw))
    }

    fn buf(&self, len: usize) -> io::Result<HypercallBuf> {
        let b = HypercallBuf::new(self.hypercall.as_ref(), len)?;
        tracing::trace!(len, device_backed = b.device_backed(), "hypercall buffer");
        Ok(b)
    }

    /// Lays out the header and the name (right after the header), returning
    /// the buffer and the offset where the next data may go.
    fn request(&self, cmd: u32, name: &str, extra: usize) -> io::Result<(HypercallBuf, usize)> {
        let name_off = abi::SYSCTL_SIZE;
        let data_off = (name_off + name.len() + 1).next_multiple_of(8);
        let mut buf = self.buf(data_off + extra)?;
        let base = buf.addr(0);
        let b = buf.as_mut_slice();
        abi::put_u32(b, off::CMD, abi::SYSCTL_LIVEPATCH_OP);
        abi::put_u32(b, off::INTERFACE_VERSION, abi::SYSCTL_INTERFACE_VERSION);
        abi::put_u32(b, off::LP_CMD, cmd);
        abi::put_u32(b, off::LP_PAD, 0);
        if !name.is_empty() {
            if let Some(d) = b.get_mut(name_off..name_off + name.len()) {
                d.copy_from_slice(name.as_bytes());
            }
            abi::put_u64(b, off::NAME_PTR, base + name_off as u64);
            abi::put_u16(b, off::NAME_SIZE, (name.len() + 1) as u16);
            for i in 0..3 {
                abi::put_u16(b, off::NAME_PAD + 2 * i, 0);
            }
        }
        Ok((buf, data_off))
    }

    fn call(&self, buf: &HypercallBuf) -> io::Result<i64> {
        sys::hypercall(
            &self.privcmd,
            abi::HYPERVISOR_SYSCTL,
            [buf.addr(0), 0, 0, 0, 0],
        )
    }

    fn err(name: &str, op: &'static str) -> impl FnOnce(io::Error) -> Error {
        let name = name.to_string();
        move |source| Error::Hypercall { name, op, source }
    }

    /// `XEN_SYSCTL_LIVEPATCH_UPLOAD`: copies `bytes` into the hypervisor,
    /// which checks and loads them as payload `name` (state CHECKED).
    pub fn upload(&self, name: &str, bytes: &[u8]) -> Result<()> {
        super::payload::check_name(name)?;
        let (mut buf, data) = self
            .request(abi::LIVEPATCH_UPLOAD, name, bytes.len())
            .map_err(Self::err(name, "upload"))?;
        let base = buf.addr(0);
        let b = buf.as_mut_slice();
        if let Some(d) = b.get_mut(data..data + bytes.len()) {
            d.copy_from_slice(bytes);
        }
        abi::put_u64(b, off::UPLOAD_SIZE, bytes.len() as u64);
        abi::put_u64(b, off::UPLOAD_PAYLOAD, base + data as u64);
        self.call(&buf).map(drop).map_err(Self::err(name, "upload"))
    }

    /// `XEN_SYSCTL_LIVEPATCH_GET`: the status of payload `name`, or `None`
    /// when no such payload is loaded.
    pub fn get(&self, name: &str) -> Result<Option<Status>> {
        super::payload::check_name(name)?;
        let (buf, _) = self
            .request(abi::LIVEPATCH_GET, name, 0)
            .map_err(Self::err(name, "get"))?;
        match self.call(&buf) {
            Ok(_) => {
                let b = buf.as_slice();
                Ok(Some(Status {
                    state: abi::get_u32(b, off::GET_STATE),
                    rc: abi::get_u32(b, off::GET_RC) as i32,
                }))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(Self::err(name, "get")(e)),
        }
    }

    /// `XEN_SYSCTL_LIVEPATCH_ACTION` `cmd` (`abi::ACTION_*`) on payload
    /// `name`. Returns once Xen has scheduled it; poll [`Hypervisor::get`]
    /// for completion. `timeout_ns` 0 takes the hypervisor's default.
    pub fn action(&self, name: &str, cmd: u32, timeout_ns: u32, op: &'static str) -> Result<()> {
        super::payload::check_name(name)?;
        let (mut buf, _) = self
            .request(abi::LIVEPATCH_ACTION, name, 0)
            .map_err(Self::err(name, op))?;
        let b = buf.as_mut_slice();
        abi::put_u32(b, off::ACTION_CMD, cmd);
        abi::put_u32(b, off::ACTION_TIMEOUT, timeout_ns);
        abi::put_u32(b, off::ACTION_FLAGS, 0);
        abi::put_u32(b, off::ACTION_PAD, 0);
        self.call(&buf).map(drop).map_err(Self::err(name, op))
    }

    /// `XEN_SYSCTL_LIVEPATCH_LIST`: every loaded payload, in load order.
    /// Retries from the start when the hypervisor's list changes meanwhile.
    pub fn list(&self) -> Result<Vec<Listed>> {
        'again: for _ in 0..16 {
            // Sizes first (nr = 0).
            let (buf, _) = self
                .request(abi::LIVEPATCH_LIST, "", 0)
                .map_err(Self::err("", "list"))?;
            self.call(&buf).map_err(Self::err("", "list"))?;
            let b = buf.as_slice();
            let version = abi::get_u32(b, off::LIST_VERSION);
            let total = abi::get_u32(b, off::LIST_NR).min(abi::LIST_MAX);
            let names_len = abi::get_u32(b, off::LIST_NAME_TOTAL) as usize;
            let meta_len = abi::get_u32(b, off::LIST_METADATA_TOTAL) as usize;
            drop(buf);
            let mut out = Vec::new();
            while (out.len() as u32) < total {
                let nr = total - out.len() as u32;
                let n = nr as usize;
                // [status: 8n][len: 4n][metadata_len: 4n][names][metadata]
                let extra = 16 * n + names_len + meta_len + 8;
                let (mut buf, data) = self
                    .request(abi::LIVEPATCH_LIST, "", extra)
                    .map_err(Self::err("", "list"))?;
                let base = buf.addr(0);
                let (st, ln, ml) = (data, data + 8 * n, data + 12 * n);
                let nm = data + 16 * n;
                let md = nm + names_len;
                let b = buf.as_mut_slice();
                abi::put_u32(b, off::LIST_IDX, out.len() as u32);
                abi::put_u32(b, off::LIST_NR, nr);
                abi::put_u32(b, off::LIST_PAD, 0);
                abi::put_u64(b, off::LIST_STATUS, base + st as u64);
                abi::put_u64(b, off::LIST_LEN, base + ln as u64);
                abi::put_u64(b, off::LIST_METADATA_LEN, base + ml as u64);
                abi::put_u64(b, off::LIST_NAME, base + nm as u64);
                abi::put_u64(b, off::LIST_METADATA, base + md as u64);
                let got = match self.call(&buf) {
                    Ok(g) => g,
                    // A payload loaded meanwhile no longer fits the sizes.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue 'again,
                    Err(e) => return Err(Self::err("", "list")(e)),
                };
                let b = buf.as_slice();
                if abi::get_u32(b, off::LIST_VERSION) != version {
                    continue 'again;
                }
                let (mut noff, mut moff) = (nm, md);
                for i in 0..usize::try_from(got).unwrap_or(0).min(n) {
                    let nlen = abi::get_u32(b, ln + 4 * i) as usize;
                    let mlen = abi::get_u32(b, ml + 4 * i) as usize;
                    let name = b.get(noff..noff + nlen).unwrap_or_default();
                    let meta = b.get(moff..moff + mlen).unwrap_or_default();
                    noff += nlen;
                    moff += mlen;
                    let state = abi::get_u32(b, st + 8 * i);
                    out.push(Listed {
                        name: String::from_utf8_lossy(
                            name.split(|&c| c == 0).next().unwrap_or_default(),
                        )
                        .into_owned(),
                        state: abi::state_name(state).to_string(),
                        rc: abi::get_u32(b, st + 8 * i + 4) as i32,
                        metadata: meta
                            .split(|&c| c == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    });
                }
                if got <= 0 {
                    break;
                }
            }
            return Ok(out);
        }
        Err(Error::Hypercall {
            name: String::new(),
            op: "list",
            source: io::Error::other("the payload list kept changing; try again"),
        })
    }
}
