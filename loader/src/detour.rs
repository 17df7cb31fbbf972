//! The in-target switch used when a patch's entry sites lie on more than one
//! page: per replaced function a *detour* (the entry instructions the new
//! entry bytes displace, relocated, then a jump back after them) and an
//! 8-byte *slot*; the old entry becomes `jmp *slot(%rip)` (`ff 25 rel32`).
//!
//! Model: all slots of a patch live in ONE page of the patch mapping (the
//! registry page, at [`SLOT_OFF`]). A slot holding its detour's address makes
//! the redirected entry behave exactly like the original function; a slot
//! holding the new function's address switches the function. Entries are
//! written while the slots point at the detours, so every intermediate state
//! runs only old code; then one write of the slot range — a single page —
//! switches every function at once. That write is the commit point, and a
//! `/proc/PID/mem` write of one page cannot be split by a kill of the writer.
//!
//! Invariants: a detour is built only from instructions the iced-x86 block
//! encoder can relocate (rip-relative operands and relative branches are
//! re-targeted; anything out of range is refused); decoding stops after an
//! unconditional transfer (a previous patch's jump, a `ret`), whose following
//! bytes never run from the entry; a function with a branch whose target lies
//! inside the displaced bytes is refused (that branch would land inside the
//! new `jmp`), checked on the function's own code from the file.

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction,
    InstructionBlock, OpKind,
};

/// Offset of the first slot in the patch mapping (the registry page; the
/// registry header takes the first 40 bytes).
pub const SLOT_OFF: u64 = 64;
/// Most slots one page holds.
pub const MAX_SLOTS: u64 = (crate::mem::PAGE - SLOT_OFF) / 8;
/// Bytes reserved per detour in the code region.
pub const DETOUR_LEN: u64 = 64;
/// Length of `jmp *rel32(%rip)`.
pub const JUMP_LEN: usize = 6;

/// `jmp *slot(%rip)` at `site`, or `None` if the slot is out of range.
pub fn indirect_jump(site: u64, slot: u64) -> Option<[u8; JUMP_LEN]> {
    let rel = (slot as i64).wrapping_sub(site as i64 + JUMP_LEN as i64);
    let r = i32::try_from(rel).ok()?.to_le_bytes();
    Some([0xff, 0x25, r[0], r[1], r[2], r[3]])
}

/// The slot a `jmp *rel32(%rip)` at `site` reads, if `bytes` is one.
pub fn slot_of(site: u64, bytes: &[u8]) -> Option<u64> {
    let [0xff, 0x25, a, b, c, d] = *bytes.get(..JUMP_LEN)? else {
        return None;
    };
    let rel = i32::from_le_bytes([a, b, c, d]) as i64;
    Some((site as i64 + JUMP_LEN as i64 + rel) as u64)
}

/// Builds the detour at `at` for the entry whose live bytes from `site` are
/// `live` (at least [`JUMP_LEN`] + 15 bytes, or the whole rest of the
/// function). Returns the detour's code and how many entry bytes it replays.
pub fn build(live: &[u8], site: u64, at: u64) -> Result<(Vec<u8>, usize), String> {
    let mut dec = Decoder::with_ip(64, live, site, DecoderOptions::NONE);
    let mut instrs: Vec<Instruction> = Vec::new();
    let mut covered = 0usize;
    let mut falls_through = true;
    while covered < JUMP_LEN {
        if !dec.can_decode() {
            return Err(format!(
                "its first {covered} bytes end the function before the {JUMP_LEN} bytes the entry jump needs"
            ));
        }
        let i = dec.decode();
        if i.is_invalid() {
            return Err(format!(
                "byte {covered} of the entry does not decode as an instruction"
            ));
        }
        covered += i.len();
        instrs.push(i);
        if matches!(
            i.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::IndirectBranch | FlowControl::Return
        ) {
            falls_through = false;
            break;
        }
    }
    if falls_through {
        let back = Instruction::with_branch(Code::Jmp_rel32_64, site + covered as u64)
            .map_err(|e| format!("cannot encode the jump back: {e}"))?;
        instrs.push(back);
    }
    let block = InstructionBlock::new(&instrs, at);
    let out = BlockEncoder::encode(64, block, BlockEncoderOptions::NONE)
        .map_err(|e| format!("its first {covered} bytes cannot be relocated into a detour: {e}"))?;
    if out.code_buffer.len() as u64 > DETOUR_LEN {
        return Err(format!(
            "its relocated entry takes {} bytes, more than the {DETOUR_LEN} reserved",
            out.code_buffer.len()
        ));
    }
    Ok((out.code_buffer, covered.max(JUMP_LEN)))
}

/// A direct branch of the function (`code` at `addr`) whose target lies in
/// `(lo, hi)`: (branch address, target).
pub fn branch_into(code: &[u8], addr: u64, lo: u64, hi: u64) -> Option<(u64, u64)> {
    let mut dec = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    while dec.can_decode() {
        let i = dec.decode();
        if i.is_invalid() {
            continue;
        }
        if matches!(
            i.op0_kind(),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        ) {
            let t = i.near_branch_target();
            if t > lo && t < hi {
                return Some((i.ip(), t));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn indirect_jump_round_trip() {
        let j = indirect_jump(0x1000, 0x9000).unwrap();
        assert_eq!(&j[..2], &[0xff, 0x25]);
        assert_eq!(slot_of(0x1000, &j), Some(0x9000));
        assert_eq!(indirect_jump(0, 1 << 40), None);
        assert_eq!(slot_of(0x1000, &[0xe9, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn detour_relocates_and_jumps_back() {
        // push rbp; mov rbp,rsp; lea rax,[rip+0x100]; ...
        let live = [
            0x55, 0x48, 0x89, 0xe5, 0x48, 0x8d, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3,
        ];
        let (code, n) = build(&live, 0x40_0000, 0x50_0000).unwrap();
        assert_eq!(n, 11);
        // Decode the detour: the lea still addresses 0x400000 + 11 + 0x100.
        let mut d = Decoder::with_ip(64, &code, 0x50_0000, DecoderOptions::NONE);
        let v: Vec<Instruction> = d.iter().collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2].memory_displacement64(), 0x40_0000 + 11 + 0x100);
        assert_eq!(v[3].near_branch_target(), 0x40_0000 + 11);
    }

    #[test]
    fn detour_of_a_previous_jump_stops_there() {
        let mut live = vec![0xe9, 0x00, 0x10, 0x00, 0x00];
        live.extend([0x8b, 0x05, 0xff]); // garbage tail of a broken instruction
        let (code, n) = build(&live, 0x40_0000, 0x40_2000).unwrap();
        assert_eq!(n, 6);
        let mut d = Decoder::with_ip(64, &code, 0x40_2000, DecoderOptions::NONE);
        let v: Vec<Instruction> = d.iter().collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].near_branch_target(), 0x40_0000 + 5 + 0x1000);
    }

    #[test]
    fn too_short_and_branch_inside_are_refused() {
        assert!(build(&[0x31, 0xc0, 0x90], 0x1000, 0x2000).is_err());
        // xor eax,eax; test edi,edi; je -> +2 (inside the first 6 bytes)
        let code = [0x31, 0xc0, 0x85, 0xff, 0x74, 0xfc, 0xc3];
        assert_eq!(
            branch_into(&code, 0x1000, 0x1000, 0x1006),
            Some((0x1004, 0x1002))
        );
        assert_eq!(branch_into(&code, 0x1000, 0x1002, 0x1006), None);
    }
}
