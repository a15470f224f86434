//! A read-only, private mapping of a whole file, as a byte slice.
//!
//! Used for vhrun's own tree indexes: they are written once (temp file +
//! rename) and never modified in place, so the bytes under the mapping do
//! not change while it lives (a file truncated by someone else would raise
//! SIGBUS on access, as for any mapped file). Mapping instead of reading
//! skips copying the ~1.6 MB index of a 12k-file catalog into fresh heap
//! pages on every run.

use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

pub struct MappedFile {
    ptr: Option<NonNull<libc::c_void>>,
    len: usize,
}

// The mapping is read-only and owned: sharing it between threads is sharing
// a `&[u8]`.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Map `file` (its current length) read-only.
    pub fn map(file: &File) -> std::io::Result<MappedFile> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large to map"))?;
        let Some(nz) = NonZeroUsize::new(len) else {
            return Ok(MappedFile { ptr: None, len: 0 });
        };
        // SAFETY: a fresh private read-only mapping of a file we hold open;
        // no existing memory is affected. See the module doc for why the
        // contents stay put.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                nz,
                nix::sys::mman::ProtFlags::PROT_READ,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(MappedFile {
            ptr: Some(ptr),
            len,
        })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `ptr` maps `len` readable bytes until `drop`.
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr() as *const u8, self.len) },
            None => &[],
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Some(p) = self.ptr {
            // SAFETY: unmapping our own mapping once; no slice outlives self.
            let _ = unsafe { nix::sys::mman::munmap(p, self.len) };
        }
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedFile({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_contents_and_empty_files() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"hello index").unwrap();
        let m = MappedFile::map(f.as_file()).unwrap();
        assert_eq!(&m[..], b"hello index");
        let e = tempfile::NamedTempFile::new().unwrap();
        assert!(MappedFile::map(e.as_file()).unwrap().is_empty());
    }
}
