//! Building an environment when a robot's catalog is missing.
//!
//! In order: `rcc` on PATH builds it into rcc's hololib (`rcc`); otherwise
//! vhrun's own builder makes a pip-only environment from a local CPython
//! (`spec` -> `python` -> `stage` -> `relink` -> `uv` or `pip` -> lift)
//! into vhrun's own hololib, rcc's uv-native specs (no channels, python
//! and uv only) included; otherwise the error says which conda packages
//! need rcc and how to install it. Builds of one blueprint are serialised
//! (`lock`).
//!

pub mod lock;
pub mod pip;
pub mod progress;
pub mod python;
pub mod rcc;
pub mod relink;
pub mod spec;
pub mod stage;
pub mod uv;
pub mod version;

pub use progress::Progress;
pub use python::{Interpreter, Selection};
pub use spec::BuildSpec;

use crate::error::{Error, IoContext, Result};
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::layout::user_home_identity;
use crate::hololib::{Hololib, Locations};
use std::path::{Path, PathBuf};

pub use crate::blueprint::Blueprint;

/// The blueprint of a conda.yaml / package.yaml, as rcc hashes it.
pub fn blueprint_of(conda_file: &Path) -> Result<Blueprint> {
    let home = Locations::from_env().robocorp_home;
    crate::blueprint::blueprint_of_file(conda_file, false, &home)
}

/// The conda config file of a robot.yaml (rcc's environmentConfigs
/// selection, else condaConfigFile).
pub fn robot_conda_file(robot_yaml: &Path) -> Result<PathBuf> {
    crate::robot::Robot::load(robot_yaml)?
        .conda_config()
        .ok_or_else(|| {
            Error::bad_input(
                robot_yaml,
                "no condaConfigFile: this robot has no environment to build",
            )
        })
}

/// Lift a staged environment into `hololib` (vhrun's own, for its builds)
/// under the blueprint of `blueprint_file`; returns the catalog key. The
/// stage already holds `identity.yaml`, written by the builder. Its files
/// without rewrite offsets become the decoded entries of `blobs` (hard
/// links: the stage is removed next), so the first run decodes nothing.
pub fn lift_staged(
    dir: &Path,
    blueprint_file: &Path,
    hololib: &Hololib,
    blobs: &Path,
) -> Result<String> {
    let bp = blueprint_of(blueprint_file)?;
    let lifted = crate::hololib::lift::lift(
        hololib,
        dir,
        &crate::hololib::lift::LiftOptions {
            blueprint: bp.text,
            blueprint_hash: bp.hash,
            no_compress: false,
            identity_yaml: false,
            progress: false,
        },
    )?;
    // Hard links stay on one filesystem: a stage in memory is not adopted.
    use std::os::unix::fs::MetadataExt;
    crate::paths::mkdir_all(blobs, 0o750)?;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(dir).is_none() || dev(dir) != dev(blobs) {
        return Ok(lifted.key);
    }
    let cache = crate::lower::blobcache::BlobCache::new(hololib.clone(), blobs);
    let _s = tracing::info_span!("lift.seed_blob_cache").entered();
    fn adopt(
        cache: &crate::lower::blobcache::BlobCache,
        d: &crate::hololib::catalog::Dir,
        at: &Path,
    ) {
        for (name, f) in &d.files {
            if f.symlink.is_empty() && f.rewrite.is_empty() && f.size > 0 {
                cache.adopt(&f.digest, f.size as u64, &at.join(name));
            }
        }
        for (name, sub) in &d.dirs {
            if sub.symlink.is_empty() {
                adopt(cache, sub, &at.join(name));
            }
        }
    }
    adopt(&cache, &lifted.catalog.tree, dir);
    Ok(lifted.key)
}

/// The catalog key of `blueprint` in any hololib vhrun reads, if present.
pub fn find_catalog(locations: &Locations, blueprint: &str) -> Option<String> {
    let key = catalog_name(blueprint, host_platform());
    locations
        .hololibs()
        .iter()
        .any(|h| h.catalog_path(&key).is_file())
        .then_some(key)
}

/// What a build did.
#[derive(Debug, Clone)]
pub enum BuildOutcome {
    /// The catalog exists (already, or built meanwhile by a build we waited for).
    Existing { key: String },
    /// Pulled from the rccremote origin (`RCC_REMOTE_ORIGIN`) instead.
    Pulled { key: String },
    /// rcc built it into its hololib.
    BuiltByRcc { key: String },
    /// vhrun's builder built and lifted it.
    Built {
        key: String,
        interpreter: Interpreter,
        relaxed: bool,
    },
}

impl BuildOutcome {
    pub fn key(&self) -> &str {
        match self {
            BuildOutcome::Existing { key }
            | BuildOutcome::Pulled { key }
            | BuildOutcome::BuiltByRcc { key }
            | BuildOutcome::Built { key, .. } => key,
        }
    }
}

/// Options of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--python PATH`: this interpreter (implies vhrun's own builder).
    pub python: Option<PathBuf>,
    /// How vhrun's own builder installs the pip layer (`VHRUN_UV`).
    pub uv: uv::Choice,
    /// vhrun's own builder stages in memory ([`OwnBuild::stage_in_memory`]).
    pub stage_in_memory: bool,
    /// The rcc that builds environments it can (`crate::rcc::for_builds`);
    /// `None`: vhrun's own builder.
    pub rcc: Option<PathBuf>,
    /// rcc's `--space` / `--controller` for an rcc build.
    pub space: String,
    pub controller: String,
}

/// Make sure the catalog of `robot_yaml`'s environment exists: nothing to
/// do, rcc builds it, or vhrun's builder does. This is what `vhrun build`
/// runs and what `vhrun run` calls when the catalog is missing.
pub fn ensure_environment(
    locations: &Locations,
    robot_yaml: &Path,
    conda_file: &Path,
    opts: &BuildOptions,
    progress: &Progress,
) -> Result<BuildOutcome> {
    let blueprint = blueprint_of(conda_file)?;
    let exists = || find_catalog(locations, &blueprint.hash);
    if let Some(key) = exists() {
        return Ok(BuildOutcome::Existing { key });
    }
    // As rcc: with RCC_REMOTE_ORIGIN set, pull before any build (a failed
    // pull has said why; then build as before). Every command that builds
    // comes here (`run`/`exec`/`prepare` through a child `vhrun build`).
    if crate::remote::pull_before_build(locations, &catalog_name(&blueprint.hash, host_platform()))
    {
        if let Some(key) = exists() {
            return Ok(BuildOutcome::Pulled { key });
        }
    }
    let rcc = opts.rcc.clone().filter(|_| opts.python.is_none());
    match rcc {
        Some(rcc) => {
            let _lock = wait_for_lock(locations, &blueprint, progress)?;
            if let Some(key) = exists() {
                return Ok(BuildOutcome::Existing { key });
            }
            progress.note(&format!(
                "building environment {} with {}",
                blueprint.hash,
                rcc.display()
            ));
            let phase = progress.phase("rcc holotree variables");
            rcc::build(&rcc, robot_yaml, &opts.space, &opts.controller, &phase)?;
            match exists() {
                Some(key) => {
                    phase.finish(&key);
                    Ok(BuildOutcome::BuiltByRcc { key })
                }
                None => Err(Error::CatalogMissing {
                    blueprint: blueprint.hash.clone(),
                    file: conda_file.to_path_buf(),
                    searched: locations.searched(),
                    hint: format!(
                        "rcc ({}) finished but wrote no catalog for it",
                        rcc.display()
                    ),
                }),
            }
        }
        None => {
            let own = locations.own_hololib();
            build_own(
                locations,
                conda_file,
                &blueprint,
                &OwnBuild {
                    python: opts.python.clone(),
                    uv: opts.uv.clone(),
                    stage_in_memory: opts.stage_in_memory,
                },
                progress,
                &exists,
                &|dir, file| lift_staged(dir, file, &own, &locations.home.blobs()),
            )
        }
    }
}

fn wait_for_lock(
    locations: &Locations,
    blueprint: &Blueprint,
    progress: &Progress,
) -> Result<lock::BuildLock> {
    let mut waiting = None;
    let l = lock::acquire(&locations.home, &blueprint.hash, || {
        waiting = Some(progress.phase(&format!("waiting for another build of {}", blueprint.hash)));
    })?;
    if let Some(w) = waiting {
        w.finish("done");
    }
    Ok(l)
}

/// What vhrun's own builder is told.
#[derive(Debug, Clone, Default)]
pub struct OwnBuild {
    /// `--python PATH`: this interpreter.
    pub python: Option<PathBuf>,
    /// uv or pip for the pip layer.
    pub uv: uv::Choice,
    /// Stage the environment on a tmpfs: the caller entered a mount
    /// namespace of its own ([`enter_build_namespace`]).
    pub stage_in_memory: bool,
}

/// Give this process (single-threaded, before the build starts) a mount
/// namespace of its own (and a user namespace mapping the caller to
/// itself when not root), so that vhrun's builder can stage in memory
/// ([`OwnBuild::stage_in_memory`]). False when the machine refuses: the
/// build stages on disk. Not for builds rcc does: rcc must see the real
/// namespaces.
pub fn enter_build_namespace() -> bool {
    let id = crate::sandbox::Identity::current();
    match crate::sandbox::namespaces::enter(&id) {
        Ok(()) => true,
        Err(e) => {
            tracing::info!("staging builds on disk: {e}");
            false
        }
    }
}

/// The marker rcc's uv-native builds leave in the environment; rcc's
/// activation reads the prefix as a plain one when it is there.
const UV_NATIVE_MARKER: (&str, &str) = (".rcc_uv_prefix", "uv-native prefix install\n");

/// vhrun's own builder. `catalog_exists` is asked after the build lock is
/// taken (a concurrent build may have finished meanwhile); `lift` receives
/// the staged directory and the spec file and returns the catalog key. The
/// staging directory is removed afterwards, also when anything fails.
pub fn build_own(
    locations: &Locations,
    conda_file: &Path,
    blueprint: &Blueprint,
    own: &OwnBuild,
    progress: &Progress,
    catalog_exists: &dyn Fn() -> Option<String>,
    lift: &dyn Fn(&Path, &Path) -> Result<String>,
) -> Result<BuildOutcome> {
    let python = own.python.as_deref();
    let spec = BuildSpec::from_conda_yaml(conda_file)?;
    let native = spec.is_uv_native();
    if native {
        spec.validate_uv_native()?;
    }
    if !spec.conda_extra.is_empty() {
        return Err(Error::CatalogMissing {
            blueprint: blueprint.hash.clone(),
            file: conda_file.to_path_buf(),
            searched: locations.searched(),
            hint: format!(
                "its conda packages {} need rcc (vhrun builds only python + pip environments); {}",
                spec.conda_extra_listing(),
                crate::rcc::INSTALL_HINT
            ),
        });
    }
    if spec.python.is_none() {
        return Err(Error::bad_input(
            conda_file,
            "no `python` in dependencies: vhrun's builder needs one, e.g. `- python=3.11`",
        ));
    }
    let _lock = wait_for_lock(locations, blueprint, progress)?;
    if let Some(key) = catalog_exists() {
        return Ok(BuildOutcome::Existing { key });
    }

    let uv_pythons = [locations.robocorp_home.join("uvpython")];
    let phase = progress.phase("finding CPython");
    let mut sel = python::select(&spec, python, &uv_pythons)?;
    phase.finish(&sel.interpreter.describe());
    // The interpreter's pip bootstraps uv when no uv binary is at hand.
    let phase = progress.phase("finding uv");
    let uv = uv::find(
        &own.uv,
        &spec,
        locations,
        &sel.interpreter.executable,
        &phase,
    )?;
    let installer = match &uv {
        Some(uv) => uv.describe(),
        None => "pip".to_string(),
    };
    phase.finish(&installer);
    if let (true, Some(uv), None) = (native, &uv, python) {
        if sel.relaxed || sel.interpreter.source != python::Source::Uv {
            // rcc's uv-native build: the exact CPython from uv, if uv can get it.
            let wanted = spec.python_constraint.text().trim_start_matches('=');
            let phase = progress.phase(&format!("uv python install {wanted}"));
            match uv::python_install(uv, wanted, &uv_pythons[0]) {
                Ok(()) => {
                    sel = python::select(&spec, python, &uv_pythons)?;
                    phase.finish(&sel.interpreter.describe());
                }
                Err(why) => {
                    tracing::info!("{why}");
                    phase.finish(&format!(
                        "not available, using {}",
                        sel.interpreter.describe()
                    ));
                }
            }
        }
    }
    let interp = &sel.interpreter;
    progress.note(&format!(
        "building environment {} from {}{} with {}, pip layer with {installer}",
        blueprint.hash,
        conda_file.display(),
        if native {
            " (rcc's uv-native mode)"
        } else {
            ""
        },
        interp.describe()
    ));
    if sel.relaxed {
        let asked = spec.python.as_ref().map(|r| r.at()).unwrap_or_default();
        let msg = format!(
            "{} {asked} is not on this machine; using CPython {} of the same minor series",
            conda_file.display(),
            interp.version
        );
        tracing::info!("{msg}");
        progress.note(&msg);
    }

    let name = stage::stage_name(
        &user_home_identity(locations.user_home.as_deref()),
        &blueprint.hash,
    );
    let staging = stage::StagingDir::create_in(&locations.holotree, &name, own.stage_in_memory)?;
    let dir = staging.path();
    tracing::info!(stage = %dir.display(), in_memory = staging.in_memory(), "staging");

    let phase = progress.phase("copying CPython");
    let copied = stage::copy_prefix(interp, dir)?;
    phase.finish(&format!(
        "{} files, {:.1} MB",
        copied.files,
        copied.bytes as f64 / 1e6
    ));

    let phase = progress.phase("relocating");
    let rel = relink::relocate_prefix(dir, &interp.base_prefix)?;
    let py = pip::staged_python(dir, &interp.version);
    pip::check_prefix(&py, dir)?;
    phase.finish(&format!(
        "{} text files, {} RUNPATHs",
        rel.text_files, rel.elf_files
    ));

    // As rcc does: every environment carries its blueprint.
    let identity = dir.join("identity.yaml");
    std::fs::write(&identity, &blueprint.text).at(&identity)?;
    // PEP 668: a uv-managed CPython says it is externally managed; the
    // environment is its own (rcc removes the marker too).
    stage::remove_externally_managed(dir, &interp.stdlib)?;
    if native {
        let marker = dir.join(UV_NATIVE_MARKER.0);
        std::fs::write(&marker, UV_NATIVE_MARKER.1).at(&marker)?;
    }

    if spec.pip_entry.is_some() || !spec.pip.is_empty() {
        match &uv {
            None => {
                let phase = progress.phase("installing pip");
                pip::bootstrap(&py, &spec, &phase)?;
                phase.finish("from ensurepip");
                let phase = progress.phase("pip install");
                match pip::install(&py, &spec, &phase)? {
                    0 => phase.finish("nothing to install"),
                    n => phase.finish(&format!("{n} requirements")),
                }
            }
            Some(uv) => {
                let phase = progress.phase("uv pip install");
                // pip itself as ensurepip would install it (its bundled
                // wheels), unless the spec pins another pip.
                let (mut lines, mut links) = (Vec::new(), Vec::new());
                if spec.pip_entry.is_some() {
                    let (pins, dir) = pip::bundled_wheels(dir, interp, &spec)?;
                    lines = pins;
                    links.push(dir);
                }
                lines.extend(spec.pip.iter().map(|r| r.text.clone()));
                let n = uv::install(uv, &py, locations, &spec, (&lines, &links), &phase)?;
                phase.finish(&format!("{n} packages with uv {}", uv.version));
            }
        }
    }
    // rcc installs a `uv=` conda dependency into the environment; the
    // uv-native mode keeps uv outside it.
    if let (Some(uv), Some(_), false) = (&uv, &spec.uv_entry, native) {
        let bin = dir.join("bin/uv");
        std::fs::copy(&uv.path, &bin).at(&bin)?;
    }
    if !spec.post_install.is_empty() {
        let phase = progress.phase("post-install");
        post_install(&spec, dir, &phase)?;
        phase.finish(&format!("{} commands", spec.post_install.len()));
    }
    write_history(dir, conda_file, interp, &py, uv.as_ref())?;
    stage::strip_bytecode(dir)?;

    let phase = progress.phase("lifting");
    let key = lift(dir, conda_file)?;
    phase.finish(&key);
    drop(staging);
    Ok(BuildOutcome::Built {
        key,
        interpreter: sel.interpreter.clone(),
        relaxed: sel.relaxed,
    })
}

/// `rccPostInstall`: each command through `sh -c` with the environment's
/// bin/ first on PATH, in the staging directory.
fn post_install(spec: &BuildSpec, dir: &Path, phase: &progress::Phase) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.join("bin")];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs)
        .map_err(|e| Error::bad_input(dir, format!("cannot go on PATH: {e}")))?;
    for cmd in &spec.post_install {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(&cmd.text)
            .current_dir(dir)
            .env("PATH", &path)
            .env("PYTHONNOUSERSITE", "1")
            .env("CONDA_PREFIX", dir)
            .env_remove("PYTHONPATH")
            .env_remove("VIRTUAL_ENV");
        let (code, log) = pip::run_logged(c, phase)?;
        if code != 0 {
            let tail: Vec<&str> = log.lines().rev().take(2).collect();
            return Err(Error::bad_input(
                &spec.file,
                format!(
                    "post-install {}: exited with {code} ({})",
                    cmd.at(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
            ));
        }
    }
    Ok(())
}

/// `conda-meta/history`: what the environment was made from, like conda's.
fn write_history(
    dir: &Path,
    conda_file: &Path,
    interp: &Interpreter,
    py: &Path,
    uv: Option<&uv::Uv>,
) -> Result<()> {
    let meta = dir.join("conda-meta");
    crate::paths::mkdir_all(&meta, 0o755)?;
    let mut text = format!(
        "==> vhrun build <==\n# cmd: vhrun build {}\n# base: {} (CPython {}, {})\n",
        conda_file.display(),
        interp.base_prefix.display(),
        interp.version,
        interp.source
    );
    let out = match uv {
        // An environment uv built may have no pip to ask.
        Some(uv) => uv::list_command(uv, py).output(),
        None => pip::python_command(py)
            .args([
                "-m",
                "pip",
                "list",
                "--format=freeze",
                "--disable-pip-version-check",
            ])
            .output(),
    };
    if let Some(out) = out.ok().filter(|o| o.status.success()) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((n, v)) = line.split_once("==") {
                text.push_str(&format!("+pypi::{n}-{v}\n"));
            }
        }
    }
    let path = meta.join("history");
    std::fs::write(&path, text).at(&path)
}
