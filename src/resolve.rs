//! robot.yaml -> environment file -> blueprint -> catalog -> space: what
//! `vhrun run`, `exec` and `vars` all need before they do anything, and the
//! facts about the space that rcc's environment depends on, read from the
//! catalog without mounting it.

use crate::blueprint::{self, Blueprint};
use crate::environ::{self, Bytecode, EnvInputs, RobotEnv, SpaceFacts};
use crate::error::{Error, IoContext, Result};
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::{Catalog, Dir, File, Hololib, Locations};
use crate::robot::Robot;
use std::path::{Path, PathBuf};

/// A robot's environment, found in a hololib.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The environment file the blueprint came from.
    pub conda_file: PathBuf,
    pub blueprint: Blueprint,
    /// The hololib holding the catalog.
    pub hololib: Hololib,
    /// Catalog file name, `<hash>v12.<platform>`.
    pub catalog_key: String,
    pub catalog_path: PathBuf,
    pub catalog: Catalog,
    /// rcc's space name for the controller and space (24 chars).
    pub space_name: String,
    /// Where rcc would restore the space, and so where vhrun serves it.
    pub space_path: PathBuf,
    pub facts: SpaceFacts,
    /// The persistent bytecode cache of this catalog (vhrun's default mode).
    pub pycache_dir: PathBuf,
}

/// How the environment variables are wanted.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Include vhrun's own environment (a run) or not (`vars`).
    pub full: bool,
    /// rcc's exact bytecode variables instead of the persistent cache.
    pub rcc_env: bool,
    /// `-e env.json` variables (see `environ::load_env_json`).
    pub extra: Vec<(String, String)>,
    /// TEMP/TMP (and rcc's PYTHONPYCACHEPREFIX with `rcc_env`).
    pub temp_dir: PathBuf,
}

/// Resolve a robot's environment for `--controller` and `--space`.
/// `Ok(None)` for a shell robot (no condaConfigFile / environmentConfigs).
pub fn resolve_environment(
    locations: &Locations,
    robot: &Robot,
    controller: &str,
    space: &str,
) -> Result<Option<Resolved>> {
    let Some(conda_file) = robot.conda_config() else {
        return Ok(None);
    };
    let _span = tracing::info_span!("resolve", robot = %robot.file().display()).entered();
    let bp = blueprint::blueprint_of_file(&conda_file, false, &locations.robocorp_home)?;
    resolve_blueprint(locations, bp, &conda_file, controller, space).map(Some)
}

/// Find the catalog of a blueprint for this platform, in lookup order, and
/// work out the space. `source` only names the file in errors.
pub fn resolve_blueprint(
    locations: &Locations,
    bp: Blueprint,
    source: &Path,
    controller: &str,
    space: &str,
) -> Result<Resolved> {
    let key = catalog_name(&bp.hash, host_platform());
    // only this platform's catalog will do (a substring match could find
    // another platform's catalog of the same blueprint)
    let hololib = locations
        .hololibs()
        .into_iter()
        .find(|lib| lib.catalog_path(&key).is_file())
        .ok_or_else(|| Error::CatalogMissing {
            blueprint: bp.hash.clone(),
            file: source.to_path_buf(),
            searched: locations.searched(),
            hint: format!(
                "build it with rcc (`rcc holotree variables {}` or `rcc run`), \
                 or import an export of it with `vhrun import FILE.zip` or `rcc holotree import FILE.zip`",
                source.display()
            ),
        })?;
    resolve_key(locations, hololib, key, bp, source, controller, space)
}

/// `vhrun exec --catalog KEY`: the environment of a catalog found by key
/// (file name, blueprint hash or unique part of a name), without a robot.
pub fn resolve_catalog(
    locations: &Locations,
    key: &str,
    controller: &str,
    space: &str,
) -> Result<Resolved> {
    let (hololib, key) = locations.find_catalog(key)?;
    let path = hololib.catalog_path(&key);
    let hash = key.split("v12.").next().unwrap_or_default().to_string();
    let bp = Blueprint {
        text: String::new(),
        hash,
    };
    resolve_key(locations, hololib, key, bp, &path, controller, space)
}

fn resolve_key(
    locations: &Locations,
    hololib: Hololib,
    key: String,
    bp: Blueprint,
    source: &Path,
    controller: &str,
    space: &str,
) -> Result<Resolved> {
    let catalog_path = hololib.catalog_path(&key);
    let raw = {
        let _s = tracing::info_span!("catalog_read").entered();
        std::fs::read(&catalog_path).at(&catalog_path)?
    };
    let catalog = {
        let _s = tracing::info_span!("catalog_decode", bytes = raw.len()).entered();
        Catalog::from_bytes(&raw).map_err(|msg| Error::catalog(&catalog_path, msg))?
    };
    let space_name = locations.space_name(controller, space);
    let space_path = locations.space_path(&catalog, controller, space);
    let facts = space_facts(&catalog, &hololib, &space_name).map_err(|e| match e {
        Error::Blob { .. } => e,
        other => Error::catalog(&catalog_path, other.to_string()),
    })?;
    let pycache_dir = pycache_dir(locations, &key, &raw);
    Ok(Resolved {
        conda_file: source.to_path_buf(),
        blueprint: bp,
        hololib,
        catalog_key: key,
        catalog_path,
        catalog,
        space_name,
        space_path,
        facts,
        pycache_dir,
    })
}

/// `<VHRUN_HOME>/pycache/<catalog key>/<16 hex of the catalog's bytes>`: a
/// catalog re-imported with other contents gets a fresh cache (Python
/// validates .pyc files by source mtime and size, and every restored file
/// has the same mtime).
pub fn pycache_dir(locations: &Locations, catalog_key: &str, catalog_bytes: &[u8]) -> PathBuf {
    let version = crate::digest::textual(crate::digest::sipit(catalog_bytes), 0);
    locations
        .vhrun_home
        .join("pycache")
        .join(catalog_key)
        .join(version)
}

impl Resolved {
    /// The inputs of `environ::build` for this environment.
    pub fn env_inputs(
        &self,
        locations: &Locations,
        robot: Option<&Robot>,
        opts: EnvOptions,
    ) -> EnvInputs {
        EnvInputs {
            inherited: std::env::vars_os().collect(),
            full: opts.full,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            user_home_identity: crate::hololib::layout::user_home_identity(
                locations.user_home.as_deref(),
            ),
            extra: opts.extra,
            space: self.space_path.clone(),
            facts: self.facts.clone(),
            blueprint_hash: self.blueprint.hash.clone(),
            robocorp_home: locations.robocorp_home.clone(),
            installation_id: environ::installation_id(&locations.robocorp_home),
            rcc_exe: crate::shim::rcc_exe(),
            rcc_version: environ::rcc_version(),
            temp_dir: opts.temp_dir,
            bytecode: if opts.rcc_env {
                Bytecode::Rcc
            } else {
                Bytecode::Cache(self.pycache_dir.clone())
            },
            robot: robot.map(RobotEnv::from),
        }
    }
}

/// What rcc's environment builder asks of the space, answered from the
/// catalog: `bin/python3` or `bin/python`, `pyvenv.cfg`, and the contents of
/// `rcc_activate.json` (its blob, relocated to `space_name`).
pub fn space_facts(catalog: &Catalog, lib: &Hololib, space_name: &str) -> Result<SpaceFacts> {
    let tree = &catalog.tree;
    let python = match lookup(tree, "bin") {
        Some(Entry::Dir(bin)) => ["python3", "python"]
            .into_iter()
            .find(|n| bin.files.get(*n).is_some_and(resolvable))
            .map(str::to_string),
        _ => None,
    };
    let pyvenv_cfg = matches!(lookup(tree, "pyvenv.cfg"), Some(Entry::File(f)) if resolvable(f));
    let activation = match lookup(tree, "rcc_activate.json") {
        Some(Entry::File(f)) if resolvable(f) => {
            let mut content =
                crate::hololib::blob::read_verified(&lib.blob_path(&f.digest), &f.digest)?;
            crate::relocate::patch_slice(&mut content, &f.rewrite, space_name.as_bytes())
                .map_err(|e| Error::Internal(format!("rcc_activate.json: {e}")))?;
            environ::parse_activation(&content)
        }
        _ => Vec::new(),
    };
    Ok(SpaceFacts {
        python,
        pyvenv_cfg,
        activation,
    })
}

/// A file that `stat` would find: everything but a dangling symlink (the
/// only entries lifted with the symlink bit in their mode).
fn resolvable(f: &File) -> bool {
    !crate::gomode::is_symlink(f.mode)
}

enum Entry<'a> {
    Dir(&'a Dir),
    File(&'a File),
}

fn lookup<'a>(root: &'a Dir, rel: &str) -> Option<Entry<'a>> {
    let mut dir = root;
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if let Some(f) = dir.files.get(part) {
                return Some(Entry::File(f));
            }
            return dir.dirs.get(part).map(Entry::Dir);
        }
        dir = dir.dirs.get(part)?;
    }
    None
}
