//! rcc's catalog: a gzip'ed, Go-`MarshalIndent`ed JSON tree of the lifted
//! environment (htfs/directory.go `Root`, `Dir`, `File`).
//!
//! Decoding accepts what any rcc version wrote (missing `rcc` key, `null`
//! maps and arrays). Encoding reproduces Go's output byte for byte: field
//! order, 2-space indent, sorted map keys, `<`/`>`/`&` escaped as `\u003c`...

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// The catalog format version in catalog file names (`<hash>v12.<platform>`).
pub const CATALOG_VERSION: &str = "v12";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(rename = "rcc", default)]
    pub rcc_version: String,
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub controller: String,
    #[serde(default)]
    pub space: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub blueprint: String,
    #[serde(default)]
    pub lifted: bool,
    pub tree: Dir,
}

/// The `Info` part of a catalog, written alone as the `.info` sidecar.
#[derive(Debug, Clone, Serialize)]
pub struct Info<'a> {
    pub rcc: &'a str,
    pub identity: &'a str,
    pub path: &'a str,
    pub controller: &'a str,
    pub space: &'a str,
    pub platform: &'a str,
    pub blueprint: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dir {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub symlink: String,
    #[serde(default)]
    pub mode: u32,
    #[serde(rename = "subdirs", default, deserialize_with = "unique_names")]
    pub dirs: BTreeMap<String, Dir>,
    #[serde(default, deserialize_with = "unique_names")]
    pub files: BTreeMap<String, File>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub shadow: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct File {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub symlink: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub digest: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rewrite: Vec<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Go writes a nil map or slice as `null`; treat it as empty.
fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A directory's `subdirs` or `files` (`null` is empty). A name twice in
/// one object is refused: Go's encoder cannot write it (map keys are
/// unique), and keeping either entry would serve a tree no restore gives.
fn unique_names<'de, D, V>(d: D) -> std::result::Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(BTreeMap<String, V>);
    impl<'de, V: Deserialize<'de>> Deserialize<'de> for Unique<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Names<V>(std::marker::PhantomData<V>);
            impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Names<V> {
                type Value = Unique<V>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map of entry names")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> std::result::Result<Self::Value, A::Error> {
                    let mut out = BTreeMap::new();
                    while let Some(name) = m.next_key::<String>()? {
                        if out.contains_key(&name) {
                            return Err(serde::de::Error::custom(format!(
                                "entry name {name:?} appears twice in one directory"
                            )));
                        }
                        let v = m.next_value()?;
                        out.insert(name, v);
                    }
                    Ok(Unique(out))
                }
            }
            d.deserialize_map(Names(std::marker::PhantomData))
        }
    }
    Ok(Option::<Unique<V>>::deserialize(d)?
        .map(|u| u.0)
        .unwrap_or_default())
}

/// `<blueprint>v12.<platform>`
pub fn catalog_name(blueprint: &str, platform: &str) -> String {
    format!("{blueprint}{CATALOG_VERSION}.{platform}")
}

/// The most a catalog may decompress to, for `compressed` bytes on disk:
/// 64 times that, at least 64 MiB, at most 1 GiB. Real catalogs decompress
/// about 5x (their digests do not compress): a 12k-file environment is a
/// 1 MiB file of 5 MiB JSON, and 1 GiB is some two million files. A gzip
/// bomb (~1000x) stops here instead of taking the machine's memory.
pub fn max_decoded_len(compressed: usize) -> u64 {
    (compressed as u64)
        .saturating_mul(64)
        .clamp(MIN_DECODED_CAP, MAX_DECODED_CAP)
}

const MIN_DECODED_CAP: u64 = 64 << 20;
/// The most any catalog decodes to; also the most a catalog entry of a
/// hololib zip may hold.
pub const MAX_DECODED_CAP: u64 = 1 << 30;

/// Decode a catalog's bytes (gzip, zstd or raw), refusing to go past
/// [`max_decoded_len`].
fn decode_capped(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let limit = max_decoded_len(raw.len());
    let (_, reader) =
        crate::hololib::blob::decoder(std::io::Cursor::new(raw)).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(raw.len().saturating_mul(6).min(limit as usize));
    reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > limit {
        return Err(format!(
            "decompresses to more than {} MiB from {} bytes: not a catalog (a compression bomb?)",
            limit >> 20,
            raw.len()
        ));
    }
    Ok(out)
}

/// rcc's platform string for this machine (`GOOS_GOARCH`).
pub fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux_arm64",
        _ => "linux_amd64",
    }
}

impl Catalog {
    /// Read a gzip catalog file (also accepts zstd or plain JSON, as rcc's
    /// readers fall back to raw bytes).
    pub fn load(path: &Path) -> Result<Catalog> {
        let raw = std::fs::read(path).at(path)?;
        Self::from_bytes(&raw).map_err(|msg| Error::catalog(path, msg))
    }

    pub fn from_bytes(raw: &[u8]) -> std::result::Result<Catalog, String> {
        let json = decode_capped(raw)?;
        let catalog: Catalog =
            serde_json::from_slice(&json).map_err(|e| format!("not a catalog: {e}"))?;
        Ok(catalog)
    }

    /// Go `json.MarshalIndent(root, "", "  ")`, no trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        go_json(self)
    }

    pub fn info(&self) -> Info<'_> {
        Info {
            rcc: &self.rcc_version,
            identity: &self.identity,
            path: &self.path,
            controller: &self.controller,
            space: &self.space,
            platform: &self.platform,
            blueprint: &self.blueprint,
        }
    }

    /// rcc's `SaveAs`: gzip level 1 of the JSON at `path` (via a temp file
    /// and rename, so readers never see half a catalog), plus `<path>.info`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let gz = gzip_bytes(&self.to_json());
        crate::paths::write_atomic(path, &gz, 0o666)?;
        let info_path = path.with_file_name(format!(
            "{}.info",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        crate::paths::write_atomic(&info_path, &go_json(&self.info()), 0o666)
    }

    /// Every file entry with its path relative to the tree root, depth first
    /// in name order; `under_symlink` is true below a symlinked directory.
    pub fn walk_files(&self, mut f: impl FnMut(&str, &File, bool)) {
        fn go(dir: &Dir, prefix: &str, shadow: bool, f: &mut impl FnMut(&str, &File, bool)) {
            for (name, file) in &dir.files {
                f(&join(prefix, name), file, shadow);
            }
            for (name, sub) in &dir.dirs {
                go(
                    sub,
                    &join(prefix, name),
                    shadow || !sub.symlink.is_empty(),
                    f,
                );
            }
        }
        go(&self.tree, "", false, &mut f);
    }

    /// (file entries, total bytes) as `catalogs` reports them.
    pub fn totals(&self) -> (u64, u64) {
        let (mut n, mut bytes) = (0u64, 0u64);
        self.walk_files(|_, f, _| {
            n += 1;
            // Saturating: a hostile catalog may record sizes near i64::MAX.
            bytes = bytes.saturating_add(f.size.max(0) as u64);
        });
        (n, bytes)
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Serialise like Go's `json.MarshalIndent(v, "", "  ")`.
pub fn go_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter::default());
    value
        .serialize(&mut ser)
        .expect("serialising to memory cannot fail");
    out
}

/// Gzip with Go's `gzip.BestSpeed` settings: level 1, mtime 0, no name.
/// (XFL and OS bytes differ from Go's; no reader looks at them.)
pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("in-memory write");
    enc.finish().expect("in-memory write")
}

/// serde_json's pretty printer plus Go's HTML-safe string escaping.
#[derive(Default)]
struct GoFormatter {
    inner: serde_json::ser::PrettyFormatter<'static>,
}

impl serde_json::ser::Formatter for GoFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.inner.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.inner.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_object_value(w)
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut last = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[last..i])?;
            w.write_all(esc.as_bytes())?;
            last = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[last..])
    }
}

/// A name a catalog may hold for a file or directory: one path component,
/// never `.`/`..`, no `/` or NUL (anything else would let a catalog write or
/// serve outside its tree).
pub fn valid_entry_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl Catalog {
    /// Check every entry name (map keys, which decide the paths) before the
    /// tree is used for paths; the error names the offending path.
    pub fn validate_names(&self) -> std::result::Result<(), String> {
        fn go(dir: &Dir, prefix: &str) -> std::result::Result<(), String> {
            for name in dir.files.keys().chain(dir.dirs.keys()) {
                if !valid_entry_name(name) {
                    return Err(format!(
                        "invalid entry name {name:?} in directory {prefix:?}"
                    ));
                }
            }
            if let Some(name) = dir.files.keys().find(|n| dir.dirs.contains_key(*n)) {
                return Err(format!(
                    "{:?} is both a file and a directory",
                    join(prefix, name)
                ));
            }
            for (name, sub) in &dir.dirs {
                go(sub, &join(prefix, name))?;
            }
            Ok(())
        }
        go(&self.tree, "")
    }
}

/// Read all of `r` (small helper for tests and tools).
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compression_bomb_is_refused_past_the_cap() {
        // 80 MiB of zeros in ~80 KB: past the 64 MiB floor of the cap.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..80 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = Catalog::from_bytes(&bomb).unwrap_err();
        assert!(err.contains("more than 64 MiB"), "{err}");
        // the cap scales with the compressed size, within its bounds
        assert_eq!(max_decoded_len(0), 64 << 20);
        assert_eq!(max_decoded_len(2 << 20), 128 << 20);
        assert_eq!(max_decoded_len(usize::MAX), 1 << 30);
        // a real catalog is far below it
        let json = go_json(&Catalog::default());
        assert!(Catalog::from_bytes(&gzip_bytes(&json)).is_ok());
    }

    #[test]
    fn go_escaping_and_layout() {
        let mut d = Dir {
            name: "".into(),
            mode: crate::gomode::MODE_DIR | 0o755,
            ..Default::default()
        };
        d.files.insert(
            "a<b>&c".into(),
            File {
                name: "a<b>&c".into(),
                size: 3,
                mode: 420,
                digest: "N/A".into(),
                ..Default::default()
            },
        );
        let text = String::from_utf8(go_json(&d)).unwrap();
        assert_eq!(
            text,
            "{\n  \"name\": \"\",\n  \"mode\": 2147484141,\n  \"subdirs\": {},\n  \"files\": {\n    \"a\\u003cb\\u003e\\u0026c\": {\n      \"name\": \"a\\u003cb\\u003e\\u0026c\",\n      \"size\": 3,\n      \"mode\": 420,\n      \"digest\": \"N/A\",\n      \"rewrite\": []\n    }\n  }\n}"
        );
    }

    #[test]
    fn entry_names_are_checked() {
        let mut c = Catalog::default();
        assert!(c.validate_names().is_ok());
        for bad in ["..", ".", "", "a/b", "a\0b"] {
            let mut sub = Dir::default();
            sub.files.insert(bad.into(), File::default());
            c.tree.dirs.insert("d".into(), sub);
            assert!(c.validate_names().is_err(), "{bad:?}");
        }
        c.tree.dirs.clear();
        c.tree.dirs.insert("x".into(), Dir::default());
        c.tree.files.insert("x".into(), File::default());
        assert!(c.validate_names().unwrap_err().contains("both"));
    }

    #[test]
    fn nulls_decode_as_empty() {
        let c: Catalog = serde_json::from_str(
            r#"{"identity":"x","tree":{"name":"","mode":1,"subdirs":null,"files":{"f":{"name":"f","size":1,"mode":420,"digest":"d","rewrite":null}}}}"#,
        )
        .unwrap();
        assert!(c.tree.dirs.is_empty());
        assert!(c.tree.files["f"].rewrite.is_empty());
    }
}
