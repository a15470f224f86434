//! A read-only, private mapping of a whole file, as a byte slice, for
//! vhrun's own immutable files (the tree indexes). Mapping instead of
//! reading skips copying the ~1.6 MB index of a 12k-file catalog into
//! fresh heap pages on every run (about 1.5 ms).
//!
//! A `&[u8]` over a mapping is only sound while the file's bytes do not
//! change: Rust assumes the memory behind a shared slice is immutable, and
//! with `MAP_PRIVATE` Linux still shows later writes to the file in pages
//! not yet copied; a truncation makes access raise SIGBUS. So the mapping
//! itself is a private `unsafe fn`, and the safe API is
//! [`MappedFile::open_immutable`] over files written with
//! `crate::paths::write_atomic(path, data, 0o444)`, which establishes that
//! nothing writes the file while it is mapped:
//!
//! - vhrun never writes such a file in place: `write_atomic` fills a
//!   fresh temporary file (mode 0444) and renames it over the old name. A
//!   rename or an unlink changes the directory entry, not the mapped inode,
//!   and no descriptor open for writing outlives the rename.
//! - [`MappedFile::open_immutable`] maps only a regular file with no write
//!   permission bits, owned by this process's effective user or by root:
//!   what `write_atomic` made. Anyone else needs to change the mode
//!   first to write it (`EACCES`).
//! - A task vhrun runs sees the directory of these files read-only (the
//!   index is one of the sandbox's read-only paths): it cannot write them.
//!
//! What is left is a process of the same user that first makes the file
//! writable, or root overriding permissions, deliberately rewriting a
//! vhrun cache file in place while vhrun runs; such a process can as well
//! ptrace vhrun or write `/proc/<pid>/mem`, which Rust's soundness
//! guarantees do not cover either.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;

pub struct MappedFile {
    ptr: Option<NonNull<libc::c_void>>,
    len: usize,
}

// SAFETY: the mapping is read-only, owned, and only ever exposed as a
// `&[u8]`; sending or sharing it between threads is sending or sharing a
// `&[u8]`, which is `Send` and `Sync`.
unsafe impl Send for MappedFile {}
// SAFETY: as for `Send` above.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Map the file at `path` read-only, if it is one `paths::write_atomic`
    /// wrote with mode 0444: a regular file without write permission for anyone, owned by
    /// this process's effective user or by root. See the module doc for why
    /// its bytes stay put while mapped; any other file is refused
    /// (`PermissionDenied`: read it instead).
    pub fn open_immutable(path: &Path) -> std::io::Result<MappedFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        // The checks are on the open descriptor: what is mapped is what
        // was checked, whatever the name points at by then.
        let meta = file.metadata()?;
        let owner = meta.uid();
        if !meta.file_type().is_file()
            || meta.mode() & 0o222 != 0
            || (owner != 0 && owner != nix::unistd::geteuid().as_raw())
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not a read-only file of this user: not mapped",
            ));
        }
        // SAFETY: the file is one nothing writes while it is mapped (the
        // checks above and the module doc).
        unsafe { Self::map(&file) }
    }

    /// Map `file` (its current length) read-only.
    ///
    /// # Safety
    ///
    /// Until the returned mapping is dropped, nothing may modify or
    /// truncate the file: the mapping is handed out as an immutable `&[u8]`.
    unsafe fn map(file: &File) -> std::io::Result<MappedFile> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large to map"))?;
        let Some(nz) = NonZeroUsize::new(len) else {
            return Ok(MappedFile { ptr: None, len: 0 });
        };
        // SAFETY: a fresh private read-only mapping of a file we hold open;
        // no existing memory is affected. That its contents stay put is the
        // caller's promise.
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
            // SAFETY: `ptr` maps `len` readable bytes until `drop`, and
            // `map`'s contract keeps them unchanged.
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn maps_contents_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        crate::paths::write_atomic(&path, b"hello index", 0o444).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let m = MappedFile::open_immutable(&path).unwrap();
        assert_eq!(&m[..], b"hello index");
        // Replaced, not rewritten: the old mapping keeps the old bytes.
        crate::paths::write_atomic(&path, b"another", 0o444).unwrap();
        assert_eq!(&m[..], b"hello index");
        assert_eq!(&MappedFile::open_immutable(&path).unwrap()[..], b"another");
        crate::paths::write_atomic(&path, b"", 0o444).unwrap();
        assert!(MappedFile::open_immutable(&path).unwrap().is_empty());
    }

    #[test]
    fn writable_files_are_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        std::fs::write(&path, b"data").unwrap();
        let e = MappedFile::open_immutable(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(MappedFile::open_immutable(dir.path()).is_err());
    }
}
