//! `/proc/self/mountinfo`, to find a mount by its mount point and identify
//! it by mount id (a path alone may be reused by a later mount).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub options: String,
}

/// Every mount of the calling thread's mount namespace, in table order.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&read_raw()?))
}

/// `/proc/self/mountinfo` as it reads. A proc file has no size to size the
/// buffer by: `std::fs::read` starts at 32 bytes and reads nine times for a
/// small table; a run's warm-server key reads it on every start.
pub fn read_raw() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut text = Vec::with_capacity(16 << 10);
    std::fs::File::open("/proc/self/mountinfo")?.read_to_end(&mut text)?;
    Ok(text)
}

pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u64>().ok();
    Some(MountEntry {
        id: num(fields[0])?,
        parent: num(fields[1])?,
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        options: String::from_utf8_lossy(fields[5]).into_owned(),
        fs_type: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The topmost mount at `mount_point` (the one a path lookup reaches).
pub fn find(mount_point: &Path) -> std::io::Result<Option<MountEntry>> {
    Ok(read()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == mount_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_optional_fields() {
        let text = b"22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
                     99 22 0:55 / /tmp/a\\040b ro,nosuid,nodev - fuse.vhrun vhrun rw,user_id=0\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].id, 99);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!(m[1].fs_type, "fuse.vhrun");
        assert_eq!(m[1].source, "vhrun");
        assert!(m[1].options.contains("ro"));
        assert!(read()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == Path::new("/")));
    }
}
