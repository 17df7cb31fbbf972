//! The binary interface of Xen 4.17's live-patch sysctl, as byte offsets.
//!
//! Source of truth: `xen/include/public/sysctl.h` of the built tree
//! (`XEN_SYSCTL_INTERFACE_VERSION` 0x15, `struct xen_sysctl`,
//! `struct xen_sysctl_livepatch_op`) and `xen/include/public/xen.h`
//! (`__HYPERVISOR_sysctl`). The `xen_abi` integration test compiles the
//! public headers of the test hypervisor and checks every offset here.
//!
//! Model: a request is one `struct xen_sysctl` (136 bytes: `cmd`,
//! `interface_version`, then a 128-byte union) written field by field,
//! little-endian, into a hypercall buffer; guest handles are the 64-bit
//! addresses of other parts of the same buffer. No Rust struct is ever
//! reinterpreted as bytes, so there is no layout to get wrong implicitly.

/// `__HYPERVISOR_sysctl`.
pub const HYPERVISOR_SYSCTL: u64 = 35;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const SYSCTL_INTERFACE_VERSION: u32 = 0x15;
/// `XEN_SYSCTL_livepatch_op`.
pub const SYSCTL_LIVEPATCH_OP: u32 = 27;
/// `sizeof(struct xen_sysctl)`.
pub const SYSCTL_SIZE: usize = 136;

/// `XEN_SYSCTL_LIVEPATCH_UPLOAD`.
pub const LIVEPATCH_UPLOAD: u32 = 0;
/// `XEN_SYSCTL_LIVEPATCH_GET`.
pub const LIVEPATCH_GET: u32 = 1;
/// `XEN_SYSCTL_LIVEPATCH_LIST`.
pub const LIVEPATCH_LIST: u32 = 2;
/// `XEN_SYSCTL_LIVEPATCH_ACTION`.
pub const LIVEPATCH_ACTION: u32 = 3;

/// `LIVEPATCH_ACTION_UNLOAD`.
pub const ACTION_UNLOAD: u32 = 1;
/// `LIVEPATCH_ACTION_REVERT`.
pub const ACTION_REVERT: u32 = 2;
/// `LIVEPATCH_ACTION_APPLY`.
pub const ACTION_APPLY: u32 = 3;
/// `LIVEPATCH_ACTION_REPLACE`.
pub const ACTION_REPLACE: u32 = 4;

/// `LIVEPATCH_STATE_CHECKED`: uploaded and verified, not applied.
pub const STATE_CHECKED: u32 = 1;
/// `LIVEPATCH_STATE_APPLIED`.
pub const STATE_APPLIED: u32 = 2;

/// `XEN_LIVEPATCH_NAME_SIZE`: maximum name length including the NUL.
pub const NAME_SIZE: usize = 128;
/// Largest `nr` `XEN_SYSCTL_LIVEPATCH_LIST` accepts.
pub const LIST_MAX: u32 = 1024;

/// `sizeof(struct livepatch_func)` (payload version 2), the record size of
/// a payload's `.livepatch.funcs`.
pub const FUNC_SIZE: usize = 104;
/// `LIVEPATCH_PAYLOAD_VERSION`.
pub const PAYLOAD_VERSION: u8 = 2;

/// Byte offsets inside `struct xen_sysctl` (from its start).
pub mod off {
    /// `xen_sysctl.cmd`.
    pub const CMD: usize = 0;
    /// `xen_sysctl.interface_version`.
    pub const INTERFACE_VERSION: usize = 4;
    /// `xen_sysctl.u.livepatch.cmd`.
    pub const LP_CMD: usize = 8;
    /// `xen_sysctl.u.livepatch.pad`.
    pub const LP_PAD: usize = 12;
    /// `xen_sysctl.u.livepatch.u`: start of the sub-op union; every sub-op
    /// but LIST begins with a `struct xen_livepatch_name` here.
    pub const LP_U: usize = 16;
    /// `xen_livepatch_name.name` (guest handle).
    pub const NAME_PTR: usize = LP_U;
    /// `xen_livepatch_name.size` (u16, including the NUL).
    pub const NAME_SIZE: usize = LP_U + 8;
    /// `xen_livepatch_name.pad[3]` (u16 each, must be zero).
    pub const NAME_PAD: usize = LP_U + 10;
    /// `upload.size` (u64).
    pub const UPLOAD_SIZE: usize = LP_U + 16;
    /// `upload.payload` (guest handle).
    pub const UPLOAD_PAYLOAD: usize = LP_U + 24;
    /// `get.status.state` (u32).
    pub const GET_STATE: usize = LP_U + 16;
    /// `get.status.rc` (i32, `-XEN_Exx`).
    pub const GET_RC: usize = LP_U + 20;
    /// `action.cmd` (u32).
    pub const ACTION_CMD: usize = LP_U + 16;
    /// `action.timeout` (u32, ns; 0 = hypervisor default).
    pub const ACTION_TIMEOUT: usize = LP_U + 20;
    /// `action.flags` (u32).
    pub const ACTION_FLAGS: usize = LP_U + 24;
    /// `action.pad` (u32).
    pub const ACTION_PAD: usize = LP_U + 28;
    /// `list.version` (u32, out).
    pub const LIST_VERSION: usize = LP_U;
    /// `list.idx` (u32, in).
    pub const LIST_IDX: usize = LP_U + 4;
    /// `list.nr` (u32, in: entries wanted; out: entries remaining).
    pub const LIST_NR: usize = LP_U + 8;
    /// `list.pad` (u32).
    pub const LIST_PAD: usize = LP_U + 12;
    /// `list.name_total_size` (u32, out).
    pub const LIST_NAME_TOTAL: usize = LP_U + 16;
    /// `list.metadata_total_size` (u32, out).
    pub const LIST_METADATA_TOTAL: usize = LP_U + 20;
    /// `list.status` (handle to `xen_livepatch_status[nr]`, 8 bytes each).
    pub const LIST_STATUS: usize = LP_U + 24;
    /// `list.name` (handle to the concatenated NUL-terminated names).
    pub const LIST_NAME: usize = LP_U + 32;
    /// `list.len` (handle to `u32[nr]`, name lengths including NUL).
    pub const LIST_LEN: usize = LP_U + 40;
    /// `list.metadata` (handle to the concatenated metadata).
    pub const LIST_METADATA: usize = LP_U + 48;
    /// `list.metadata_len` (handle to `u32[nr]`).
    pub const LIST_METADATA_LEN: usize = LP_U + 56;
}

// Every sub-op fits the 128-byte union that starts at 8 (LIST is the largest).
const _: () = assert!(off::LIST_METADATA_LEN + 8 <= SYSCTL_SIZE);
const _: () = assert!(off::ACTION_PAD + 4 <= SYSCTL_SIZE);
const _: () = assert!(SYSCTL_SIZE == 8 + 128);

/// Human name of a payload state.
pub fn state_name(state: u32) -> &'static str {
    match state {
        STATE_CHECKED => "CHECKED",
        STATE_APPLIED => "APPLIED",
        _ => "UNKNOWN",
    }
}

/// Writes `v` little-endian at `off` (callers size buffers so it fits).
pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    if let Some(d) = off.checked_add(2).and_then(|e| buf.get_mut(off..e)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes `v` little-endian at `off`.
pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(d) = off.checked_add(4).and_then(|e| buf.get_mut(off..e)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes `v` little-endian at `off`.
pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    if let Some(d) = off.checked_add(8).and_then(|e| buf.get_mut(off..e)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Reads a little-endian u32 at `off` (0 when out of bounds).
pub(crate) fn get_u32(buf: &[u8], off: usize) -> u32 {
    off.checked_add(4)
        .and_then(|e| buf.get(off..e))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Reads a little-endian u64 at `off` (0 when out of bounds).
#[cfg(test)]
pub(crate) fn get_u64(buf: &[u8], off: usize) -> u64 {
    off.checked_add(8)
        .and_then(|e| buf.get(off..e))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_round_trip_and_bounds() {
        let mut b = [0u8; 16];
        put_u32(&mut b, 4, 0xdead_beef);
        put_u64(&mut b, 8, 0x0102_0304_0506_0708);
        put_u16(&mut b, 0, 0xabcd);
        assert_eq!(get_u32(&b, 4), 0xdead_beef);
        assert_eq!(get_u64(&b, 8), 0x0102_0304_0506_0708);
        assert_eq!(b[0..2], [0xcd, 0xab]);
        // Out of bounds: ignored on write, 0 on read; never a panic.
        put_u64(&mut b, 12, 1);
        assert_eq!(get_u64(&b, 12), 0);
        assert_eq!(get_u32(&b, usize::MAX - 2), 0);
    }
}
