//! A command made ready for exec before anything forks: the program
//! resolved in the task's PATH, argv and envp as C string arrays. The
//! reaper's child only calls execve with them (it may not allocate).

use crate::error::{Error, Result};
use crate::sys::exec::CStringArray;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One command, with its program resolved and argv as C strings.
#[derive(Debug)]
pub struct PreparedCommand {
    pub path: CString,
    pub argv: CStringArray,
    pub display: String,
}

fn cstring(s: &OsStr, what: &str) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        Error::Usage(format!(
            "{what} contains a NUL byte: {}",
            s.to_string_lossy()
        ))
    })
}

/// The environment as `K=V` C strings; a name given twice keeps its last
/// value (at the place of its last occurrence).
pub fn prepare_env(env: &[(OsString, OsString)]) -> Result<CStringArray> {
    let mut out = Vec::with_capacity(env.len());
    for (k, v) in crate::environ::last_of_each(env) {
        if k.is_empty() || k.as_bytes().contains(&b'=') {
            return Err(Error::Usage(format!(
                "invalid environment variable name {:?}",
                k.to_string_lossy()
            )));
        }
        let mut kv = k.clone().into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        out.push(cstring(OsStr::from_bytes(&kv), "environment variable")?);
    }
    Ok(CStringArray::new(out))
}

/// Resolve argv[0] as exec does with the *task's* PATH (not vhrun's):
/// a name with a slash is used as given (relative to the task's cwd);
/// otherwise the first executable regular file in PATH wins.
pub fn resolve_program(name: &OsStr, path_var: Option<&OsStr>, cwd: &Path) -> Result<PathBuf> {
    if name.is_empty() {
        return Err(Error::Usage("empty command".into()));
    }
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = cwd.join(OsStr::from_bytes(dir)).join(name);
        if crate::paths::is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::NotFound {
        path: PathBuf::from(format!(
            "{} (command, searched the task's PATH)",
            name.to_string_lossy()
        )),
    })
}

pub fn prepare_command(
    argv: &[OsString],
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Result<PreparedCommand> {
    let first = argv
        .first()
        .ok_or_else(|| Error::Usage("empty command".into()))?;
    let program = resolve_program(first, path_var, cwd)?;
    let args = argv
        .iter()
        .map(|a| cstring(a, "argument"))
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedCommand {
        path: cstring(program.as_os_str(), "program path")?,
        argv: CStringArray::new(args),
        display: argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_in_the_tasks_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let prog = bin.join("tool");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let noexec = dir.path().join("other");
        std::fs::create_dir(&noexec).unwrap();
        std::fs::write(noexec.join("tool"), "").unwrap();

        let path = OsString::from(format!("{}:{}", noexec.display(), bin.display()));
        let got = resolve_program(OsStr::new("tool"), Some(&path), dir.path()).unwrap();
        assert_eq!(got, prog);
        // Relative PATH entries are relative to the task's cwd.
        let got = resolve_program(OsStr::new("tool"), Some(OsStr::new("bin")), dir.path()).unwrap();
        assert_eq!(got, dir.path().join("bin/tool"));
        assert!(matches!(
            resolve_program(
                OsStr::new("tool"),
                Some(OsStr::new("/nonexistent")),
                dir.path()
            ),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            resolve_program(OsStr::new("./x"), None, dir.path()).unwrap(),
            PathBuf::from("./x")
        );
    }

    #[test]
    fn env_rejects_bad_names() {
        assert!(prepare_env(&[("A=B".into(), "c".into())]).is_err());
        let e = prepare_env(&[("A".into(), "b=c".into())]).unwrap();
        assert_eq!(e.get(0).unwrap().to_bytes(), b"A=b=c");
        let e = prepare_env(&[
            ("A".into(), "1".into()),
            ("B".into(), "2".into()),
            ("A".into(), "3".into()),
        ])
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e.get(0).unwrap().to_bytes(), b"B=2");
        assert_eq!(e.get(1).unwrap().to_bytes(), b"A=3");
    }
}
