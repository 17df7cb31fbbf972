//! Entry trampolines: the 5-byte `jmp rel32` written at an old function's
//! entry (after its `endbr64`, when present, so indirect-branch tracking
//! still finds a landing pad) and the expected-bytes checks that guard it.
//!
//! Invariants: the jump is encoded only when the displacement fits; the
//! bytes it will overwrite are compared with what the patch expects (the
//! function as compiled, masked where the compiler left relocations; the
//! bytes of the file on disk; then the live bytes, which must equal the file
//! or, when stacking, the previous patch's jump). Any difference is a target
//! mismatch and nothing is written.

/// `endbr64`.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// Offset of the jump site from the function entry.
pub fn site_offset(entry: &[u8]) -> u64 {
    if entry.starts_with(&ENDBR64) { 4 } else { 0 }
}

/// Encodes `jmp rel32` at `site` to `target`, or `None` if out of range.
pub fn jump(site: u64, target: u64) -> Option<[u8; 5]> {
    let rel = (target as i64).wrapping_sub(site as i64 + 5);
    let rel = i32::try_from(rel).ok()?;
    let r = rel.to_le_bytes();
    Some([0xe9, r[0], r[1], r[2], r[3]])
}

/// The destination of a `jmp rel32` at `site`, if `bytes` is one.
pub fn jump_target(site: u64, bytes: &[u8]) -> Option<u64> {
    let [0xe9, a, b, c, d] = *bytes.get(..5)? else {
        return None;
    };
    let rel = i32::from_le_bytes([a, b, c, d]) as i64;
    Some((site as i64 + 5 + rel) as u64)
}

/// Compares the expected bytes (with mask) of a function with the bytes of
/// the file; `Err` describes the first difference.
pub fn check_expected(expected: &[u8], mask: &[u8], file: &[u8]) -> Result<(), String> {
    if file.len() < expected.len() {
        return Err(format!(
            "function is shorter ({} bytes) than the expected bytes ({})",
            file.len(),
            expected.len()
        ));
    }
    for (i, ((e, m), f)) in expected.iter().zip(mask).zip(file).enumerate() {
        if e & m != f & m {
            return Err(format!(
                "byte {i} is {f:#04x} in the file, the patch expects {e:#04x}: the patch was made for another build"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_round_trip() {
        let j = jump(0x1000, 0x2000).unwrap_or_default();
        assert_eq!(j[0], 0xe9);
        assert_eq!(jump_target(0x1000, &j), Some(0x2000));
        assert_eq!(jump(0, 1 << 40), None);
        assert_eq!(jump_target(0x1000, &[0x90; 5]), None);
    }

    #[test]
    fn expected_mask() {
        assert!(check_expected(&[1, 2, 3], &[0xff, 0, 0xff], &[1, 9, 3]).is_ok());
        assert!(check_expected(&[1, 2, 3], &[0xff, 0xff, 0xff], &[1, 9, 3]).is_err());
        assert!(check_expected(&[1, 2, 3], &[0xff; 3], &[1, 2]).is_err());
        assert_eq!(site_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]), 4);
        assert_eq!(site_offset(&[0x55]), 0);
    }
}
