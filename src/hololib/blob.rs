//! Blob codecs. rcc writes gzip (mainline), zstd (its zstd line of work) or
//! raw bytes (`compress.no`); readers tell them apart by magic bytes, and the
//! digest is always of the decoded content. A siphash128 digest means a
//! `compress.no` hololib, whose blobs are raw whatever their first bytes
//! (a `.gz` or `.zst` file stored raw starts with a codec's magic).

use crate::digest::DigestKind;
use crate::error::{Error, Result};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zstd,
    Raw,
}

impl Codec {
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::Raw
        }
    }

    /// The codec of the stored blob with this digest: rcc uses siphash128
    /// digests (32 hex) only in `compress.no` hololibs, which store every
    /// blob raw, so those are never decoded; other blobs are sniffed.
    pub fn of_blob(digest: &str, head: &[u8]) -> Codec {
        if DigestKind::from_hex_len(digest.len()) == Some(DigestKind::Sip128) {
            Codec::Raw
        } else {
            Codec::sniff(head)
        }
    }
}

/// A reader of the decoded content of `reader`, whose codec is sniffed.
pub fn decoder<'a, R: Read + Seek + 'a>(reader: R) -> io::Result<(Codec, Box<dyn Read + 'a>)> {
    decoder_of(reader, None)
}

/// `decoder` for the blob with `digest` (see [`Codec::of_blob`]).
fn decoder_of<'a, R: Read + Seek + 'a>(
    mut reader: R,
    digest: Option<&str>,
) -> io::Result<(Codec, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    reader.seek(SeekFrom::Start(0))?;
    let codec = match digest {
        Some(d) => Codec::of_blob(d, &head[..n]),
        None => Codec::sniff(&head[..n]),
    };
    let r: Box<dyn Read> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            128 * 1024,
            reader,
        ))),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        Codec::Raw => Box::new(reader),
    };
    Ok((codec, r))
}

/// Decode a whole in-memory blob (catalogs, small files).
pub fn decode_all(raw: &[u8]) -> io::Result<Vec<u8>> {
    let (_, mut r) = decoder(io::Cursor::new(raw))?;
    let mut out = Vec::with_capacity(raw.len() * 4);
    r.read_to_end(&mut out)?;
    Ok(out)
}

/// Stream the decoded content of the blob at `path` into `sink`, checking
/// that it hashes to `digest`. Returns the decoded length. On a mismatch
/// the sink has received wrong bytes: callers write to a temp file and
/// only rename it into place on success.
pub fn copy_verified(path: &Path, digest: &str, sink: &mut dyn Write) -> Result<u64> {
    let kind = DigestKind::from_hex_len(digest.len())
        .ok_or_else(|| Error::blob(digest, path, "digest is neither sha256 nor siphash128 hex"))?;
    let file = open_blob_file(path, digest)?;
    let (_, mut r) =
        decoder_of(file, Some(digest)).map_err(|e| Error::blob(digest, path, e.to_string()))?;
    let mut hasher = kind.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::blob(digest, path, format!("cannot decode: {e}"))),
        };
        hasher.update(&buf[..n]);
        sink.write_all(&buf[..n])
            .map_err(|e| Error::blob(digest, path, format!("cannot write decoded content: {e}")))?;
        total += n as u64;
    }
    let got = hasher.finish_hex();
    if got != digest {
        return Err(Error::blob(
            digest,
            path,
            format!("content hashes to {got}"),
        ));
    }
    Ok(total)
}

/// Decode and verify a blob into memory.
pub fn read_verified(path: &Path, digest: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    copy_verified(path, digest, &mut out)?;
    Ok(out)
}

/// Open a blob, refusing anything that is not a regular file (a symlink or
/// directory planted in the library is never followed).
pub fn open_blob_file(path: &Path, digest: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO planted in the library would wait
        // for a writer forever (it is refused below as not a file).
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            let msg = match e.raw_os_error() {
                Some(libc::ELOOP) => "is a symlink, refused".to_string(),
                Some(libc::ENOENT) => "missing".to_string(),
                // Out of descriptors or memory says nothing about the
                // blob: keep it an I/O error the caller can tell apart.
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR) => {
                    return Error::Io {
                        path: path.to_path_buf(),
                        source: e,
                    }
                }
                _ => e.to_string(),
            };
            Error::blob(digest, path, msg)
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::blob(digest, path, e.to_string()))?;
    if !meta.is_file() {
        return Err(Error::blob(digest, path, "not a regular file"));
    }
    clear_nonblock(&file).map_err(|e| Error::blob(digest, path, e.to_string()))?;
    Ok(file)
}

/// Fill `buf` from the start of `file` with positioned reads (the file's
/// offset, which other descriptors of it may share, is not moved): how
/// many bytes, fewer at the end of the file.
pub fn read_head(file: &std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Back to blocking reads once the file is known to be regular (the file
/// may be handed to the kernel as a FUSE passthrough backing file).
pub fn clear_nonblock(file: &std::fs::File) -> std::io::Result<()> {
    nix::fcntl::fcntl(
        file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8]), Codec::Gzip);
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Codec::Zstd);
        assert_eq!(Codec::sniff(b"#!/bin"), Codec::Raw);
        assert_eq!(Codec::sniff(b""), Codec::Raw);
        let sip = "0".repeat(32);
        let sha = "0".repeat(64);
        assert_eq!(Codec::of_blob(&sip, &[0x1f, 0x8b, 8]), Codec::Raw);
        assert_eq!(Codec::of_blob(&sip, &[0x28, 0xb5, 0x2f, 0xfd]), Codec::Raw);
        assert_eq!(Codec::of_blob(&sha, &[0x1f, 0x8b, 8]), Codec::Gzip);
    }

    #[test]
    fn raw_blob_of_a_gzip_file_is_not_decoded() {
        // A `.json.gz` in a compress.no hololib: stored as is, named by the
        // siphash128 of those (gzip) bytes.
        let gz = crate::hololib::catalog::gzip_bytes(b"{\"a\": 1}");
        let digest = DigestKind::Sip128.digest(&gz);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, &gz).unwrap();
        assert_eq!(read_verified(&path, &digest).unwrap(), gz);
    }

    #[test]
    fn all_codecs_decode() {
        let data = b"hello hololib".repeat(100);
        let gz = crate::hololib::catalog::gzip_bytes(&data);
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(decode_all(&gz).unwrap(), data);
        assert_eq!(decode_all(&zs).unwrap(), data);
        assert_eq!(decode_all(&data).unwrap(), data);
    }
}
