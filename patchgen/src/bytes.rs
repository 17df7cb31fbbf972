//! A checked little-endian cursor over file bytes, in the manner of
//! `object::read::Bytes`: every offset and length that comes from a file is
//! a `u64` checked against the buffer before it is used, so a hostile value
//! gives an [`OutOfBounds`] error — never a wrapped sum, a panic or a read
//! of the wrong bytes.
//!
//! Model: [`Bytes`] is a view of a byte slice that shrinks from the front as
//! it is read ([`Bytes::skip`], [`Bytes::read_u16`], ...); [`Bytes::at`] and
//! [`Bytes::range`] give a view at an absolute offset without moving.
//! [`write_at`] is the one checked write into a mutable image.
//!
//! Invariants: no method panics or wraps; every failure says at which
//! offset, for how many bytes, and how many were there.

use std::fmt;

/// A read or write outside the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Offset of the access, from the start of the view it was made on.
    pub offset: u64,
    /// Bytes wanted.
    pub len: u64,
    /// Bytes there were.
    pub size: u64,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes at offset {:#x} lie outside the {} bytes there are",
            self.len, self.offset, self.size
        )
    }
}

impl std::error::Error for OutOfBounds {}

/// The bytes `[offset, offset + len)` of `data`, checked.
fn slice(data: &[u8], offset: u64, len: u64) -> Result<std::ops::Range<usize>, OutOfBounds> {
    let oob = OutOfBounds {
        offset,
        len,
        size: data.len() as u64,
    };
    let end = offset.checked_add(len).ok_or(oob)?;
    if end > data.len() as u64 {
        return Err(oob);
    }
    // Both fit: they are at most data.len(), a usize.
    let (start, end) = (
        usize::try_from(offset).map_err(|_| oob)?,
        usize::try_from(end).map_err(|_| oob)?,
    );
    Ok(start..end)
}

/// A little-endian cursor over `&[u8]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    /// The remaining bytes.
    pub fn data(&self) -> &'a [u8] {
        self.0
    }

    /// How many bytes remain.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Whether no byte remains.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The view of `len` bytes at `offset`, without moving.
    pub fn range(&self, offset: u64, len: u64) -> Result<Bytes<'a>, OutOfBounds> {
        Ok(Bytes(&self.0[slice(self.0, offset, len)?]))
    }

    /// The view from `offset` to the end, without moving.
    pub fn at(&self, offset: u64) -> Result<Bytes<'a>, OutOfBounds> {
        let len = self.len().checked_sub(offset).ok_or(OutOfBounds {
            offset,
            len: 0,
            size: self.len(),
        })?;
        self.range(offset, len)
    }

    /// Takes the next `len` bytes.
    pub fn read_bytes(&mut self, len: u64) -> Result<Bytes<'a>, OutOfBounds> {
        let head = self.range(0, len)?;
        self.0 = &self.0[head.0.len()..];
        Ok(head)
    }

    /// Skips `len` bytes.
    pub fn skip(&mut self, len: u64) -> Result<(), OutOfBounds> {
        self.read_bytes(len).map(|_| ())
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], OutOfBounds> {
        let b = self.read_bytes(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b.0);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn read_u8(&mut self) -> Result<u8, OutOfBounds> {
        Ok(self.read_array::<1>()?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn read_u16(&mut self) -> Result<u16, OutOfBounds> {
        Ok(u16::from_le_bytes(self.read_array()?))
    }

    /// Reads a little-endian `u32`.
    pub fn read_u32(&mut self) -> Result<u32, OutOfBounds> {
        Ok(u32::from_le_bytes(self.read_array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn read_u64(&mut self) -> Result<u64, OutOfBounds> {
        Ok(u64::from_le_bytes(self.read_array()?))
    }

    /// Splits the remaining bytes into records of `size` bytes; a trailing
    /// partial record is an error (a table whose size is not a multiple of
    /// its entry size is malformed).
    pub fn records(self, size: u64) -> Result<impl Iterator<Item = Bytes<'a>> + 'a, OutOfBounds> {
        let bad = OutOfBounds {
            offset: self.len() - self.len() % size.max(1),
            len: size,
            size: self.len(),
        };
        if size == 0 || !self.len().is_multiple_of(size) {
            return Err(bad);
        }
        let n = usize::try_from(size).map_err(|_| bad)?;
        Ok(self.0.chunks_exact(n).map(Bytes))
    }
}

/// Writes `value` into `image` at `offset`, checked.
pub fn write_at(image: &mut [u8], offset: u64, value: &[u8]) -> Result<(), OutOfBounds> {
    let r = slice(image, offset, value.len() as u64)?;
    image[r].copy_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_moves() {
        let mut b = Bytes(&[1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(b.read_u16(), Ok(1));
        assert_eq!(b.read_u32(), Ok(2));
        assert_eq!(b.read_u64(), Ok(3));
        assert_eq!(b.read_u8(), Ok(9));
        assert!(b.is_empty());
        assert!(b.read_u8().is_err());
    }

    #[test]
    fn hostile_offsets_are_errors() {
        let b = Bytes(&[0u8; 16]);
        assert!(b.range(u64::MAX, 2).is_err());
        assert!(b.range(8, u64::MAX).is_err());
        assert!(b.range(16, 1).is_err());
        assert_eq!(b.range(16, 0).map(|v| v.len()), Ok(0));
        assert!(b.at(17).is_err());
        let mut img = [0u8; 4];
        assert!(write_at(&mut img, u64::MAX - 1, &[1, 2, 3]).is_err());
        assert!(write_at(&mut img, 2, &[1, 2, 3]).is_err());
        assert_eq!(write_at(&mut img, 1, &[1, 2, 3]), Ok(()));
        assert_eq!(img, [0, 1, 2, 3]);
    }

    #[test]
    fn records_need_whole_entries() {
        let b = Bytes(&[0u8; 130]);
        assert!(b.records(64).is_err());
        assert!(b.records(0).is_err());
        assert_eq!(
            b.range(0, 128)
                .and_then(|v| v.records(64))
                .map(|r| r.count()),
            Ok(2)
        );
    }
}
