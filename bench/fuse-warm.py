#!/usr/bin/env python3
"""fuse-warm.py BASE PLAIN_NAME MOUNT_NAME HOLOLIB KEY VHRUN_HOME ROUNDS [VHRUN]

Warm benchmark of `vhrun mount` against the plain directory of the same
environment, interleaved rounds, medians. BASE/PLAIN_NAME is an environment
built by make-env.sh (24-byte name) and lifted into HOLOLIB with
pack-store.py (KEY = its catalog file name); BASE/MOUNT_NAME (another 24-byte
name, same parent) is where it gets mounted. Bytecode goes to a warm
PYTHONPYCACHEPREFIX (one per tree) so both sides import from .pyc.

Per round and per mode (passthrough, --no-passthrough, passthrough with
--prefetch of the previous run's working set): a fresh mount, one import
("fresh-mount", the product's shape: a new mount per run), a second import in
the same mount ("kept-mount"). Needs root (mounts on the host).
"""
import os, subprocess, sys, time, statistics, signal

BASE, PLAIN, M, HL, KEY, VH, ROUNDS = sys.argv[1:8]
VH_BIN = sys.argv[8] if len(sys.argv) > 8 else "vhrun"
PLAIN = os.path.join(BASE, PLAIN); M = os.path.join(BASE, M); ROUNDS = int(ROUNDS)
RH = VH + "-rh"
os.makedirs(RH, exist_ok=True)
if not os.path.islink(RH + "/hololib"):
    os.symlink(HL, RH + "/hololib")
env = dict(os.environ, ROBOCORP_HOME=RH, VHRUN_HOME=VH)
PYC = VH + "-pyc"
IMPORT = "import pandas, numpy, sqlalchemy"
def mounted():
    with open("/proc/self/mounts") as f:
        return any(l.split()[1] == M for l in f)

def mount(extra=()):
    t0 = time.perf_counter()
    p = subprocess.Popen([VH_BIN, "mount", "--catalog", KEY, *extra, M], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not mounted():
        if p.poll() is not None:
            raise SystemExit(p.stderr.read().decode())
        time.sleep(0.0002)
    return p, time.perf_counter() - t0

def mount_ready(extra=()):
    """Start with -v and wait for the 'serving' line (after any prefetch)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([VH_BIN, "mount", "-v", "--catalog", KEY, *extra, M], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for line in p.stderr:
        if b"serving" in line:
            return p, time.perf_counter() - t0
    raise SystemExit("no serving line")

def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait()

def py(root, code, prefix):
    e = dict(os.environ, PYTHONPYCACHEPREFIX=prefix, PYTHONNOUSERSITE="1")
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    subprocess.run([os.path.join(root, "bin/python3"), "-c", code], env=e, check=True)
    return time.perf_counter() - t0

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return l.split()[1] + " kB"

res = {}
def rec(k, v):
    res.setdefault(k, []).append(v)

# warm-up: fill blob cache and both bytecode caches
p, _ = mount()
for code in (IMPORT, "pass"):
    py(M, code, PYC + "-mount"); py(PLAIN, code, PYC + "-plain")
print("server RSS after import:", rss(p.pid))
stop(p)

for r in range(ROUNDS):
    for code, tag in ((IMPORT, "import"), ("pass", "pass")):
        rec(f"plain {tag}", py(PLAIN, code, PYC + "-plain"))
        for mode, extra in (("pt", ()), ("nopt", ("--no-passthrough",)), ("pt+prefetch", ("--prefetch",))):
            p, ready = mount_ready(extra) if "--prefetch" in extra else mount(extra)
            rec(f"mount-ready {mode}", ready)
            rec(f"fresh-mount {mode} {tag}", py(M, code, PYC + "-mount"))
            rec(f"kept-mount {mode} {tag}", py(M, code, PYC + "-mount"))
            stop(p)
for k, v in sorted(res.items()):
    print(f"{k:28s} median {statistics.median(v)*1e3:8.1f} ms  min {min(v)*1e3:8.1f}  max {max(v)*1e3:8.1f}  n={len(v)}")
