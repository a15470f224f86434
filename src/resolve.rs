//! robot.yaml -> environment file -> blueprint -> catalog -> space: what
//! `vhrun run`, `exec` and `vars` all need before they do anything, and the
//! facts about the space that rcc's environment depends on, read from the
//! catalog without mounting it.
//!
//! The catalog is read once, as the tree the run will serve, from its
//! binary index (`Tree::load_indexed`): a warm run never decodes the gzip
//! JSON, which costs ~27 ms for a 12k-file environment. Once read, its
//! summary (`tree::summary`) stands for it: a run that a kernel image or a
//! warm server serves loads no tree at all.

use crate::blueprint::{self, Blueprint};
use crate::environ::{self, Bytecode, EnvInputs, RobotEnv, SpaceFacts};
use crate::error::{Error, Result};
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::{Hololib, Locations};
use crate::robot::Robot;
use crate::settings::NetworkSettings;
use crate::tree::summary::{Facts, SpaceRecord, Summary, TreeRef};
use crate::tree::{Kind, NodeRef, Tree};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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
    /// The catalog's summary, and the tree the run serves once it is
    /// needed (a run over an image or a warm server never loads it).
    pub tree: Arc<TreeRef>,
    /// rcc's space name for the controller and space (24 chars).
    pub space_name: String,
    /// Where rcc would restore the space, and so where vhrun serves it.
    pub space_path: PathBuf,
    pub facts: SpaceFacts,
    /// The persistent bytecode cache of this catalog (vhrun's default mode).
    pub pycache_dir: PathBuf,
    /// The rccremote origin of a lazily served catalog (`remote::lazy`):
    /// the hololib has only some of its blobs, the rest come on first open.
    pub origin: Option<String>,
    /// What was fetched from it before this process served the tree.
    pub fetched: crate::remote::lazy::RemoteStats,
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
    /// `-w`: the Control Room workspace id (`RC_WORKSPACE_ID`).
    pub workspace: Option<String>,
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
    resolve_in(locations, hololib, key, bp, source, (controller, space))
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
    resolve_in(locations, hololib, key, bp, &path, (controller, space))
}

/// Catalog `key` of `hololib`, where it holds the whole environment.
fn resolve_in(
    locations: &Locations,
    hololib: Hololib,
    key: String,
    bp: Blueprint,
    source: &Path,
    place: (&str, &str),
) -> Result<Resolved> {
    let catalog_path = hololib.catalog_path(&key);
    resolve_key(
        locations,
        hololib,
        key,
        bp,
        source,
        place,
        (catalog_path, None),
    )
}

/// Catalog `key` served lazily from `origin`: the catalog fetched into
/// `$VHRUN_HOME/lazy/` (`vhrun pull --lazy`), its blobs landing in rcc's
/// hololib as they are fetched. `None` when that catalog, or a blob the
/// environment's variables need, is not here yet.
pub fn resolve_lazy(
    locations: &Locations,
    key: &str,
    source: &Path,
    (controller, space): (&str, &str),
    origin: &str,
) -> Result<Option<Resolved>> {
    let catalog_path = crate::remote::lazy::catalog_path(&locations.home, key);
    if !catalog_path.is_file() {
        return Ok(None);
    }
    let hash = key.split("v12.").next().unwrap_or_default().to_string();
    let bp = Blueprint {
        text: String::new(),
        hash,
    };
    let lib = locations.hololib.clone();
    // A lazily served tree is a plain tree: its index is built the same way.
    let tree = Tree::load_indexed(&catalog_path, &locations.home.index())?;
    if startup_digests(&tree)
        .iter()
        .any(|d| !lib.blob_path(d).is_file())
    {
        return Ok(None);
    }
    let mut r = resolve_key(
        locations,
        lib,
        key.to_string(),
        bp,
        source,
        (controller, space),
        (catalog_path, Some(tree)),
    )?;
    r.origin = Some(origin.to_string());
    Ok(Some(r))
}

/// The blobs [`space_record`] reads (rcc_activate.json's), which a lazily
/// served catalog fetches before its run starts.
pub fn startup_digests(tree: &Tree) -> Vec<String> {
    tree.resolve(Path::new("rcc_activate.json"))
        .filter(|f| f.stats_as_file())
        .and_then(|f| follow(tree, f))
        .and_then(|f| f.digest().map(str::to_string))
        .into_iter()
        .collect()
}

fn resolve_key(
    locations: &Locations,
    hololib: Hololib,
    key: String,
    bp: Blueprint,
    source: &Path,
    (controller, space): (&str, &str),
    (catalog_path, loaded): (PathBuf, Option<Tree>),
) -> Result<Resolved> {
    let index_dir = locations.home.index();
    let summarized = match loaded {
        None => Summary::load(&index_dir, &catalog_path),
        Some(_) => None,
    };
    let tree = match summarized {
        Some(summary) => {
            tracing::debug!("catalog summary read; its tree is loaded only if this run serves it");
            TreeRef::summarized(summary, &index_dir)
        }
        None => {
            let tree = match loaded {
                Some(t) => t,
                None => Tree::load_indexed(&catalog_path, &index_dir)?,
            };
            let record = space_record(&tree, &hololib).map_err(|e| match e {
                Error::Blob { .. } => e,
                other => Error::catalog(&catalog_path, other.to_string()),
            })?;
            let tree = TreeRef::loaded(Arc::new(tree), record, &index_dir);
            tree.summary().save(&index_dir);
            tree
        }
    };
    let space_name = locations.space_name(controller, space);
    let space_path = locations.space_path(tree.recorded_path(), controller, space);
    let facts = space_facts(&tree.summary().space, &space_name)
        .map_err(|e| Error::catalog(&catalog_path, e))?;
    let pycache_dir = pycache_dir(locations, &key, tree.fingerprint());
    Ok(Resolved {
        conda_file: source.to_path_buf(),
        blueprint: bp,
        hololib,
        catalog_key: key,
        catalog_path,
        tree: Arc::new(tree),
        space_name,
        space_path,
        facts,
        pycache_dir,
        origin: None,
        fetched: Default::default(),
    })
}

/// `<VHRUN_HOME>/pycache/<catalog key>/<16 hex of the catalog's bytes>`
/// (`fingerprint` = `Tree::fingerprint`, rcc's Sipit of those bytes): a
/// catalog re-imported with other contents gets a fresh cache (Python
/// validates .pyc files by source mtime and size, and every restored file
/// has the same mtime).
pub fn pycache_dir(locations: &Locations, catalog_key: &str, fingerprint: u64) -> PathBuf {
    let version = crate::digest::textual(fingerprint, 0);
    locations.home.pycache().join(catalog_key).join(version)
}

impl Resolved {
    /// The inputs of `environ::build` for this environment. Fails on a
    /// malformed `settings.yaml` in ROBOCORP_HOME.
    pub fn env_inputs(
        &self,
        locations: &Locations,
        robot: Option<&Robot>,
        opts: EnvOptions,
    ) -> Result<EnvInputs> {
        let network = NetworkSettings::load(&locations.robocorp_home)?.variables();
        let inherited: environ::EnvList = std::env::vars_os().collect();
        if opts.workspace.is_some() {
            warn_no_control_room(&inherited, opts.full);
        }
        let rcc_exe = crate::shim::rcc_exe(&inherited);
        Ok(EnvInputs {
            inherited,
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
            rcc_exe,
            rcc_version: environ::rcc_version(),
            temp_dir: opts.temp_dir,
            bytecode: if opts.rcc_env {
                Bytecode::Rcc
            } else {
                Bytecode::Cache(self.pycache_dir.clone())
            },
            robot: robot.map(RobotEnv::from),
            network,
            workspace: opts.workspace,
        })
    }
}

/// rcc's variables of a `-w` run that only Control Room can give.
const CONTROL_ROOM_VARS: [&str; 4] = [
    "RC_API_SECRET_HOST",
    "RC_API_WORKITEM_HOST",
    "RC_API_SECRET_TOKEN",
    "RC_API_WORKITEM_TOKEN",
];

/// `-w` sets only `RC_WORKSPACE_ID`: say so, unless the task inherits the
/// rest from vhrun's own environment.
fn warn_no_control_room(inherited: &environ::EnvList, full: bool) {
    let missing: Vec<&str> = CONTROL_ROOM_VARS
        .into_iter()
        .filter(|k| !full || !inherited.iter().any(|(key, _)| key == k))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "--workspace: vhrun does not authorize with Control Room, so only RC_WORKSPACE_ID is set; \
             {} must come from vhrun's own environment",
            missing.join(", ")
        );
    }
}

/// What rcc's environment builder asks of the space, answered from the
/// catalog's tree: `bin/python3` or `bin/python`, `pyvenv.cfg`, and
/// `rcc_activate.json` as stored (its blob, verified), with its offsets.
pub fn space_record(tree: &Tree, lib: &Hololib) -> Result<SpaceRecord> {
    let python = tree.resolve(Path::new("bin")).and_then(|bin| {
        ["python3", "python"]
            .into_iter()
            .find(|n| {
                tree.lookup(bin.ino(), n.as_bytes())
                    .is_some_and(|f| f.stats_as_file())
            })
            .map(str::to_string)
    });
    let pyvenv_cfg = tree
        .resolve(Path::new("pyvenv.cfg"))
        .is_some_and(|f| f.stats_as_file());
    let activation = match tree
        .resolve(Path::new("rcc_activate.json"))
        .filter(|f| f.stats_as_file())
        .and_then(|f| follow(tree, f))
    {
        Some(f) => {
            if let Some(d) = f.defect() {
                return Err(Error::catalog(
                    tree.catalog_path(),
                    format!("rcc_activate.json: {}", d.describe()),
                ));
            }
            let digest = f.digest().unwrap_or_default();
            let content = crate::hololib::blob::read_verified(&lib.blob_path(digest), digest)?;
            Some((content, f.rewrite().to_vec()))
        }
        None => None,
    };
    Ok(SpaceRecord {
        python,
        pyvenv_cfg,
        activation,
    })
}

/// The space facts of `record` for the space named `space_name` (its
/// activation relocated there). `Err` says what is wrong with the file.
pub fn space_facts(
    record: &SpaceRecord,
    space_name: &str,
) -> std::result::Result<SpaceFacts, String> {
    let activation = match &record.activation {
        Some((content, offsets)) => {
            let mut content = content.clone();
            let offsets: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
            crate::relocate::patch_slice(&mut content, &offsets, space_name.as_bytes())
                .map_err(|e| format!("rcc_activate.json: {e}"))?;
            environ::parse_activation(&content)
        }
        None => Vec::new(),
    };
    Ok(SpaceFacts {
        python: record.python.clone(),
        pyvenv_cfg: record.pyvenv_cfg,
        activation,
    })
}

/// The file a node stands for: itself, or the file its symlink chain ends
/// at inside the tree (the catalog records a symlinked file with its
/// target's digest; the tree keeps only the link). `None` if the chain
/// leaves the tree or loops.
fn follow<'t>(tree: &'t Tree, mut node: NodeRef<'t>) -> Option<NodeRef<'t>> {
    use std::os::unix::ffi::OsStrExt;
    for _ in 0..40 {
        let target = match node.kind() {
            Kind::File => return Some(node),
            Kind::Dir => return None,
            Kind::Symlink => node.symlink_target()?,
        };
        let target = Path::new(std::ffi::OsStr::from_bytes(target));
        let mut path = tree.path(node.parent());
        for c in target.components() {
            match c {
                Component::Normal(n) => path.push(n),
                Component::ParentDir => {
                    if !path.pop() {
                        return None;
                    }
                }
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        node = tree.resolve(&path)?;
    }
    None
}
