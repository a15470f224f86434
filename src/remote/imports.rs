//! What a Python module imports when it runs, and which package
//! directories and modules of a tree those imports are: a lazily served
//! tree fetches them ahead while the task is still busy with the module
//! that names them (`Batching::Imports`), and reads the modules they run
//! for their own imports in turn, instead of one round trip per package
//! directory the import then opens, one after the other.
//!
//! Only statements at column 0 count: `import a.b as c, d` and
//! `from .x import (y, z)` (names in parentheses may span lines). Those run
//! when the module is imported; indented ones (in a function, a `try:`, an
//! `if TYPE_CHECKING:`) may never run. Text in triple-quoted strings is
//! skipped. A wrong guess costs bytes, never correctness: what is fetched
//! ahead is verified and kept like any other blob.

use crate::tree::{Kind, Tree};

/// One import statement: `level` leading dots, the dotted `module`, and
/// for `from ... import` the `names` imported from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub level: usize,
    pub module: Vec<String>,
    pub names: Vec<String>,
}

/// The top-level imports of Python source `src`.
pub fn scan(src: &[u8]) -> Vec<Import> {
    let text = String::from_utf8_lossy(src);
    let mut out = Vec::new();
    let mut lines = text.lines();
    let mut in_string: Option<&str> = None;
    while let Some(line) = lines.next() {
        if let Some(q) = in_string {
            if line.contains(q) {
                in_string = None;
            }
            continue;
        }
        let code = line.split('#').next().unwrap_or_default();
        // `__import__('x')` at the top level (a `.pth` file's idiom).
        out.extend(dunder_imports(code));
        if let Some(rest) = code.strip_prefix("import ") {
            out.extend(plain_imports(rest));
        } else if let Some(rest) = code.strip_prefix("from ") {
            let mut stmt = rest.to_string();
            // Names in parentheses (or after a backslash) go on below.
            while (stmt.contains('(') && !stmt.contains(')')) || stmt.trim_end().ends_with('\\') {
                let Some(more) = lines.next() else { break };
                stmt = stmt.trim_end().trim_end_matches('\\').to_string() + " ";
                stmt += more.split('#').next().unwrap_or_default();
            }
            out.extend(from_import(&stmt));
        } else {
            for q in ["\"\"\"", "'''"] {
                if code.matches(q).count() % 2 == 1 {
                    in_string = Some(q);
                    break;
                }
            }
        }
        // `a = 1; import b`: a statement after a `;` runs as well (as
        // `python -c` code is often written).
        if in_string.is_none() && !code.starts_with(char::is_whitespace) {
            for stmt in code.split(';').skip(1).map(str::trim_start) {
                if let Some(rest) = stmt.strip_prefix("import ") {
                    out.extend(plain_imports(rest));
                } else if let Some(rest) = stmt.strip_prefix("from ") {
                    out.extend(from_import(rest));
                }
            }
        }
    }
    out
}

/// The modules named by `__import__('a.b')` calls in `code`.
fn dunder_imports(code: &str) -> Vec<Import> {
    code.match_indices("__import__(")
        .filter_map(|(at, call)| {
            let arg = code[at + call.len()..].trim_start();
            let q = arg.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let name = arg[1..].split(q).next()?;
            Some(Import {
                level: 0,
                module: dotted(name)?,
                names: Vec::new(),
            })
        })
        .collect()
}

/// `a.b as c, d` (after `import `; a `;` ends the statement).
fn plain_imports(rest: &str) -> Vec<Import> {
    let rest = rest.split(';').next().unwrap_or_default();
    rest.split(',')
        .filter_map(|item| item.split_whitespace().next())
        .filter_map(dotted)
        .map(|module| Import {
            level: 0,
            module,
            names: Vec::new(),
        })
        .collect()
}

/// `..x.y import (a, b as c)` (after `from `).
fn from_import(stmt: &str) -> Option<Import> {
    let (module, names) = stmt.split_once(" import")?;
    let module = module.trim();
    let level = module.len() - module.trim_start_matches('.').len();
    let rest = &module[level..];
    let module = if rest.is_empty() {
        Vec::new()
    } else {
        dotted(rest)?
    };
    if level == 0 && (module.is_empty() || module[0] == "__future__") {
        return None;
    }
    let names = names
        .replace(['(', ')', '\\'], " ")
        .split(',')
        .filter_map(|n| n.split_whitespace().next())
        .filter(|n| is_identifier(n))
        .map(str::to_string)
        .collect();
    Some(Import {
        level,
        module,
        names,
    })
}

/// `a.b.c` as its parts, if each is an identifier.
fn dotted(s: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = s.split('.').map(str::to_string).collect();
    parts.iter().all(|p| is_identifier(p)).then_some(parts)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// The `site-packages` directories of `tree`.
fn site_packages(tree: &Tree) -> impl Iterator<Item = crate::tree::NodeRef<'_>> {
    (1..=tree.len() as u64)
        .filter_map(|ino| tree.get(ino))
        .filter(|n| n.kind() == Kind::Dir && n.name() == b"site-packages")
}

/// Where top-level names are found in `tree`, in Python's order: for each
/// `site-packages` directory, its `pythonX.Y` parent (the standard
/// library), the `lib-dynload` beside it, then the `site-packages` itself.
pub fn roots(tree: &Tree) -> Vec<u64> {
    let mut out = Vec::new();
    for n in site_packages(tree) {
        let ino = n.ino();
        let stdlib = n.parent();
        out.push(stdlib);
        if let Some(dynload) = tree.lookup(stdlib, b"lib-dynload") {
            out.push(dynload.ino());
        }
        out.push(ino);
    }
    out
}

/// What the imports of one module lead to in a tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Package directories the imports name (their files get fetched).
    pub dirs: Vec<u64>,
    /// Module files the imports run (`__init__.py` of each package along
    /// the way, and the `.py` modules named): read in turn for what they
    /// import, before the task gets there.
    pub modules: Vec<u64>,
    /// Extension modules (`name.*.so`) the imports load: fetched, not read.
    pub files: Vec<u64>,
}

impl Resolved {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.modules.is_empty() && self.files.is_empty()
    }

    fn dir(&mut self, tree: &Tree, d: u64) {
        if !self.dirs.contains(&d) {
            self.dirs.push(d);
            if let Some(init) = tree.lookup(d, b"__init__.py") {
                self.module(init.ino());
            }
            // A wheel repaired by auditwheel keeps the shared libraries its
            // extensions link to beside the package (`numpy.libs`): the
            // dynamic loader opens them when the package's extensions load.
            if let Some(n) = tree.get(d) {
                let mut libs = n.name().to_vec();
                libs.extend_from_slice(b".libs");
                let sibling = tree.lookup(n.parent(), &libs);
                if let Some(l) = sibling.filter(|l| l.kind() == Kind::Dir) {
                    if !self.dirs.contains(&l.ino()) {
                        self.dirs.push(l.ino());
                    }
                }
            }
        }
    }
    /// Add what `other` leads to.
    pub fn extend(&mut self, other: Resolved) {
        for d in other.dirs {
            if !self.dirs.contains(&d) {
                self.dirs.push(d);
            }
        }
        for m in other.modules {
            self.module(m);
        }
        for f in other.files {
            self.file(f);
        }
    }

    fn file(&mut self, f: u64) {
        if !self.files.contains(&f) {
            self.files.push(f);
        }
    }
    fn module(&mut self, m: u64) {
        if !self.modules.contains(&m) {
            self.modules.push(m);
        }
    }
}

/// Where the `imports` made by the module file `file` lead in `tree`:
/// every package directory along each module's dotted path, the names
/// imported from a package that are packages or modules themselves, and
/// the module files all of that runs. Top-level names are looked up in
/// `roots`, then in the module's own import root (the first directory
/// above it without an `__init__.py`).
pub fn resolve(tree: &Tree, roots: &[u64], file: u64, imports: &[Import]) -> Resolved {
    match tree.get(file).map(|n| n.parent()) {
        Some(dir) => resolve_from(tree, roots, Some(dir), imports),
        None => Resolved::default(),
    }
}

/// Where the imports of a task's entry (its `-c` code, its script, its
/// `-m` module: outside the tree) lead in `tree`: the top-level ones,
/// looked up in `roots`.
pub fn resolve_entry(tree: &Tree, roots: &[u64], imports: &[Import]) -> Resolved {
    resolve_from(tree, roots, None, imports)
}

/// [`resolve`] for imports made by a module of directory `dir` (`None`:
/// from outside the tree, where only top-level imports are followed).
fn resolve_from(tree: &Tree, roots: &[u64], dir: Option<u64>, imports: &[Import]) -> Resolved {
    let mut out = Resolved::default();
    let child = |parent: u64, name: &str, kind: Kind| {
        tree.lookup(parent, name.as_bytes())
            .filter(|n| n.kind() == kind)
            .map(|n| n.ino())
    };
    let module_file = |parent: u64, name: &str| child(parent, &format!("{name}.py"), Kind::File);
    let extension = |parent: u64, name: &str| extension_file(tree, parent, name);
    let is_package = |d: u64| tree.lookup(d, b"__init__.py").is_some();
    let mut search: Vec<u64> = roots.to_vec();
    if let Some(mut own_root) = dir {
        while is_package(own_root) && own_root != crate::tree::ROOT {
            match tree.get(own_root) {
                Some(n) => own_root = n.parent(),
                None => break,
            }
        }
        if !search.contains(&own_root) {
            search.push(own_root);
        }
    }
    for imp in imports {
        let base = if imp.level > 0 {
            let mut b = dir;
            for _ in 1..imp.level {
                b = b.and_then(|d| tree.get(d)).map(|n| n.parent());
            }
            b
        } else {
            // The first root that has the top-level name, as a package or
            // as a module file (which shadows later roots).
            let first = &imp.module[0];
            search.iter().copied().find(|&r| {
                child(r, first, Kind::Dir).is_some()
                    || module_file(r, first).is_some()
                    || extension(r, first).is_some()
            })
        };
        let Some(mut cur) = base else { continue };
        let mut whole = true;
        for part in &imp.module {
            if let Some(d) = child(cur, part, Kind::Dir) {
                out.dir(tree, d);
                cur = d;
                continue;
            }
            if let Some(m) = module_file(cur, part) {
                out.module(m);
            } else if let Some(f) = extension(cur, part) {
                out.file(f);
            }
            whole = false;
            break;
        }
        if whole {
            for name in &imp.names {
                if let Some(d) = child(cur, name, Kind::Dir) {
                    out.dir(tree, d);
                } else if let Some(m) = module_file(cur, name) {
                    out.module(m);
                } else if let Some(f) = extension(cur, name) {
                    out.file(f);
                }
            }
        }
    }
    out
}

/// The imports of a command's Python entry, when it runs a Python of the
/// environment: `-c CODE` (scanned), `-m MODULE` (imported), or a script
/// (read, if it is a file; relative to `cwd`). Nothing for other commands.
pub fn entry_imports(argv: &[std::ffi::OsString], cwd: &std::path::Path) -> Vec<Import> {
    let is_python = argv.first().is_some_and(|a| {
        let name = std::path::Path::new(a).file_name().unwrap_or_default();
        name.to_string_lossy().starts_with("python")
    });
    if !is_python {
        return Vec::new();
    }
    let mut args = argv[1..].iter().map(|a| a.to_string_lossy());
    while let Some(a) = args.next() {
        match a.as_ref() {
            "-c" => return args.next().map(|c| scan(c.as_bytes())).unwrap_or_default(),
            "-m" => {
                return args
                    .next()
                    .and_then(|m| dotted(&m))
                    .map(|module| {
                        vec![Import {
                            level: 0,
                            module,
                            names: Vec::new(),
                        }]
                    })
                    .unwrap_or_default()
            }
            // options whose value is the next argument
            "-X" | "-W" | "--check-hash-based-pycs" => {
                args.next();
            }
            o if o.starts_with('-') => {}
            script => {
                let mut text = Vec::new();
                let read = std::fs::File::open(cwd.join(script)).and_then(|f| {
                    use std::io::Read;
                    f.take(ENTRY_READ).read_to_end(&mut text)
                });
                return read.map(|_| scan(&text)).unwrap_or_default();
            }
        }
    }
    Vec::new()
}

/// How much of a task's script is read for its imports.
const ENTRY_READ: u64 = 256 << 10;

/// One import as a word of `vhrun`'s own lines (the warm server's
/// `entry` request): `a.b` or `a.b:c,d`.
pub fn encode(imp: &Import) -> String {
    let module = imp.module.join(".");
    if imp.names.is_empty() {
        module
    } else {
        format!("{module}:{}", imp.names.join(","))
    }
}

/// [`encode`] read back (a top-level import); `None` for anything else.
pub fn decode(word: &str) -> Option<Import> {
    let (module, names) = word.split_once(':').unwrap_or((word, ""));
    let names: Vec<String> = names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    names.iter().all(|n| is_identifier(n)).then_some(())?;
    Some(Import {
        level: 0,
        module: dotted(module)?,
        names,
    })
}

/// The extension module `name` in directory `dir`: `name.so`, or
/// `name.<tag>.so` (`_datetime.cpython-311-x86_64-linux-gnu.so`).
fn extension_file(tree: &Tree, dir: u64, name: &str) -> Option<u64> {
    let d = tree.get(dir).filter(|d| d.kind() == Kind::Dir)?;
    d.children().find(|&c| {
        tree.get(c).is_some_and(|n| {
            let f = n.name();
            n.kind() == Kind::File
                && f.ends_with(b".so")
                && f.starts_with(name.as_bytes())
                && f.get(name.len()) == Some(&b'.')
        })
    })
}

/// What every Python interpreter of `tree` opens as it starts, before any
/// of the task's own imports: for each standard library (the parent of a
/// `site-packages`), its top-level modules and `encodings`, `site.py` (read
/// for its imports), and the `.pth` files of `site-packages` (read too: a
/// `.pth` line that starts with `import` runs). Fetched ahead when a lazy
/// tree is first opened, beside the interpreter's own first misses.
pub fn startup(tree: &Tree) -> Resolved {
    let mut out = Resolved::default();
    for site in site_packages(tree) {
        let stdlib = site.parent();
        out.dir(tree, stdlib);
        if let Some(enc) = tree.lookup(stdlib, b"encodings") {
            out.dir(tree, enc.ino());
        }
        if let Some(m) = tree.lookup(stdlib, b"site.py") {
            out.module(m.ino());
        }
        for c in site.children() {
            if tree
                .get(c)
                .is_some_and(|n| n.kind() == Kind::File && n.name().ends_with(b".pth"))
            {
                out.module(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(level: usize, module: &str, names: &[&str]) -> Import {
        Import {
            level,
            module: if module.is_empty() {
                Vec::new()
            } else {
                module.split('.').map(str::to_string).collect()
            },
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn scans_the_imports_a_module_runs() {
        let src = br#""""A module.

import not_this   (docstring text)
"""
from __future__ import annotations
import os, numpy.linalg as la
import a.b.c
from . import x, y as z
from ..core.frame import (
    DataFrame,  # a comment
    Series,
)
from pkg.sub import \
    one, two
from .m import *
try:
    import optional
except ImportError:
    pass
def f():
    import inside
x = 1  # import nothing
'''
from quoted import thing
'''
import after_quote
"#;
        assert_eq!(
            scan(src),
            vec![
                imp(0, "os", &[]),
                imp(0, "numpy.linalg", &[]),
                imp(0, "a.b.c", &[]),
                imp(1, "", &["x", "y"]),
                imp(2, "core.frame", &["DataFrame", "Series"]),
                imp(0, "pkg.sub", &["one", "two"]),
                imp(1, "m", &[]),
                imp(0, "after_quote", &[]),
            ]
        );
    }

    #[test]
    fn a_pth_files_imports_are_scanned() {
        let pth = b"import os; var = 'X'; enabled = os.environ.get(var) == 'local'; \
            enabled and __import__('_distutils_hack').add_shim(); \n\
            x = __import__(\"a.b\") # and __import__(name) is no literal\n";
        assert_eq!(
            scan(pth),
            vec![
                imp(0, "_distutils_hack", &[]),
                imp(0, "os", &[]),
                imp(0, "a.b", &[]),
            ]
        );
    }

    #[test]
    fn a_commands_entry_is_scanned_for_its_imports() {
        let argv = |a: &[&str]| {
            a.iter()
                .map(|s| s.into())
                .collect::<Vec<std::ffi::OsString>>()
        };
        let here = std::path::Path::new("/nonexistent");
        assert_eq!(
            entry_imports(
                &argv(&[
                    "python3",
                    "-u",
                    "-X",
                    "importtime",
                    "-c",
                    "import sys; x = 1; import pandas, numpy"
                ]),
                here
            ),
            vec![
                imp(0, "sys", &[]),
                imp(0, "pandas", &[]),
                imp(0, "numpy", &[])
            ]
        );
        assert_eq!(
            entry_imports(
                &argv(&["/env/bin/python", "-m", "robot.run", "--report", "NONE"]),
                here
            ),
            vec![imp(0, "robot.run", &[])]
        );
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("task.py"), "from robocorp import tasks\n").unwrap();
        assert_eq!(
            entry_imports(&argv(&["python", "-B", "task.py", "arg"]), t.path()),
            vec![imp(0, "robocorp", &["tasks"])]
        );
        assert!(entry_imports(&argv(&["python", "missing.py"]), t.path()).is_empty());
        assert!(entry_imports(&argv(&["sh", "-c", "import os"]), here).is_empty());
        for i in [imp(0, "a.b", &[]), imp(0, "a", &["b", "c"])] {
            assert_eq!(decode(&encode(&i)), Some(i));
        }
        assert_eq!(decode("a b"), None);
        assert_eq!(decode("a:b c"), None);
    }

    #[test]
    fn odd_text_scans_to_nothing_rather_than_failing() {
        assert_eq!(
            scan(b"import \nfrom import x\nfrom a impor b\n\xff\xfe"),
            vec![]
        );
        assert_eq!(scan(b"from (\n"), vec![]);
    }

    /// A tree of `paths` (files; their directories made along), lifted
    /// from a temporary directory, and the inode of each path.
    fn tree_of(paths: &[&str]) -> (Tree, impl Fn(&Tree, &str) -> u64) {
        let t = tempfile::tempdir().unwrap();
        // 24 bytes, as rcc's space names.
        let root = t.path().join("imports_env_0123456789ab");
        for p in paths {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, p.as_bytes()).unwrap();
        }
        let lib = crate::hololib::Hololib::new(t.path().join("hololib"));
        let opts = crate::hololib::lift::LiftOptions {
            blueprint: "imports".into(),
            blueprint_hash: "0123456789abcdef".into(),
            no_compress: false,
            identity_yaml: false,
            progress: false,
        };
        let lifted = crate::hololib::lift::lift(&lib, &root, &opts).unwrap();
        let tree = Tree::from_catalog(&lifted.catalog, &lifted.catalog_path).unwrap();
        let ino = |tree: &Tree, p: &str| tree.resolve(std::path::Path::new(p)).unwrap().ino();
        (tree, ino)
    }

    #[test]
    fn finds_the_packages_and_modules_an_import_runs() {
        let sp = "lib/python3.11/site-packages";
        let (tree, ino) = tree_of(&[
            "lib/python3.11/os.py",
            "lib/python3.11/json/__init__.py",
            "lib/python3.11/lib-dynload/_ssl.so",
            &format!("{sp}/pandas/__init__.py"),
            &format!("{sp}/pandas/core/__init__.py"),
            &format!("{sp}/pandas/core/frame.py"),
            &format!("{sp}/pandas/core/arrays/__init__.py"),
            &format!("{sp}/pandas/io/__init__.py"),
            &format!("{sp}/numpy/__init__.py"),
            &format!("{sp}/numpy/linalg/__init__.py"),
            &format!("{sp}/json/__init__.py"),
        ]);
        let roots = roots(&tree);
        let d = |p: &str| ino(&tree, p);
        assert_eq!(
            roots,
            vec![d("lib/python3.11"), d("lib/python3.11/lib-dynload"), d(sp)]
        );
        let frame = d(&format!("{sp}/pandas/core/frame.py"));
        let got = resolve(
            &tree,
            &roots,
            frame,
            &[
                imp(0, "numpy.linalg", &[]),
                imp(1, "", &["arrays", "frame"]),
                imp(2, "io", &[]),
                imp(0, "pandas.core", &["arrays"]),
                imp(0, "os", &[]),
                imp(0, "json", &[]),
                imp(0, "missing.thing", &[]),
                imp(3, "too.far", &[]),
            ],
        );
        let p = |rel: &str| d(&format!("{sp}/{rel}"));
        assert_eq!(
            got.dirs,
            vec![
                p("numpy"),
                p("numpy/linalg"),
                p("pandas/core/arrays"),
                p("pandas/io"),
                p("pandas"),
                p("pandas/core"),
                // The standard library's json, first on the path, not the
                // site-packages one it shadows.
                d("lib/python3.11/json"),
            ]
        );
        assert_eq!(
            got.modules,
            vec![
                p("numpy/__init__.py"),
                p("numpy/linalg/__init__.py"),
                p("pandas/core/arrays/__init__.py"),
                // `from . import frame`: the module itself
                frame,
                p("pandas/io/__init__.py"),
                p("pandas/__init__.py"),
                p("pandas/core/__init__.py"),
                d("lib/python3.11/os.py"),
                d("lib/python3.11/json/__init__.py"),
            ]
        );
    }

    #[test]
    fn extensions_and_the_libraries_beside_a_wheel_are_found() {
        let sp = "lib/python3.11/site-packages";
        let (tree, ino) = tree_of(&[
            "lib/python3.11/site.py",
            "lib/python3.11/encodings/__init__.py",
            "lib/python3.11/lib-dynload/_datetime.cpython-311-x86_64-linux-gnu.so",
            "lib/python3.11/lib-dynload/_datetimex.so",
            &format!("{sp}/numpy/__init__.py"),
            &format!("{sp}/numpy/_core/__init__.py"),
            &format!("{sp}/numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"),
            &format!("{sp}/numpy.libs/libopenblas.so"),
            &format!("{sp}/distutils-precedence.pth"),
            &format!("{sp}/six.py"),
        ]);
        let roots = roots(&tree);
        let d = |p: &str| ino(&tree, p);
        let p = |rel: &str| d(&format!("{sp}/{rel}"));
        let got = resolve(
            &tree,
            &roots,
            p("numpy/_core/__init__.py"),
            &[
                imp(0, "_datetime", &[]),
                imp(1, "", &["_multiarray_umath"]),
                imp(0, "numpy", &[]),
            ],
        );
        assert_eq!(
            got.files,
            vec![
                d("lib/python3.11/lib-dynload/_datetime.cpython-311-x86_64-linux-gnu.so"),
                p("numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"),
            ]
        );
        assert_eq!(got.dirs, vec![p("numpy"), p("numpy.libs")]);
        assert_eq!(got.modules, vec![p("numpy/__init__.py")]);

        let start = startup(&tree);
        assert_eq!(
            start.dirs,
            vec![d("lib/python3.11"), d("lib/python3.11/encodings")]
        );
        assert_eq!(
            start.modules,
            vec![
                d("lib/python3.11/encodings/__init__.py"),
                d("lib/python3.11/site.py"),
                p("distutils-precedence.pth"),
            ]
        );
    }
}
