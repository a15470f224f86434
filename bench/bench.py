#!/usr/bin/env python3
"""The side-by-side benchmark behind `bench/run` (read bench/README.md).

Contenders, all serving the same environment at an rcc-shaped path:
  a      rcc's copy model: `vhrun restore` into a fresh space, then the task
         with PYTHONDONTWRITEBYTECODE=1 (rcc forbids bytecode writes)
  a-raw  the same from the --no-compress hololib               (full run)
  b      squashfs image (zstd), squashfuse + overlay at the env's own path
  c      `vhrun exec` / `vhrun run` after `vhrun prepare`: the catalog's
         kernel image (EROFS + overlay data-only layer), vhrun's default as
         root once an image exists
  c-raw  the same over the --no-compress hololib               (full run)
  c-fuse the FUSE tree (VHRUN_IMAGE=off): the warm per-catalog server,
         passthrough on: what runs get before the image exists, rootless
  c-nopt c-fuse with VHRUN_PASSTHROUGH=off (vhrun serves the reads)
  c-perrun  c-fuse with VHRUN_SERVER=off: a FUSE mount of its own per run
  c-user c-fuse as an unprivileged user (user `vhbench`, a home of its own):
         the rootless warm server, no passthrough: the path most users get
  d      the environment as a plain directory: the floor
  e      bubblewrap over the plain directory (`bwrap --dev-bind / /
         --unshare-all --die-with-parent`; with an overlay of it where the
         installed bwrap has --overlay): the activation anchor
b, c and d keep bytecode in a persistent PYTHONPYCACHEPREFIX (vhrun's own
per-catalog cache for c).

Two views of the Python workloads: end to end (the contender's whole
command: for c activation, the task, teardown) and in-environment (the
interpreter alone, timed by inenv.sh from inside the contender's
environment, one fresh run / mount / copy per sample).

VHRUN_BENCH_EXTRA_ENV="K=V ..." adds variables to every vhrun contender
(c*) (the harness otherwise drops inherited VHRUN_* and PYTHON* ones);
--contenders picks the contenders.

Stdlib only; bench/plot.py draws the chart with the benchmark
environment's own interpreter (matplotlib is in it).
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
W = Path(os.environ.get("W", "/tmp/vhbench"))
ENV = W / "holotree" / "hbe7c0de_0123456789abcdt"  # rcc-shaped identity, as make-env.sh builds it
BLUEPRINT = W / "blueprint.yaml"
VH = W / "vh"
BIN = VH / "bin"
RES = VH / "results"
SPACE = W / "holotree" / "0a1b2c3_4d5e6f7_89abcdef"  # (a)'s space: rcc name shape, same parent
IMPORTS = "import pandas, numpy, sqlalchemy"
DROP = "sync; echo 3 > /proc/sys/vm/drop_caches"
VHRUN = os.environ.get("VHRUN", "vhrun")
CORES = os.cpu_count() or 1

LABELS = {
    "a": "(a) copy restore",
    "a-raw": "(a) copy, raw hololib",
    "b": "(b) squashfuse+overlay",
    "c": "(c) vhrun (kernel image)",
    "c-raw": "(c) vhrun, raw hololib",
    "c-fuse": "(c) vhrun FUSE, warm server",
    "c-nopt": "(c) vhrun FUSE, no passthrough",
    "c-perrun": "(c) vhrun FUSE, per-run mount",
    "c-user": "(c) vhrun FUSE, rootless warm server",
    "d": "(d) plain dir",
    "e": "(e) bubblewrap",
}
# The rootless contender's user, made once (`useradd --system`).
BENCH_USER = "vhbench"
BWRAP = ["bwrap", "--dev-bind", "/", "/", "--unshare-all", "--die-with-parent"]
E2E = "end to end, incl. activation+teardown"
METRICS = {
    "true": "activation (`true`)",
    "pass": f"`python -c pass`, warm, {E2E}",
    "pass-in": "`python -c pass`, warm, in-environment",
    "import": f"heavy import, warm, {E2E}",
    "import-in": "heavy import, warm, in-environment",
    "robot": "robot run (report), warm",
    "cold": "cold first run (heavy import)",
    "conc": "8 concurrent heavy imports",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def du(path):
    """Apparent bytes and file count under path (0, 0 if absent)."""
    total = files = 0
    for root, dirs, names in os.walk(path):
        for n in names + dirs:
            try:
                st = os.lstat(os.path.join(root, n))
            except FileNotFoundError:
                continue
            if n in names:
                files += 1
                total += st.st_size
    return total, files


# ---------------------------------------------------------------- setup


def make_env_script():
    # The repository's copy (tests/oracles, from shared/bench) unless a
    # shared/ directory is named.
    for c in [os.environ.get("VHRUN_SHARED"), REPO.parent / "shared"]:
        if c and (Path(c) / "bench" / "make-env.sh").is_file():
            return Path(c) / "bench" / "make-env.sh"
    return REPO / "tests" / "oracles" / "make-env.sh"


def ensure_env():
    hist = ENV / "conda-meta" / "history"
    if (ENV / "bin" / "python3").exists() and hist.is_file() and "# cmd: make-env.sh" in hist.read_text():
        return
    log(f"building the benchmark environment at {ENV} (make-env.sh, several minutes)")
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", "python3"))
    sh([str(make_env_script()), str(ENV)], env=env)


def ensure_blueprint():
    if BLUEPRINT.is_file():
        return
    # As bench/run-baseline.sh: conda-style yaml from the env's pip pins.
    ver = subprocess.run([str(ENV / "bin" / "python3"), "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    lines = ["channels:", "- conda-forge", "dependencies:", f"- python={ver}", "- pip:"]
    for l in (ENV / "conda-meta" / "history").read_text().splitlines():
        if l.startswith("+pypi::"):
            name, _, v = l[len("+pypi::"):].rpartition("-")
            lines.append(f"  - {name}=={v}")
    BLUEPRINT.write_text("\n".join(lines) + "\n")


def ensure_lift(variant):
    """Lift ENV into VH/<variant>/hololib once; returns (catalog key, seconds or None if cached)."""
    root = VH / variant
    key_file = root / "key"
    if key_file.is_file() and (root / "hololib" / "catalog" / key_file.read_text().strip()).is_file():
        return key_file.read_text().strip(), None
    shutil.rmtree(root / "hololib", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    args = [VHRUN, "lift", str(ENV), "--blueprint", str(BLUEPRINT), "--hololib", str(root / "hololib"),
            "--no-identity-yaml"] + (["--no-compress"] if variant == "raw" else [])
    log(f"lifting {ENV} into {root}/hololib ({variant})")
    t = time.perf_counter()
    out = subprocess.run(args, env=dict(os.environ, ROBOCORP_HOME=str(root)), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench: vhrun lift failed: {out.stderr.strip()}")
    secs = time.perf_counter() - t
    key = out.stdout.strip().splitlines()[-1]
    key_file.write_text(key + "\n")
    (root / "lift-seconds").write_text(f"{secs:.2f}\n")
    return key, secs


def ensure_squashfs():
    img = VH / "sq" / "env.sqfs"
    (VH / "sq" / "runs").mkdir(parents=True, exist_ok=True)
    if img.is_file():
        return img, None
    log(f"mksquashfs {ENV} (zstd)")
    t = time.perf_counter()
    sh(["mksquashfs", str(ENV), str(img) + ".tmp", "-comp", "zstd", "-noappend", "-quiet", "-no-progress"],
       stdout=subprocess.DEVNULL)
    os.rename(str(img) + ".tmp", img)
    return img, time.perf_counter() - t


def ensure_robot():
    """robots/report with the benchmark environment's blueprint as conda.yaml, so
    `vhrun run -r` resolves it to the lifted catalog (the report needs pandas and
    openpyxl, both in the benchmark env)."""
    robot = VH / "robot"
    shutil.rmtree(robot, ignore_errors=True)
    shutil.copytree(REPO / "robots" / "report", robot)
    shutil.copy(BLUEPRINT, robot / "conda.yaml")
    return robot


SCRIPTS = {
    # kind.sh PREFIX KIND: the workload, with the interpreter of PREFIX.
    "kind.sh": r'''#!/bin/bash
. "$(dirname "$0")/bench.env"
case $2 in
  true) exec true ;;
  pass) exec "$1/bin/python3" -c pass ;;
  import) exec "$1/bin/python3" -c "$IMPORTS" ;;
  robot) cd "$ROBOT" && ROBOT_ARTIFACTS=$OUT exec "$1/bin/python3" report.py data/sales.csv ;;
  pass-in|import-in) PATH="$1/bin:$PATH" exec "$BIN/inenv.sh" "${2%-in}" ;;
  *) echo "kind.sh: unknown kind $2" >&2; exit 2 ;;
esac
''',
    # a.sh KIND [SPACE]: rcc's copy model: restore into a fresh space (the
    # caller removed it), then the workload without bytecode writes.
    "a.sh": r'''#!/bin/bash
. "$(dirname "$0")/bench.env"
space=${2:-$SPACE}
"$VHRUN" restore --no-meta --catalog "$KEY" "$space" >/dev/null || exit 96
PYTHONDONTWRITEBYTECODE=1 exec "$BIN/kind.sh" "$space" "$1"
''',
    # inenv.sh pass|import: the in-environment time: the wall clock around
    # the interpreter alone ("start end", seconds, to fd 3), run as the task
    # inside every contender's environment (python3 from its PATH, looked
    # up before the clock starts). Self-contained: sources nothing.
    "inenv.sh": r'''#!/bin/bash
hash python3 || exit 95
case $1 in
  pass) s=$EPOCHREALTIME; python3 -c pass; rc=$?; e=$EPOCHREALTIME ;;
  import) s=$EPOCHREALTIME; python3 -c "@IMPORTS@"; rc=$?; e=$EPOCHREALTIME ;;
  *) echo "inenv.sh: unknown kind $1" >&2; exit 2 ;;
esac
echo "$s $e" >&3 || exit 94
exit $rc
''',
    # sq.sh KIND: squashfuse + overlay mounted at the env's own path in a
    # private mount namespace, the workload, both unmounted. SQ_KEEP=1 keeps
    # (and prints) the run directory; SQ_STATS=FILE records the squashfuse
    # daemon's peak RSS (kB) and CPU ticks before unmounting.
    "sq.sh": r'''#!/bin/bash
. "$(dirname "$0")/bench.env"
run=$(mktemp -d "$VH/sq/runs/r.XXXXXX")
mkdir "$run/lower" "$run/upper" "$run/work"
unshare -m --propagation private bash -c '
  squashfuse "$SQ_IMG" "$1/lower" || exit 97
  mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$ENV" || { umount "$1/lower"; exit 98; }
  "$BIN/kind.sh" "$ENV" "$2"; rc=$?
  if [ -n "$SQ_STATS" ]; then
    for d in /proc/[0-9]*; do
      c=$(tr "\0" " " < $d/cmdline 2>/dev/null)
      case $c in squashfuse*"$1/lower"*) pid=${d#/proc/} ;; esac
    done
    echo "$(grep VmHWM /proc/$pid/status | tr -s " " | cut -d" " -f2) $(cut -d" " -f14,15 /proc/$pid/stat)" > "$SQ_STATS"
  fi
  umount "$ENV"; umount "$1/lower"; exit $rc' sq "$run" "$1"
rc=$?
if [ -n "$SQ_KEEP" ]; then echo "$run"; else rm -rf "$run"; fi
exit $rc
''',
}


def write_scripts(keys, robot, img):
    BIN.mkdir(parents=True, exist_ok=True)
    (VH / "out").mkdir(exist_ok=True)
    env = {
        "VHRUN": VHRUN, "VH": VH, "BIN": BIN, "ENV": ENV, "SPACE": SPACE, "KEY": keys["gz"],
        "ROBOT": robot, "IMPORTS": IMPORTS, "SQ_IMG": img, "OUT": VH / "out" / "script",
    }
    (BIN / "bench.env").write_text("".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items()))
    for name, text in SCRIPTS.items():
        p = BIN / name
        p.write_text(text.replace("@IMPORTS@", IMPORTS))
        p.chmod(0o755)


# ---------------------------------------------------------------- contenders


def base_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VHRUN_"))}
    env["VHRUN_BENCH"] = "1"
    return env


def extra_env():
    """VHRUN_BENCH_EXTRA_ENV="K=V ...": variables for every vhrun contender."""
    pairs = shlex.split(os.environ.get("VHRUN_BENCH_EXTRA_ENV", ""))
    bad = [p for p in pairs if "=" not in p or p.startswith("=")]
    if bad:
        raise SystemExit(f"bench: VHRUN_BENCH_EXTRA_ENV: not K=V: {' '.join(bad)}")
    return dict(p.split("=", 1) for p in pairs)


def bwrap_argv():
    """bubblewrap's sandbox; over an overlay of the plain directory (writes
    vanish, as in vhrun's) where this bwrap has --overlay (0.9+)."""
    r = subprocess.run(["bwrap", "--help"], capture_output=True, text=True)
    if "--overlay-src" in r.stdout:
        return BWRAP + ["--overlay-src", str(ENV), "--tmp-overlay", str(ENV)]
    return BWRAP


def ensure_user_home():
    """The rootless contender's user and its ROBOCORP_HOME: a copy of the
    gz hololib (and robot) it owns, /dev/fuse opened to it (0666, as
    distributions ship it; this machine kind has 0600)."""
    if subprocess.run(["id", "-u", BENCH_USER], capture_output=True).returncode:
        sh(f"useradd --system --no-create-home --shell /usr/sbin/nologin {BENCH_USER}")
    import pwd
    pw = pwd.getpwnam(BENCH_USER)
    home = VH / "user"
    if not (home / "hololib").is_dir():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        sh(f"cp -a {VH / 'gz' / 'hololib'} {home / 'hololib'}")
        shutil.copytree(VH / "robot", home / "robot")
        sh(f"chown -R {pw.pw_uid}:{pw.pw_gid} {home}")
    os.chmod("/dev/fuse", 0o666)
    # The user's spaces go next to the environment, as rcc's shared
    # holotree (mode 1777, `rcc holotree shared --enable`) has them.
    os.chmod(W / "holotree", 0o1777)
    return (pw.pw_uid, pw.pw_gid), home


def as_user(user):
    """subprocess keywords that run a child as `user` ((uid, gid) or None)."""
    return {} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}


class Contender:
    def __init__(self, name, keys, robot):
        self.name = name
        self.robot = robot
        self.env = base_env()
        self.cold_dir = None
        # (uid, gid) to run as; None: root
        self.user = None
        if name.startswith("a"):
            variant = "raw" if name == "a-raw" else "gz"
            self.env.update(ROBOCORP_HOME=str(VH / variant), KEY=keys[variant])
        elif name == "b":
            self.env["PYTHONPYCACHEPREFIX"] = str(VH / "pyc" / "b")
        elif name == "c-user":
            self.key = keys["gz"]
            self.user, home = ensure_user_home()
            self.robot = home / "robot"
            self.env.update(extra_env())
            self.env.update(ROBOCORP_HOME=str(home), VHRUN_HOME=str(home / "vhrun"), HOME=str(home),
                            VHRUN_IMAGE="off")
            self.cold_dir = home / "vhrun-cold"
        elif name.startswith("c"):
            variant = "raw" if name == "c-raw" else "gz"
            self.key = keys[variant]
            self.env.update(extra_env())
            self.env.update(ROBOCORP_HOME=str(VH / variant), VHRUN_HOME=str(VH / variant / "vhrun"))
            if name in ("c-fuse", "c-nopt", "c-perrun"):
                self.env["VHRUN_IMAGE"] = "off"
            if name == "c-nopt":
                self.env["VHRUN_PASSTHROUGH"] = "off"
            if name == "c-perrun":
                self.env["VHRUN_SERVER"] = "off"
            self.cold_dir = VH / variant / "vhrun-cold"
        elif name in ("d", "e"):
            self.env["PYTHONPYCACHEPREFIX"] = str(VH / "pyc" / name)
            self.env["ROBOT_ARTIFACTS"] = str(VH / "out" / name)

    def label(self):
        return LABELS[self.name]

    def command(self, kind, slot=None):
        """(argv string for hyperfine -N, cwd)."""
        n = self.name
        if n.startswith("a"):
            space = f" {str(SPACE)[:-1]}{slot}" if slot is not None else ""
            return f"{BIN}/a.sh {kind}{space}", None
        if n == "b":
            return f"{BIN}/sq.sh {kind}", None
        if n.startswith("c"):
            if kind == "robot":
                return f"{VHRUN} run -r {self.robot}/robot.yaml", None
            task = {"true": "true", "pass": "python3 -c pass", "import": f"python3 -c '{IMPORTS}'",
                    "pass-in": f"{BIN}/inenv.sh pass", "import-in": f"{BIN}/inenv.sh import"}[kind]
            return f"{VHRUN} exec --catalog {self.key} -- {task}", None
        py = ENV / "bin" / "python3"
        if n == "e":
            wrap = " ".join(bwrap_argv())
            return {
                "true": (f"{wrap} true", None),
                "pass": (f"{wrap} {py} -c pass", None),
                "import": (f"{wrap} {py} -c '{IMPORTS}'", None),
                "pass-in": (f"{wrap} {BIN}/kind.sh {ENV} pass-in", None),
                "import-in": (f"{wrap} {BIN}/kind.sh {ENV} import-in", None),
                "robot": (f"{wrap} --chdir {self.robot} {py} report.py data/sales.csv", None),
            }[kind]
        return {
            "true": ("true", None),
            "pass": (f"{py} -c pass", None),
            "import": (f"{py} -c '{IMPORTS}'", None),
            "pass-in": (f"{BIN}/kind.sh {ENV} pass-in", None),
            "import-in": (f"{BIN}/kind.sh {ENV} import-in", None),
            "robot": (f"{py} report.py data/sales.csv", str(self.robot)),
        }[kind]

    def prepare(self, cold=False):
        """Shell snippet run before every timed run (not timed)."""
        steps = []
        if self.name.startswith("a"):
            # the previous copy's removal and writeback are not this run's
            steps.append(f"rm -rf {SPACE}; sync")
        if cold and self.cold_dir:
            # a cold run starts its own server: the last one goes first
            steps.append(f"{VHRUN} -q servers --stop")
            steps.append(f"rm -rf {self.cold_dir}/blobs {self.cold_dir}/images")
        if cold:
            steps.append(DROP)
        return f"sh -c '{'; '.join(steps)}'" if steps else None

    def cold_env(self):
        """Cold = page cache dropped and vhrun's blob cache emptied (issue 6);
        the bytecode caches stay, as they do across reboots. vhrun runs in a
        copy of its warm home, so emptying the blob cache costs the warm
        figures nothing."""
        env = dict(self.env)
        if self.name.startswith("c"):
            warm = Path(self.env["VHRUN_HOME"])
            shutil.rmtree(self.cold_dir, ignore_errors=True)
            shutil.copytree(warm, self.cold_dir, symlinks=True,
                            ignore=shutil.ignore_patterns("runs", "blobs", "servers", "images"))
            env["VHRUN_HOME"] = str(self.cold_dir)
            # A first run has no image; the one its server would build
            # afterwards in the background must not warm the next sample.
            env["VHRUN_IMAGE"] = "off"
        return env


def hyperfine(name, cmd, env, runs, warmup, prepare, cwd, user=None):
    out = RES / f"{name}.json"
    if user:
        # hyperfine runs as the user and writes its export there
        out.touch()
        os.chown(out, *user)
    args = ["hyperfine", "-N", "--style", "none", "--runs", str(runs), "--warmup", str(warmup),
            "--export-json", str(out)]
    if prepare:
        args += ["--prepare", prepare]
    args.append(cmd)
    r = subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       **as_user(user))
    if r.returncode:
        return {"error": r.stdout.strip().splitlines()[-1] if r.stdout.strip() else f"exit {r.returncode}"}
    times = json.loads(out.read_text())["results"][0]["times"]
    return dict(summary(times), times=times)


def hyperfine_interleaved(jobs, batch=5):
    """hyperfine of several contenders in batches of `batch` runs taken in
    turn (A B C A B C ...), so that this VM's drift (its speed swings by
    half within minutes) falls on every contender alike: a ratio between
    two of them is then worth quoting. jobs: name -> (cmd, env, runs,
    warmup, prepare, cwd, user). Returns name -> summary."""
    times = {k: [] for k in jobs}
    failed = {}
    for k, (cmd, env, n, w, prepare, cwd, user) in jobs.items():
        if w:
            r = hyperfine(f"{k}-warmup", cmd, env, 1, w - 1, prepare, cwd, user)
            if "error" in r:
                failed[k] = r
    rounds = max(-(-job[2] // batch) for job in jobs.values())
    for i in range(rounds):
        for k, (cmd, env, n, w, prepare, cwd, user) in jobs.items():
            left = n - len(times[k])
            if k in failed or left <= 0:
                continue
            r = hyperfine(f"{k}-{i}", cmd, env, min(batch, left), 0, prepare, cwd, user)
            if "error" in r:
                failed[k] = r
            else:
                times[k].extend(r["times"])
    out = {}
    for k, (cmd, *_rest) in jobs.items():
        if k in failed:
            out[k] = failed[k]
            continue
        (RES / f"{k}.json").write_text(json.dumps({"command": cmd, "times": times[k]}, indent=1))
        out[k] = summary(times[k])
    return out


def in_env_sample(name, cmd, env, prepare, cwd, user=None):
    """One whole run of the contender's command (a fresh vhrun run, mount or
    copy) whose task, inenv.sh, writes the clock around the interpreter to
    fd 3: (in-environment seconds, wall seconds), or {"error": why}."""
    if prepare:
        subprocess.run(prepare, shell=True, check=True)
    fd_file = RES / f"{name}.fd3"
    with open(fd_file, "w+") as out:
        fd = out.fileno()

        def to_fd3():
            os.dup2(fd, 3)
            os.set_inheritable(3, True)
        t = time.perf_counter()
        # close_fds=False: fd 3 must survive; the harness's own fds are
        # close-on-exec (PEP 446)
        r = subprocess.run(shlex.split(cmd), env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, preexec_fn=to_fd3, close_fds=False,
                           **as_user(user))
        wall = time.perf_counter() - t
        out.seek(0)
        line = out.read().split()
    fd_file.unlink(missing_ok=True)
    if r.returncode or len(line) != 2:
        why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}, fd 3: {line}"])[-1]
        return {"error": why}
    return float(line[1]) - float(line[0]), wall


def in_env_interleaved(jobs):
    """In-environment samples of several contenders taken round-robin (one
    sample of each in turn), so that drift on a shared machine (load,
    writeback, thermal) falls on every contender alike. jobs: name ->
    (cmd, env, runs, warmup, prepare, cwd[, user]). Returns name -> summary."""
    samples = {k: [] for k in jobs}
    walls = {k: [] for k in jobs}
    failed = {}
    rounds = max(job[3] + job[2] for job in jobs.values())
    for i in range(rounds):
        for k, (cmd, env, n, w, prepare, cwd, *user) in jobs.items():
            if k in failed or i >= w + n:
                continue
            got = in_env_sample(k, cmd, env, prepare, cwd, *user)
            if isinstance(got, dict):
                failed[k] = got
            elif i >= w:
                samples[k].append(got[0])
                walls[k].append(got[1])
    out = {}
    for k, (cmd, *_rest) in jobs.items():
        if k in failed:
            out[k] = failed[k]
            continue
        (RES / f"{k}.json").write_text(json.dumps({"command": cmd, "times": samples[k],
                                                   "walls": walls[k]}, indent=1))
        out[k] = summary(samples[k])
    return out


def in_env(name, cmd, env, runs, warmup, prepare, cwd, user=None):
    """in_env_interleaved for one contender."""
    return in_env_interleaved({name: (cmd, env, runs, warmup, prepare, cwd, user)})[name]


def summary(times):
    return {"n": len(times), "min": min(times), "median": statistics.median(times), "max": max(times),
            "mean": statistics.mean(times)}


def fmt_s(v):
    if v is None:
        return "-"
    if v < 0.1:
        return f"{v * 1e3:.1f} ms"
    return f"{v:.3f} s"


# ---------------------------------------------------------------- measurements


def measure_proc(argv, env, cwd=None, user=None):
    """Run argv; its own peak RSS (VmHWM, sampled) and CPU time (utime+stime of
    the process itself, all threads, without children) read before reaping."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         **as_user(user))
    hwm = 0
    while True:
        try:
            st = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            break
        if st is not None:
            break
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for l in f:
                    if l.startswith("VmHWM:"):
                        hwm = max(hwm, int(l.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    with open(f"/proc/{p.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    err = p.stderr.read().decode(errors="replace")
    rc = p.wait()
    return {"rc": rc, "wall": time.perf_counter() - t, "rss_kib": hwm, "cpu_s": cpu, "stderr": err[-400:]}


def server_usage(env, user=None):
    """Peak RSS (VmHWM) and CPU time so far of the warm server of `env`'s
    VHRUN_HOME (None with VHRUN_SERVER=off, or when none is running)."""
    r = subprocess.run([VHRUN, "servers", "--json"], env=env, capture_output=True, text=True, **as_user(user))
    try:
        pid = json.loads(r.stdout)[0]["hello"]["pid"]
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (ValueError, IndexError, KeyError, OSError, StopIteration):
        return None
    return {"rss_kib": hwm, "cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}


def concurrent(c, rounds, n=8):
    walls, errors = [], 0
    for _ in range(rounds):
        if c.name.startswith("a"):
            for i in range(n):
                shutil.rmtree(f"{str(SPACE)[:-1]}{i}", ignore_errors=True)
        cmds = [c.command("import", slot=i if c.name.startswith("a") else None) for i in range(n)]
        t = time.perf_counter()
        procs = [subprocess.Popen(shlex.split(cmd), env=c.env, cwd=cwd, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, **as_user(c.user)) for cmd, cwd in cmds]
        rcs = [p.wait() for p in procs]
        walls.append(time.perf_counter() - t)
        errors += sum(rc != 0 for rc in rcs)
    if c.name.startswith("a"):
        for i in range(n):
            shutil.rmtree(f"{str(SPACE)[:-1]}{i}", ignore_errors=True)
    s = summary(walls)
    s["errors"] = errors
    s["runs_total"] = rounds * n
    return s


def stats_pass(cs, quick):
    """Disk, memory and CPU figures (one measured run each)."""
    st = {}
    for c in cs:
        s = {}
        if c.name.startswith("c"):
            # a home of its own, empty: the first run is a first run ever
            home = Path(f"{c.env['VHRUN_HOME']}-stats-{c.name}")
            shutil.rmtree(home, ignore_errors=True)
            env = dict(c.env, VHRUN_HOME=str(home))
            cmd = shlex.split(c.command("import")[0])
            # The first run ever: no image yet, the FUSE tree decodes on
            # demand (its server's background image build switched off,
            # so the cache figure is the first run's own).
            u = c.user
            first = measure_proc(cmd, dict(env, VHRUN_IMAGE="off"), user=u)
            s["first"] = first
            s["server_first"] = server_usage(env, u)
            s["blob_cache"] = du(home / "blobs")
            s["pycache"] = du(home / "pycache")
            s["index"] = du(home / "index")
            if env.get("VHRUN_IMAGE") != "off":
                subprocess.run([VHRUN, "-q", "servers", "--stop"], env=env)
                s["prepare"] = measure_proc([VHRUN, "-q", "prepare", "--catalog", c.key], env)
                imgs = list((home / "images").glob("*/image.erofs"))
                s["image"] = (sum(p.stat().st_size for p in imgs), len(imgs))
                s["blob_cache_full"] = du(home / "blobs")
            s["warm"] = measure_proc(cmd, env, user=u)
            keep = (home.parent if u else VH) / "keep" / c.name
            shutil.rmtree(keep, ignore_errors=True)
            keep.parent.mkdir(exist_ok=True)
            if u:
                os.chown(keep.parent, *u)
            kept = measure_proc(cmd[:2] + ["--keep-overlay", str(keep)] + cmd[2:], env, user=u)
            s["upper"] = du(keep) if kept["rc"] == 0 else None
            s["robot"] = measure_proc(shlex.split(c.command("robot")[0]), env, user=u)
            s["server_all"] = server_usage(env, u)
            subprocess.run([VHRUN, "-q", "servers", "--stop"], env=env, **as_user(u))
        elif c.name.startswith("a"):
            shutil.rmtree(SPACE, ignore_errors=True)
            s["restore"] = measure_proc([VHRUN, "restore", "--no-meta", "--catalog", c.env["KEY"], str(SPACE)], c.env)
            s["copy"] = du(SPACE)
            shutil.rmtree(SPACE, ignore_errors=True)
        elif c.name == "b":
            stats_file = VH / "sq" / "stats"
            env = dict(c.env, SQ_STATS=str(stats_file), SQ_KEEP="1")
            r = subprocess.run([str(BIN / "sq.sh"), "import"], env=env, capture_output=True, text=True)
            run = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else None
            if r.returncode == 0 and run:
                s["upper"] = du(Path(run) / "upper")
                kb, ut, stt = stats_file.read_text().split()
                s["server"] = {"rss_kib": int(kb), "cpu_s": (int(ut) + int(stt)) / os.sysconf("SC_CLK_TCK")}
            if run:
                shutil.rmtree(run, ignore_errors=True)
            s["pycache"] = du(VH / "pyc" / "b")
        elif c.name in ("d", "e"):
            s["pycache"] = du(VH / "pyc" / c.name)
        st[c.name] = s
    return st


# ---------------------------------------------------------------- report


def machine():
    def out(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    cpu = out("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = out("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    src = out(f"findmnt -no SOURCE -T {W}")
    dev = os.path.basename(src)
    rota = out(f"cat /sys/block/{dev}/queue/rotational 2>/dev/null")
    return {
        "kernel": platform.release(),
        "cores": CORES,
        "cpu": cpu,
        "memory": mem,
        "disk": f"{src} {out(f'findmnt -no FSTYPE,OPTIONS -T {W}')}"
                + (f", rotational={rota}" if rota else "")
                + (f", {out(f'cat /sys/block/{dev}/device/model 2>/dev/null')}".rstrip(", ") if dev else ""),
        "virt": out("systemd-detect-virt 2>/dev/null") or "unknown",
        "hyperfine": out("hyperfine --version"),
        "squashfuse": out("dpkg-query -W -f='${Version}' squashfuse 2>/dev/null"),
        "vhrun": out(f"git -C {REPO} describe --always --dirty"),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


# (e)'s activation when issue 19 set its targets (bench/run --quick, hyperfine).
ISSUE19_BWRAP_MS = 3.8


def med(res, metric, c):
    r = res.get(metric, {}).get(c)
    return r.get("median") if r and "error" not in r else None


def targets(res, st, names):
    t = []
    c_true, a_true = med(res, "true", "c"), med(res, "true", "a")
    if c_true:
        t.append(("activation <= 10 ms warm", fmt_s(c_true), c_true <= 0.010))
    if c_true and a_true:
        t.append(("activation >= 50x faster than (a)", f"{a_true / c_true:.0f}x", a_true / c_true >= 50))
    # Issue 19 gives its activation targets in milliseconds on a day when
    # (e) took 3.8 ms, and judges them "as a ratio measured side by side in
    # one bench/run invocation": 3 ms and 3.5 ms become 0.79x and 0.92x of
    # (e) in this run (this VM's speed swings by half between runs).
    e_true, f_true = med(res, "true", "e"), med(res, "true", "c-fuse")
    for what, v, ms in (("kernel image", c_true, 3.0), ("FUSE warm server", f_true, 3.5)):
        if not v:
            continue
        if e_true:
            bound = ms / ISSUE19_BWRAP_MS
            below = " and below (e)" if what == "kernel image" else ""
            t.append((f"activation, {what} <= {bound:.2f}x (e) bubblewrap ({ms:g} ms when (e) took "
                      f"{ISSUE19_BWRAP_MS:g} ms){below}",
                      f"{v / e_true:.2f}x ({fmt_s(v)} vs {fmt_s(e_true)})",
                      v / e_true <= bound and v < e_true))
        else:
            t.append((f"activation, {what} <= {ms:g} ms", fmt_s(v), v <= ms / 1000))
    ui, di = med(res, "import-in", "c-user"), med(res, "import-in", "d")
    if ui and di:
        t.append(("heavy import, warm, rootless warm server within 2% of (d), in-environment",
                  f"{(ui / di - 1) * 100:+.1f}% ({fmt_s(ui)} vs {fmt_s(di)})", ui / di <= 1.02))
    cc, dc = med(res, "cold", "c"), med(res, "cold", "d")
    if cc and dc:
        t.append(("cold first run <= 1.2x (d) cold", f"{cc / dc:.2f}x ({fmt_s(cc)} vs {fmt_s(dc)})",
                  cc / dc <= 1.2))
    # Judged in-environment: activation has its own target above, and no
    # sandbox fits several ms of set-up into 5% of an 8 ms interpreter start.
    # The end-to-end figures stand next to them.
    for m, what in (("pass", "`python -c pass`, warm"), ("import", "heavy import, warm")):
        ci, di = med(res, f"{m}-in", "c"), med(res, f"{m}-in", "d")
        ce, de = med(res, m, "c"), med(res, m, "d")
        e2e = (f"{E2E}: {(ce / de - 1) * 100:+.1f}% ({fmt_s(ce)} vs {fmt_s(de)})" if ce and de else None)
        if ci and di:
            val = f"{(ci / di - 1) * 100:+.1f}% ({fmt_s(ci)} vs {fmt_s(di)})" + (f"; {e2e}" if e2e else "")
            t.append((f"{what} within 5% of (d), in-environment", val, ci / di <= 1.05))
        elif e2e:  # --only without the in-environment metric
            t.append((f"{what} within 5% of (d), {E2E}", e2e, ce / de <= 1.05))
    c, a = med(res, "robot", "c"), med(res, "robot", "a")
    if c and a:
        t.append(("warm robot run >= 5x faster than (a)", f"{a / c:.1f}x", a / c >= 5))
    c, a = med(res, "cold", "c"), med(res, "cold", "a")
    if c and a:
        t.append(("cold first run >= 3x faster than (a)", f"{a / c:.1f}x", a / c >= 3))
    if c:
        t.append(("cold first run <= 3 s (DESIGN.md)", fmt_s(c), c <= 3))
    up = st.get("c", {}).get("upper")
    if up is not None:
        t.append(("bytes written into the environment per run: 0", f"{up[0]} B ({up[1]} files)", up[0] == 0))
    rss = [(st.get("c", {}).get(k) or {}).get("rss_kib")
           for k in ("first", "warm", "server_first", "server_all")]
    rss = [r for r in rss if r]
    if rss:
        t.append(("peak server RSS <= 32 MiB", f"{max(rss) / 1024:.1f} MiB", max(rss) <= 32 * 1024))
    conc, single = res.get("conc", {}).get("c"), med(res, "import", "c")
    if conc and single and "error" not in conc:
        limit = 1.5 * single * 8 / CORES
        t.append((f"8 concurrent <= 1.5 x single x 8 / {CORES} cores ({fmt_s(limit)})",
                  f"{fmt_s(conc['median'])}, {conc['errors']} errors",
                  conc["median"] <= limit and conc["errors"] == 0))
    return t


def tables(data):
    res, st, names = data["results"], data["stats"], data["contenders"]
    metrics = [m for m in METRICS if m in res]
    L = []
    L.append("### Time (median, min-max, runs)\n")
    L.append("| metric | " + " | ".join(LABELS[c] for c in names) + " |")
    L.append("|---|" + "---:|" * len(names))
    for m in metrics:
        cells = []
        for c in names:
            r = res[m].get(c)
            if not r:
                cells.append("-")
            elif "error" in r:
                cells.append(f"failed: {r['error'][:60]}")
            else:
                extra = f", {r['errors']} err" if "errors" in r else ""
                cells.append(f"**{fmt_s(r['median'])}** ({fmt_s(r['min'])}-{fmt_s(r['max'])}, n={r['n']}{extra})")
        L.append(f"| {METRICS[m]} | " + " | ".join(cells) + " |")
    for ref, title, how in (("d", "Slowdown vs (d) the plain directory", lambda x, r: x / r),
                            ("a", "Speedup vs (a) copy restore", lambda x, r: r / x)):
        if ref not in names:
            continue
        others = [c for c in names if c != ref]
        L.append(f"\n### {title} (median / median{'' if ref == 'd' else ', inverted: times faster'})\n")
        L.append("| metric | " + " | ".join(LABELS[c] for c in others) + " |")
        L.append("|---|" + "---:|" * len(others))
        for m in metrics:
            r = med(res, m, ref)
            cells = [f"{how(med(res, m, c), r):.2f}x" if r and med(res, m, c) else "-" for c in others]
            L.append(f"| {METRICS[m]} | " + " | ".join(cells) + " |")
    L.append("\n### Disk, memory, CPU (one measured run each)\n")
    L.append("| figure | value |")
    L.append("|---|---:|")

    def row(k, v):
        L.append(f"| {k} | {v} |")

    def mib(b):
        return f"{b / 1048576:.1f} MiB"
    for c in names:
        s = st.get(c, {})
        if c.startswith("a") and "copy" in s:
            row(f"{LABELS[c]}: bytes written per run (the restored copy)", f"{mib(s['copy'][0])} ({s['copy'][1]} files)")
            r = s["restore"]
            row(f"{LABELS[c]}: restore peak RSS / CPU / wall",
                f"{r['rss_kib'] / 1024:.1f} MiB / {r['cpu_s']:.2f} s / {r['wall']:.2f} s")
        if c == "b":
            if "upper" in s:
                row(f"{LABELS[c]}: bytes written into the env per run (overlay upper)", f"{s['upper'][0]} B ({s['upper'][1]} files)")
            if "server" in s:
                row(f"{LABELS[c]}: squashfuse peak RSS / CPU (heavy import)",
                    f"{s['server']['rss_kib'] / 1024:.1f} MiB / {s['server']['cpu_s']:.2f} s")
            row(f"{LABELS[c]}: bytecode cache (once)", mib(s["pycache"][0]))
        if c.startswith("c") and "first" in s:
            if s.get("upper") is not None:
                row(f"{LABELS[c]}: bytes written into the env per run (overlay upper, heavy import)",
                    f"{s['upper'][0]} B ({s['upper'][1]} files)")
            row(f"{LABELS[c]}: blob cache after the first heavy import (once per machine)",
                f"{mib(s['blob_cache'][0])} ({s['blob_cache'][1]} files)")
            row(f"{LABELS[c]}: bytecode cache (once per catalog)", mib(s["pycache"][0]))
            if s.get("prepare"):
                r = s["prepare"]
                row(f"{LABELS[c]}: `vhrun prepare` (image build: every blob decoded; once per catalog) "
                    "wall / peak RSS / CPU",
                    f"{r['wall']:.2f} s / {r['rss_kib'] / 1024:.1f} MiB / {r['cpu_s']:.2f} s"
                    + ("" if r["rc"] == 0 else f" (exit {r['rc']})"))
                # the image's data/ only hard-links cache entries: no space twice
                row(f"{LABELS[c]}: image file / blob cache after `prepare`",
                    f"{mib(s['image'][0])} / {mib(s['blob_cache_full'][0])} (every blob of the catalog)")
            for k, what in (("first", "first run"), ("warm", "warm run"), ("robot", "robot run")):
                r = s[k]
                row(f"{LABELS[c]}: vhrun peak RSS / CPU, heavy import {what}" if k != "robot"
                    else f"{LABELS[c]}: vhrun peak RSS / CPU, robot run",
                    f"{r['rss_kib'] / 1024:.1f} MiB / {r['cpu_s']:.3f} s" + ("" if r["rc"] == 0 else f" (exit {r['rc']})"))
            for k, what in (("server_first", "after the first heavy import"),
                            ("server_all", "after first + warm + robot runs")):
                r = s.get(k)
                if r:
                    row(f"{LABELS[c]}: warm server peak RSS / CPU, {what}",
                        f"{r['rss_kib'] / 1024:.1f} MiB / {r['cpu_s']:.3f} s")
        if c == "d" and "pycache" in s:
            row(f"{LABELS[c]}: bytes written per run / bytecode cache (once)", f"0 B / {mib(s['pycache'][0])}")
    tg = targets(res, st, names)
    if tg:
        L.append("\n### Targets (DESIGN.md, issues 6 and 19)\n")
        L.append("| target | measured | |")
        L.append("|---|---:|---|")
        for what, val, ok in tg:
            L.append(f"| {what} | {val} | {'met' if ok else '**missed**'} |")
    return "\n".join(L) + "\n"


def benchmarks_md(data, table):
    m, s = data["machine"], data["setup"]
    return f"""# Benchmarks

Generated by `bench/run{' --quick' if data['quick'] else ''}` ({m['date']}, vhrun {m['vhrun']}); rerun it to
refresh this file and `bench/ratios.svg`. What each figure means and how it
is measured: `bench/README.md`.

**Machine**: Linux {m['kernel']}, {m['cores']} cores ({m['cpu']}), {m['memory']} RAM,
virtualisation: {m['virt']}; disk: {m['disk']}. {m['hyperfine']}, squashfuse {m['squashfuse']}.
Load average at start / end: {data['load'][0]} / {data['load'][1]} (the machine may be shared: compare
medians of one run of the harness only).

**Environment**: `{ENV}` ({s['env_files']} files, {s['env_bytes'] / 1e6:.0f} MB), CPython 3.11 with
numpy, pandas, sqlalchemy, scipy, matplotlib, boto3 ... (`make-env.sh`), lifted with `vhrun lift` into a
gzip hololib ({s['gz_bytes'] / 1e6:.0f} MB) and a `--no-compress` one ({s['raw_bytes'] / 1e6:.0f} MB);
squashfs image (zstd) {s['sq_bytes'] / 1e6:.0f} MB. Heavy import = `python -c "{IMPORTS}"`;
robot run = `robots/report` (pandas reads a CSV, writes HTML and xlsx).

**Contenders**: (a) rcc's copy model: `vhrun restore` of the catalog into a fresh space, then the task
with `PYTHONDONTWRITEBYTECODE=1` (rcc forbids bytecode writes and the hololib holds none);
(b) the squashfs image mounted with squashfuse plus an overlay at the environment's own path, in a
private mount namespace (mount + run + unmount); (c) `vhrun exec --catalog` (`vhrun run -r` for the
robot) after `vhrun prepare`, i.e. over the catalog's kernel image (EROFS metadata + overlayfs
data-only layer: no FUSE, no server), from the gzip or the raw hololib; "vhrun FUSE" rows: the same
with `VHRUN_IMAGE=off` (what runs get before an image exists, and rootless): the warm per-catalog
server with passthrough on / off (`VHRUN_PASSTHROUGH=off`), and `VHRUN_SERVER=off` (a FUSE mount of its
own per run); the cold first run has no image (it is built after it) and is served by FUSE; (d) the
environment as a plain directory: the floor. (b), (c) and (d) keep bytecode in a persistent cache
(`PYTHONPYCACHEPREFIX`; vhrun's own per-catalog cache for (c)); "warm" = page cache and bytecode
cache filled; "cold first run" = page cache dropped (`drop_caches`) and vhrun's blob cache emptied,
bytecode caches kept (as after a reboot); for (a) a fresh restore, as always.

**End to end / in-environment**: "end to end, incl. activation+teardown" times the contender's whole
command (for (c) `vhrun exec`, for (a) restore + task, for (b) mount + task + unmount); "in-environment"
times the interpreter alone, from inside each contender's environment (a host script run as the task
reads the clock around `python3`), one fresh run, mount or copy per sample. The 5% targets are judged
in-environment; activation has its own target.

{table}"""


def main():
    ap = argparse.ArgumentParser(description="vhrun side-by-side benchmark (see bench/README.md)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-build", action="store_true", help="(handled by bench/run)")
    ap.add_argument("--no-write", action="store_true", help="print only; no BENCHMARKS.md / SVG")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md / SVG even with --quick")
    ap.add_argument("--only", help="comma-separated metrics (" + ",".join(METRICS) + ")")
    ap.add_argument("--contenders", help="comma-separated, in order (" + ",".join(LABELS) + "); (a) last")
    args = ap.parse_args()
    quick = args.quick
    started = time.perf_counter()
    load0 = " ".join(open("/proc/loadavg").read().split()[:3])

    RES.mkdir(parents=True, exist_ok=True)
    ensure_env()
    ensure_blueprint()
    keys = {"gz": ensure_lift("gz")[0], "raw": ensure_lift("raw")[0]}
    img, _ = ensure_squashfs()
    robot = ensure_robot()
    write_scripts(keys, robot, img)
    for d in ("pyc/b", "pyc/d", "pyc/e", "out/d", "out/e"):
        (VH / d).mkdir(parents=True, exist_ok=True)

    # (a) last in each metric: its 500 MB copies leave writeback behind (synced after).
    names = (["d", "e", "c", "c-fuse", "c-user", "b", "a"] if quick
             else ["d", "e", "c", "c-fuse", "c-user", "c-perrun", "c-nopt", "c-raw", "b", "a", "a-raw"])
    if args.contenders:
        names = args.contenders.split(",")
        unknown = [n for n in names if n not in LABELS]
        if unknown:
            raise SystemExit(f"bench: unknown contenders {unknown}; known: {','.join(LABELS)}")
    cs = [Contender(n, keys, robot) for n in names]
    metrics = ["true", "pass", "pass-in", "import", "import-in", "robot"] + ([] if quick else ["cold"]) + ["conc"]
    if args.only:
        metrics = [m for m in metrics if m in args.only.split(",")]

    # (c) is measured as a CI pipeline runs it: `vhrun prepare` first.
    for c in cs:
        if c.name.startswith("c") and c.env.get("VHRUN_IMAGE") != "off":
            r = subprocess.run([VHRUN, "prepare", "--catalog", c.key], env=c.env, capture_output=True, text=True)
            log(f"{c.label()}: {r.stderr.strip()}")

    # Sanity: every contender runs the heavy import (also fills the caches;
    # (a) is checked by its own measurements).
    broken = {}
    for c in cs:
        if c.name.startswith("a") and quick:
            continue
        cmd, cwd = c.command("import")
        if c.name.startswith("a"):
            shutil.rmtree(SPACE, ignore_errors=True)
        r = subprocess.run(shlex.split(cmd), env=c.env, cwd=cwd, capture_output=True, text=True,
                           **as_user(c.user))
        if r.returncode:
            broken[c.name] = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            log(f"{c.label()}: heavy import fails: {broken[c.name]}")
    shutil.rmtree(SPACE, ignore_errors=True)

    log(f"[{time.perf_counter() - started:.0f} s] disk / memory / CPU figures")
    st = stats_pass([c for c in cs if c.name not in broken and not (quick and c.name in ("c-fuse", "c-nopt", "c-perrun", "c-user"))],
                    quick)

    def runs(c, m):
        slow = c.name.startswith("a")
        if m == "cold":
            # A cold sample swings by a fifth on this VM (disk, page cache):
            # seven, taken in turn with the other contenders' (batches of
            # one), keep two outliers from moving the median. (a) pays a
            # whole restore per sample.
            return (3, 0) if slow else (7, 0)
        table = {  # (runs, warmup) quick / full; (a) pays a whole restore per run
            "true": ((1, 0), (5, 1)) if slow else ((10, 3), (30, 5)),
            "pass": ((1, 0), (5, 1)) if slow else ((5, 2), (20, 3)),
            "pass-in": ((1, 0), (5, 1)) if slow else ((5, 2), (20, 3)),
            "import": ((1, 0), (5, 1)) if slow else ((3, 1), (10, 2)),
            "import-in": ((1, 0), (5, 1)) if slow else ((3, 1), (20, 2)),
            "robot": ((1, 0), (5, 1)) if slow else ((3, 1), (10, 2)),
        }[m]
        return table[0 if quick else 1]

    res = {}
    for m in metrics:
        res[m] = {}
        # Round-robin, every contender but (a) (a restore per sample, 500 MB
        # of writeback that would land on the others' samples): activation
        # in hyperfine batches, the in-environment rows a sample at a time.
        # Cold samples a sample at a time: the disk and the page cache
        # drift between phases as much as a contender differs from another.
        interleave = {"true": hyperfine_interleaved,
                      "cold": lambda jobs: hyperfine_interleaved(jobs, batch=1)}
        interleave.update({k: in_env_interleaved for k in METRICS if k.endswith("-in")})
        if m in interleave:
            jobs = {}
            for c in cs:
                if c.name in broken or c.name.startswith("a"):
                    continue
                n, w = runs(c, m)
                if m == "cold":
                    if c.user:
                        continue  # see below
                    cmd, cwd = c.command("import")
                    jobs[f"{m}-{c.name}"] = (cmd, c.cold_env(), n, w, c.prepare(True), cwd, None)
                    continue
                cmd, cwd = c.command(m)
                jobs[f"{m}-{c.name}"] = (cmd, c.env, n, w, c.prepare(False), cwd, c.user)
            got = interleave[m](jobs)
            for c in cs:
                r = got.get(f"{m}-{c.name}")
                if r is not None:
                    res[m][c.name] = r
                    log(f"  [{time.perf_counter() - started:4.0f} s] {METRICS[m]:40.40s} "
                        f"{c.label():28.28s} " + (f"failed: {r['error']}" if "error" in r else
                        f"{fmt_s(r['median']):>9s} ({fmt_s(r['min'])}-{fmt_s(r['max'])}, n={r['n']})"))
        for c in cs:
            if c.name in res[m]:
                continue
            if c.name in broken:
                res[m][c.name] = {"error": broken[c.name]}
                continue
            # --quick: (a) end to end only where a target needs it (a restore
            # dominates its pass / import figures anyway)
            if quick and c.name.startswith("a") and m in ("pass", "import"):
                continue
            if m == "cold" and c.user:
                # dropping the page cache needs root, and hyperfine's
                # --prepare runs as the user
                continue
            if m == "conc":
                if quick and c.name not in ("c", "d"):
                    continue
                r = concurrent(c, rounds=1 if (quick or c.name.startswith("a")) else 3)
            else:
                n, w = runs(c, m)
                cold = m == "cold"
                cmd, cwd = c.command("import" if cold else m)
                env = c.cold_env() if cold else c.env
                measure = in_env if m.endswith("-in") else hyperfine
                r = measure(f"{m}-{c.name}", cmd, env, n, w, c.prepare(cold), cwd, c.user)
            res[m][c.name] = r
            if c.name.startswith("a"):
                sh("sync")
            if "error" in r:
                log(f"  [{time.perf_counter() - started:4.0f} s] {METRICS[m]:40.40s} {c.label():28.28s} "
                    f"failed: {r['error']}")
            else:
                log(f"  [{time.perf_counter() - started:4.0f} s] {METRICS[m]:40.40s} {c.label():28.28s} "
                    f"{fmt_s(r['median']):>9s} "
                    f"({fmt_s(r['min'])}-{fmt_s(r['max'])}, n={r['n']})"
                    + (f", {r['errors']} errors" if "errors" in r else ""))
    shutil.rmtree(SPACE, ignore_errors=True)
    # bytecode caches are final only now
    for c in ("b", "d", "e"):
        if c in st:
            st[c]["pycache"] = du(VH / "pyc" / c)

    data = {
        "quick": quick,
        "machine": machine(),
        "load": [load0, " ".join(open("/proc/loadavg").read().split()[:3])],
        "setup": {
            "env_bytes": du(ENV)[0], "env_files": du(ENV)[1],
            "gz_bytes": du(VH / "gz" / "hololib")[0], "raw_bytes": du(VH / "raw" / "hololib")[0],
            "sq_bytes": img.stat().st_size,
        },
        "contenders": [c.name for c in cs],
        "labels": LABELS,
        "results": res,
        "stats": st,
        "seconds": time.perf_counter() - started,
    }
    (RES / "results.json").write_text(json.dumps(data, indent=1))
    table = tables(data)
    print(table)
    if args.write or not (args.no_write or quick):
        # bench/copy.sh, bench/remote.sh and bench/build.sh own their sections (the file's tail): keep them across rewrites.
        out = REPO / "BENCHMARKS.md"
        old = out.read_text() if out.exists() else ""
        owned = [old.find(h) for h in ("\n## Copy mode", "\n## Fleets: rccremote", "\n## First run of a new robot") if h in old]
        kept = old[min(owned):] if owned else ""
        out.write_text(benchmarks_md(data, table).rstrip("\n") + "\n" + kept)
        svg = REPO / "bench" / "ratios.svg"
        env = dict(base_env(), PYTHONDONTWRITEBYTECODE="1", MPLCONFIGDIR=str(VH / "mpl"))
        r = subprocess.run([str(ENV / "bin" / "python3"), str(REPO / "bench" / "plot.py"), str(RES / "results.json"),
                            str(svg)], env=env, capture_output=True, text=True)
        if r.returncode:
            log(f"plot failed: {r.stderr.strip()[-500:]}")
        else:
            log(f"wrote {REPO / 'BENCHMARKS.md'} and {svg}")
    log(f"bench: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
