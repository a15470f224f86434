//! Relocation: rcc moves an environment by overwriting the stage identity
//! (the basename of the catalog's `path`) at each recorded `rewrite` offset
//! with the target directory's basename, which has the same length.
//!
//! This module applies offsets. Finding them at lift time (rcc's scanner,
//! quirks included) lives beside it as `locate`.

use std::io;
use std::os::unix::fs::FileExt;

/// rcc's scanner sees the file through `io.Copy`, i.e. in 32 KiB writes; its
/// quirks depend on where those writes end.
pub const CHUNK: usize = 32 * 1024;

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

/// Rewrite offsets of `needle` in `data` exactly as rcc's lift records them
/// (htfs/relocator.go `RelocateWriter` fed by `io.Copy`), quirks included:
/// an occurrence ending exactly on a 32 KiB write boundary with more data
/// after it is reported twice (once only if the byte before it is the
/// needle's last byte), and an occurrence that ends the file is missed when
/// it starts the file or follows that byte.
///
/// Fast path (memmem) when the needle's last byte occurs nowhere else in it,
/// which holds for every rcc identity (`h…_…t`); otherwise the literal port.
pub fn locate(data: &[u8], needle: &[u8]) -> Vec<i64> {
    let limit = needle.len();
    if limit == 0 {
        return Vec::new();
    }
    let trigger = needle[limit - 1];
    if needle[..limit - 1].contains(&trigger) || CHUNK <= limit {
        return locate_literal(data, needle);
    }
    let n = data.len();
    let mut found = Vec::new();
    for start in memchr::memmem::find_iter(data, needle) {
        let end = start + limit;
        let clean = start > 0 && data[start - 1] != trigger;
        if end == n {
            if clean {
                found.push(start as i64);
            }
        } else if end.is_multiple_of(CHUNK) {
            if clean {
                found.push(start as i64);
            }
            found.push(start as i64);
        } else {
            found.push(start as i64);
        }
    }
    found
}

/// Literal port of rcc's `RelocateWriter` over 32 KiB writes: the reference
/// `locate` is tested against.
pub fn locate_literal(data: &[u8], needle: &[u8]) -> Vec<i64> {
    let mut w = RelocateWriter::new(needle);
    for chunk in data.chunks(CHUNK) {
        w.write(chunk);
    }
    w.found
}

/// rcc's `RelocateWriter`: one `write` per `io.Copy` buffer.
struct RelocateWriter {
    needle: Vec<u8>,
    window: Vec<u8>,
    history: i64,
    found: Vec<i64>,
}

impl RelocateWriter {
    fn new(needle: &[u8]) -> Self {
        RelocateWriter {
            needle: needle.to_vec(),
            window: Vec::with_capacity(CHUNK + needle.len()),
            history: 0,
            found: Vec::new(),
        }
    }

    fn write(&mut self, payload: &[u8]) {
        let limit = self.needle.len();
        if limit == 0 {
            return;
        }
        let trigger = self.needle[limit - 1];
        let pending = self.window.len() as i64;
        self.window.extend_from_slice(payload);
        let mut shift = 0i64;
        let mut view: &[u8] = &self.window;
        while limit < view.len() {
            let Some(at) = memchr::memchr(trigger, view) else {
                break;
            };
            let head = &view[..at + 1];
            view = &view[at + 1..];
            let end = shift + at as i64 + 1 - pending;
            let start = end - limit as i64;
            if limit <= head.len() && head[head.len() - limit..] == self.needle[..] {
                self.found.push(self.history + start);
            }
            shift += head.len() as i64;
        }
        self.history += payload.len() as i64;
        if self.window.len() > limit {
            let cut = self.window.len() - limit;
            self.window.drain(..cut);
        }
    }
}

/// Streaming form of [`locate`] for contents read piecewise (files too big to
/// hold in memory): feed any slices with `update`, then `finish`. The result
/// is the same as `locate` over the concatenation, because the input is
/// re-cut into rcc's 32 KiB writes here.
pub struct Locator {
    inner: RelocateWriter,
    buf: Vec<u8>,
}

impl Locator {
    pub fn new(needle: &[u8]) -> Self {
        Locator {
            inner: RelocateWriter::new(needle),
            buf: Vec::with_capacity(CHUNK),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.buf.is_empty() {
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < CHUNK {
                return;
            }
            let full = std::mem::take(&mut self.buf);
            self.inner.write(&full);
            self.buf = full;
            self.buf.clear();
        }
        let whole = data.len() - data.len() % CHUNK;
        for chunk in data[..whole].chunks(CHUNK) {
            self.inner.write(chunk);
        }
        self.buf.extend_from_slice(&data[whole..]);
    }

    pub fn finish(mut self) -> Vec<i64> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.inner.write(&rest);
        }
        self.inner.found
    }
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

    const ID: &[u8] = b"hbe7c0de_0123456789abcdt";

    fn planted(size: usize, spots: &[(usize, bool)]) -> Vec<u8> {
        let mut buf: Vec<u8> = (0..size).map(|i| b"_0123456789abcdefx/"[i % 19]).collect();
        for &(s, t_before) in spots {
            buf[s..s + ID.len()].copy_from_slice(ID);
            if t_before && s > 0 {
                buf[s - 1] = b't';
            }
        }
        buf
    }

    #[test]
    fn rcc_quirks() {
        let w = ID.len();
        // whole file == identity: missed
        assert_eq!(locate(ID, ID), Vec::<i64>::new());
        assert_eq!(locate_literal(ID, ID), Vec::<i64>::new());
        // tail match after the trigger byte: missed; after another byte: found
        let d = planted(100, &[(100 - w, true)]);
        assert_eq!(locate(&d, ID), Vec::<i64>::new());
        let d = planted(100, &[(100 - w, false)]);
        assert_eq!(locate(&d, ID), vec![(100 - w) as i64]);
        // ends on a 32 KiB boundary with more data: twice
        let d = planted(CHUNK + 10, &[(CHUNK - w, false)]);
        assert_eq!(locate(&d, ID), vec![(CHUNK - w) as i64; 2]);
        assert_eq!(locate_literal(&d, ID), locate(&d, ID));
        // ... once when the trigger byte precedes it
        let d = planted(CHUNK + 10, &[(CHUNK - w, true)]);
        assert_eq!(locate(&d, ID), vec![(CHUNK - w) as i64]);
        // spanning the boundary: once
        let d = planted(CHUNK + 100, &[(CHUNK - 5, false)]);
        assert_eq!(locate(&d, ID), vec![(CHUNK - 5) as i64]);
        // a needle whose last byte repeats takes the literal path
        assert_eq!(
            locate(b"xxtatxxtat", b"tat"),
            locate_literal(b"xxtatxxtat", b"tat")
        );
        assert!(locate(b"abc", b"").is_empty());
    }

    mod props {
        use super::super::*;
        use super::ID;
        use proptest::prelude::*;

        fn input() -> impl Strategy<Value = Vec<u8>> {
            let sizes = prop_oneof![
                Just(ID.len()),
                Just(ID.len() + 1),
                0usize..200,
                Just(CHUNK - 1),
                Just(CHUNK),
                Just(CHUNK + 1),
                Just(2 * CHUNK),
                Just(2 * CHUNK + ID.len()),
                (CHUNK - 64)..(3 * CHUNK + 64),
            ];
            (
                sizes,
                proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4), 0..8),
                any::<u64>(),
            )
                .prop_map(|(size, plants, seed)| {
                    let alphabet = b"t_0123456789abcdefh/x";
                    let mut x = seed | 1;
                    let mut buf: Vec<u8> = (0..size)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            alphabet[(x % alphabet.len() as u64) as usize]
                        })
                        .collect();
                    let w = ID.len();
                    if size >= w {
                        for (idx, kind) in plants {
                            // favour the interesting places: file ends and write boundaries
                            let spots = [
                                0,
                                size - w,
                                CHUNK.saturating_sub(w),
                                CHUNK - w + 1,
                                2 * CHUNK - w,
                            ];
                            let s = match kind {
                                0 => idx.index(size - w + 1),
                                k => {
                                    spots[idx.index(spots.len())].min(size - w)
                                        + (k as usize - 1) % 2
                                }
                            }
                            .min(size - w);
                            buf[s..s + w].copy_from_slice(ID);
                            if s > 0 && kind == 3 {
                                buf[s - 1] = b't';
                            }
                        }
                    }
                    buf
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            #[test]
            fn fast_equals_literal(data in input()) {
                prop_assert_eq!(locate(&data, ID), locate_literal(&data, ID));
            }

            #[test]
            fn streaming_equals_literal(data in input(), cuts in proptest::collection::vec(1usize..70000, 0..6)) {
                let mut l = Locator::new(ID);
                let mut rest = &data[..];
                for c in cuts {
                    let c = c.min(rest.len());
                    l.update(&rest[..c]);
                    rest = &rest[c..];
                }
                l.update(rest);
                prop_assert_eq!(l.finish(), locate_literal(&data, ID));
            }
        }
    }
}
