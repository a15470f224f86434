//! Relocation: rcc moves an environment by overwriting the stage identity
//! (the basename of the catalog's `path`) at each recorded `rewrite` offset
//! with the target directory's basename, which has the same length.
//!
//! This module applies offsets. Finding them at lift time (rcc's scanner,
//! quirks included) lives beside it as `locate`.

use std::io;
use std::os::unix::fs::FileExt;

/// Why a relocation cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum RelocateError {
    #[error("target name {target:?} has {} bytes, the identity {identity:?} has {}", target.len(), identity.len())]
    LengthMismatch { target: String, identity: String },
    #[error("rewrite offset {offset} is outside the file ({size} bytes)")]
    OutOfRange { offset: i64, size: u64 },
}

/// Check that `target` can replace `identity` in place.
pub fn check_names(identity: &str, target: &str) -> Result<(), RelocateError> {
    if identity.len() != target.len() {
        return Err(RelocateError::LengthMismatch {
            target: target.to_string(),
            identity: identity.to_string(),
        });
    }
    Ok(())
}

/// Validate every offset against the content size before writing anything.
pub fn check_offsets(offsets: &[i64], name_len: usize, size: u64) -> Result<(), RelocateError> {
    for &offset in offsets {
        if offset < 0 || (offset as u64).saturating_add(name_len as u64) > size {
            return Err(RelocateError::OutOfRange { offset, size });
        }
    }
    Ok(())
}

/// Overwrite `name` at each offset of an in-memory content.
pub fn patch_slice(buf: &mut [u8], offsets: &[i64], name: &[u8]) -> Result<(), RelocateError> {
    check_offsets(offsets, name.len(), buf.len() as u64)?;
    for &offset in offsets {
        let o = offset as usize;
        buf[o..o + name.len()].copy_from_slice(name);
    }
    Ok(())
}

/// Overwrite `name` at each offset of a file of `size` bytes (pwrite, so
/// the file position is untouched).
pub fn patch_file(file: &std::fs::File, size: u64, offsets: &[i64], name: &[u8]) -> io::Result<()> {
    check_offsets(offsets, name.len(), size)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    for &offset in offsets {
        file.write_all_at(name, offset as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_and_bounds() {
        let mut b = b"xxABCxxABC".to_vec();
        patch_slice(&mut b, &[2, 7], b"abc").unwrap();
        assert_eq!(b, b"xxabcxxabc");
        assert!(patch_slice(&mut b, &[8], b"abc").is_err());
        assert!(patch_slice(&mut b, &[-1], b"abc").is_err());
        assert!(check_names("h59acff1_493f813dad24d3t", "short").is_err());
    }
}
