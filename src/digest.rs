//! The hashes rcc uses: SipHash-2-4 (blueprints, identities, space names),
//! SipHash-2-4-128 (blob digests of `compress.no` hololibs) and sha256
//! (blob digests of compressed hololibs).

use sha2::{Digest as _, Sha256};
use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher24 as SipHasher128};
use std::hash::Hasher;

/// Keys of rcc's `Sipit` / `BlueprintHash` (common/algorithms.go).
pub const SIPIT_K0: u64 = 9007199254740993;
pub const SIPIT_K1: u64 = 2147483647;
/// Keys of rcc's `UserHomeIdentity` (common/variables.go): not the same as Sipit's.
pub const HOME_K0: u64 = 9007799254740993;
pub const HOME_K1: u64 = 2147487647;
/// Key of the siphash128 digester used when `catalog/compress.no` exists.
pub const DIGEST_KEY: &[u8; 16] = b"Very_Random-Seed";

pub fn siphash64(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut h = SipHasher24::new_with_keys(k0, k1);
    h.write(data);
    h.finish()
}

/// rcc's `Sipit`.
pub fn sipit(data: &[u8]) -> u64 {
    siphash64(SIPIT_K0, SIPIT_K1, data)
}

/// rcc's `Textual(x, n)`: `%016x` cut to n chars (n = 0 keeps all 16).
pub fn textual(x: u64, n: usize) -> String {
    let s = format!("{x:016x}");
    if n == 0 || n >= 16 {
        s
    } else {
        s[..n].to_string()
    }
}

/// rcc's `BlueprintHash`: 16 lowercase hex chars.
pub fn blueprint_hash(text: &[u8]) -> String {
    textual(sipit(text), 0)
}

/// Which content digest a hololib uses; decided by the `compress.no` marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// gzip (or zstd) blobs, sha256 digests: 64 hex chars.
    Sha256,
    /// raw blobs, SipHash-2-4-128 keyed `Very_Random-Seed`: 32 hex chars.
    Sip128,
}

impl DigestKind {
    pub fn hex_len(self) -> usize {
        match self {
            DigestKind::Sha256 => 64,
            DigestKind::Sip128 => 32,
        }
    }

    /// Guess from a digest's length (a catalog does not say which it used).
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(DigestKind::Sha256),
            32 => Some(DigestKind::Sip128),
            _ => None,
        }
    }

    pub fn hasher(self) -> ContentHasher {
        match self {
            DigestKind::Sha256 => ContentHasher::Sha256(Box::default()),
            DigestKind::Sip128 => ContentHasher::Sip128(SipHasher128::new_with_key(DIGEST_KEY)),
        }
    }

    pub fn digest(self, data: &[u8]) -> String {
        let mut h = self.hasher();
        h.update(data);
        h.finish_hex()
    }
}

/// Streaming content digester (rcc's `NewDigester`).
pub enum ContentHasher {
    Sha256(Box<Sha256>),
    Sip128(SipHasher128),
}

impl ContentHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => h.update(data),
            ContentHasher::Sip128(h) => h.write(data),
        }
    }

    pub fn finish_hex(self) -> String {
        match self {
            ContentHasher::Sha256(h) => hex(&h.finalize()),
            // dchest/siphash Sum(nil): r0 little endian, then r1 little endian;
            // siphasher's as_bytes() gives exactly that order.
            ContentHasher::Sip128(h) => hex(&h.finish128().as_bytes()),
        }
    }
}

impl std::io::Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn is_hex_digest(s: &str) -> bool {
    DigestKind::from_hex_len(s.len()).is_some()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blueprint_vector() {
        assert_eq!(
            blueprint_hash(b"channels:\n- conda-forge\ndependencies:\n- ca-certificates"),
            "c34ed96c2d8a459a"
        );
    }

    #[test]
    fn siphash_reference_vectors() {
        let key: Vec<u8> = (0..16).collect();
        let k0 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key[8..].try_into().unwrap());
        let data: Vec<u8> = (0..15).collect();
        assert_eq!(siphash64(k0, k1, &data), 0xA129CA6149BE45E5);
        assert_eq!(siphash64(0, 0, b"Hello world"), 0xC9E8A3021F3822D9);
        let mut h = SipHasher128::new_with_key(key[..].try_into().unwrap());
        h.write(&[]);
        assert_eq!(
            hex(&h.finish128().as_bytes()),
            "a3817f04ba25a8e66df67214c7550293"
        );
        let mut h = SipHasher128::new_with_key(key[..].try_into().unwrap());
        h.write(&(0..63).collect::<Vec<u8>>());
        assert_eq!(
            hex(&h.finish128().as_bytes()),
            "5150d1772f50834a503e069a973fbd7c"
        );
    }

    #[test]
    fn identity_parts() {
        assert_eq!(textual(sipit(b"linux amd64"), 14), "493f813dad24d3");
        assert_eq!(
            textual(siphash64(HOME_K0, HOME_K1, b"/home/user"), 7),
            "59acff1"
        );
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            DigestKind::Sha256.digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
