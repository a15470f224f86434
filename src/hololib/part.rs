//! Files written next to their final name and renamed into place once
//! complete, as rcc does (`<name>.part#<n>`), so no reader ever sees half a
//! blob, catalog or restored file.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// `<sink>.part#<n>` with a process-wide counter (rcc's `common.Identities`).
pub fn part_path(sink: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = sink.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part#{n}"));
    sink.with_file_name(name)
}

/// A temp file that disappears unless `commit` renames it into place.
pub struct PartFile {
    path: PathBuf,
    file: Option<File>,
}

impl PartFile {
    /// Create a fresh part file for `sink` (never follows or reuses an
    /// existing path). `mode` is the creation mode (umask applies).
    pub fn create(sink: &Path, mode: u32) -> Result<PartFile> {
        // Another process (rcc or vhrun) may be using the same counter
        // value: take the next one instead of sharing its file.
        let mut attempts = 0;
        loop {
            let path = part_path(sink);
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path);
            match opened {
                Ok(file) => {
                    return Ok(PartFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 64 => {
                    attempts += 1
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("part file is open until commit")
    }

    /// Close and rename over `sink`.
    pub fn commit(mut self, sink: &Path) -> Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.path, sink).map_err(|e| {
            Error::io(
                sink,
                std::io::Error::new(
                    e.kind(),
                    format!("cannot rename {} into place: {e}", self.path.display()),
                ),
            )
        })?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Write `data` to `sink` through a part file.
pub fn write_via_part(sink: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut part = PartFile::create(sink, mode)?;
    let p = part.path().to_path_buf();
    part.file().write_all(data).at(&p)?;
    part.commit(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_files_vanish_unless_committed() {
        let t = tempfile::tempdir().unwrap();
        let sink = t.path().join("blob");
        let p = PartFile::create(&sink, 0o644).unwrap();
        let part = p.path().to_path_buf();
        assert!(part.to_string_lossy().contains(".part#"));
        drop(p);
        assert!(!part.exists());
        write_via_part(&sink, b"x", 0o644).unwrap();
        assert_eq!(std::fs::read(&sink).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
