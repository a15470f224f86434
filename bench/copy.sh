#!/usr/bin/env bash
# bench/copy.sh [--quick] [--no-write]
#
# Copy mode (`vhrun --mode copy`: the environment restored into rcc's space
# directory, then the task in place, no namespaces) side by side with the
# real rcc, on the same catalog of the same hololib, into two different
# spaces next to the catalog's recorded path ($W/holotree/<space>):
#
#   first run   the space (and its .lck/.meta/.use/.vhrun siblings) deleted
#               before each sample, the hololib warm in the page cache:
#                 vhrun exec --mode copy --space vhbench-copy -r robot.yaml -- true
#                 rcc holotree variables --bundled --space rccbench --json conda.yaml
#   reuse       the same commands on the unchanged space
#   dirtied     before each sample: lib/python3.11/os.py's first byte
#               rewritten (same size), lib/python3.11/json/decoder.py
#               deleted, vhbench-extra.txt added at the space root; then one
#               untimed run more, checked: which of the three were repaired
#   full run    vhrun run --mode copy -r robot.yaml / rcc run -r robot.yaml -t t
#               (reused space; rcc runs `pip freeze` before every task)
#
# hyperfine -N, min / median / max. Prints a Markdown section and (unless
# --quick or --no-write) puts it into BENCHMARKS.md as "## Copy mode ...".
# Profile of each case: `vhrun -v --stats-json` (copy.check / copy.repair
# spans) and `rcc --timeline`, one untimed run each.
#
# Needs root (as bench/run) and the scratch dir W (default /tmp/vhbench)
# that bench/run builds (built here with a minimal bench/run if absent).
# rcc gets its own ROBOCORP_HOME: the gzip hololib's library hard-linked (rcc
# only reads blobs: checked, the run fails if a blob's inode data changed) and
# a copy of catalog/ (rcc touches it). vhrun reads $W/vh/gz as bench/run's
# contenders do, with a VHRUN_HOME of its own. Everything made here is
# removed at the end except $W/vh/copy/results (hyperfine exports, profiles,
# section.md).
#
#   VHRUN=path (default: the release build, bench/vhrun-bin; built if missing)
#   RCC=path   (default ../shared/tools/rcc/rcc, or $VHRUN_SHARED/tools/rcc/rcc)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "bench/copy.sh: needs root (run as bench/run: sudo bench/copy.sh)" >&2; exit 2; }

quick=0 write=1
for a in "$@"; do
    case $a in
        --quick) quick=1 write=0 ;;
        --no-write) write=0 ;;
        --write) write=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/copy.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

# what the harness measures is not steered by the caller's variables
for v in $(compgen -e); do
    [[ $v == VHRUN_* || $v == PYTHON* || $v == ROBOCORP_HOME || $v == RCC_* ]] && [[ $v != VHRUN_SHARED ]] && unset "$v"
done

W=${W:-/tmp/vhbench}
C=$W/vh/copy
GZ=$W/vh/gz
RES=$C/results
VHRUN=${VHRUN:-$("$REPO/bench/vhrun-bin" --no-build 2>/dev/null || true)}
if [[ -z ${RCC:-} ]]; then
    for d in "${VHRUN_SHARED:-}" "$REPO/../shared"; do
        [[ -n $d && -x $d/tools/rcc/rcc ]] && { RCC=$(cd "$d/tools/rcc" && pwd)/rcc; break; }
    done
fi
[[ -x ${RCC:-} ]] || { echo "bench/copy.sh: no rcc (set RCC=, or VHRUN_SHARED= a dir with tools/rcc/rcc)" >&2; exit 2; }
command -v hyperfine >/dev/null || {
    echo "bench/copy.sh: installing hyperfine" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null
}
if [[ ! -x $VHRUN ]]; then
    echo "bench/copy.sh: cargo build --release" >&2
    VHRUN=$("$REPO/bench/vhrun-bin")
fi
if [[ ! -f $GZ/key || ! -f $W/blueprint.yaml ]]; then
    echo "bench/copy.sh: building the scratch dir $W with a minimal bench/run" >&2
    VHRUN=$VHRUN "$REPO/bench/run" --no-build --quick --no-write --only true --contenders d >/dev/null
fi
KEY=$(<"$GZ/key")
[[ -f $GZ/hololib/catalog/$KEY ]] || { echo "bench/copy.sh: $GZ/hololib lacks catalog $KEY (delete $W/vh, rerun bench/run)" >&2; exit 2; }

if ((quick)); then N_FIRST=3 N_REUSE=5 N_DIRTY=5 N_RUN=3; else N_FIRST=6 N_REUSE=10 N_DIRTY=10 N_RUN=5; fi

VH_SPACE=vhbench-copy RCC_SPACE=rccbench
VS="" RS=""   # the two space directories, learnt from the first runs
RCC_HOME=$C/rcc-home VH_HOME=$C/vhrun-home ROBOT=$C/robot
LIB=$GZ/hololib/library

space_rm() { if [[ -n $1 ]]; then rm -rf "$1" "$1".meta "$1".meta.info "$1".lck "$1".use "$1".vhrun "$1".vhrun.tick; fi; }
cleanup() {
    space_rm "$VS"; space_rm "$RS"
    rm -rf "$RCC_HOME" "$VH_HOME" "$C/bin" "$C/pristine" "$ROBOT"
}
trap cleanup EXIT

log() { echo "bench/copy.sh: $*" >&2; }
load0=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS

# ------------------------------------------------------------ setup
rm -rf "$RCC_HOME" "$VH_HOME" "$C/bin" "$C/pristine" "$ROBOT" "$RES"
mkdir -p "$RCC_HOME/hololib" "$VH_HOME" "$C/bin" "$C/pristine/vhrun" "$C/pristine/rcc" "$ROBOT" "$RES"
cp -al "$LIB" "$RCC_HOME/hololib/library"
cp -a "$GZ/hololib/catalog" "$RCC_HOME/hololib/catalog"
cp "$W/blueprint.yaml" "$ROBOT/conda.yaml"
printf 'tasks:\n  t:\n    shell: "true"\ncondaConfigFile: conda.yaml\nartifactsDir: output\n' >"$ROBOT/robot.yaml"
# the shared blobs' inodes (number, size, mtime, ctime) and the catalog as vhrun reads it: unchanged at the end
libstate() { find "$LIB" "$GZ/hololib/catalog" -printf '%i %s %T@ %C@ %p\n' | sort | md5sum; }
lib_before=$(libstate)

cat >"$C/bin/fresh.sh" <<EOF
#!/bin/bash
# fresh.sh SPACE: no space; the previous copy's writeback done; the hololib in the page cache
rm -rf "\$1" "\$1".meta "\$1".meta.info "\$1".lck "\$1".use "\$1".vhrun "\$1".vhrun.tick
sync
find "$LIB" -type f -exec cat {} + >/dev/null
EOF
cat >"$C/bin/dirty.sh" <<'EOF'
#!/bin/bash
# dirty.sh SPACE: one same-size edit, one deletion, one addition
set -e
printf X | dd of="$1/lib/python3.11/os.py" bs=1 count=1 conv=notrunc status=none
rm -f "$1/lib/python3.11/json/decoder.py"
echo extra >"$1/vhbench-extra.txt"
EOF
chmod +x "$C/bin/fresh.sh" "$C/bin/dirty.sh"

VH_ENV=(ROBOCORP_HOME="$GZ" VHRUN_HOME="$VH_HOME")
RCC_ENV=(ROBOCORP_HOME="$RCC_HOME")
VH_EXEC="$VHRUN exec --mode copy --space $VH_SPACE -r $ROBOT/robot.yaml -- true"
RCC_VARS="$RCC holotree variables --bundled --space $RCC_SPACE --json $ROBOT/conda.yaml"
VH_RUN="$VHRUN run --mode copy --space $VH_SPACE -r $ROBOT/robot.yaml"
RCC_RUN="$RCC run --bundled --space $RCC_SPACE -r $ROBOT/robot.yaml -t t"

cd "$ROBOT"
# first runs (untimed): where the spaces are; then a fresh restore each, of which
# the two files the dirtied case breaks are kept as the pristine reference
env "${VH_ENV[@]}" $VHRUN exec --mode copy --space $VH_SPACE -r "$ROBOT/robot.yaml" --stats-json "$RES/setup-vhrun.json" -- true 2>/dev/null
VS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["environment"])' "$RES/setup-vhrun.json")
env "${RCC_ENV[@]}" $RCC_VARS >"$RES/setup-rcc.json" 2>/dev/null
RS=$(python3 -c 'import json, sys; print({v["key"]: v["value"] for v in json.load(open(sys.argv[1]))}["CONDA_PREFIX"])' "$RES/setup-rcc.json")
[[ $(dirname "$VS") == $(dirname "$RS") && $VS != "$RS" ]] || { log "unexpected spaces: vhrun $VS, rcc $RS"; exit 1; }
log "spaces: vhrun $VS, rcc $RS"
"$C/bin/fresh.sh" "$VS"; env "${VH_ENV[@]}" $VH_EXEC 2>/dev/null
"$C/bin/fresh.sh" "$RS"; env "${RCC_ENV[@]}" $RCC_VARS >/dev/null 2>&1
for who in vhrun rcc; do
    s=$VS; [[ $who == rcc ]] && s=$RS
    cp "$s/lib/python3.11/os.py" "$s/lib/python3.11/json/decoder.py" "$C/pristine/$who/"
done
cmp -s "$C/pristine/vhrun/os.py" "$C/pristine/rcc/os.py" && cmp -s "$C/pristine/vhrun/decoder.py" "$C/pristine/rcc/decoder.py" ||
    { log "vhrun and rcc restored different os.py / json/decoder.py"; exit 1; }
[[ $(head -c1 "$C/pristine/vhrun/os.py") != X ]] || { log "os.py starts with X: dirty.sh's edit would be no edit"; exit 1; }

# ------------------------------------------------------------ measure
hf() {  # hf NAME RUNS WARMUP PREPARE|- ENV... -- CMD
    local name=$1 runs=$2 warm=$3 prep=$4; shift 4
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
    local args=(-N --style none --runs "$runs" --warmup "$warm" --export-json "$RES/$name.json")
    [[ $prep != - ]] && args+=(--prepare "$prep")
    log "[$((SECONDS - started)) s] $name ($runs runs)"
    env "${envs[@]}" hyperfine "${args[@]}" "$*" >"$RES/$name.out" 2>&1 ||
        { cat "$RES/$name.out" >&2; log "$name failed"; exit 1; }
}
profile() {  # profile NAME PREPARE|- : one untimed run of each, with its own breakdown
    local name=$1 prep=$2
    [[ $prep != - ]] && $prep "$VS"
    env "${VH_ENV[@]}" $VHRUN -v ${VH_CMD%% *} --stats-json "$RES/prof-$name-vhrun.json" ${VH_CMD#* } \
        >/dev/null 2>"$RES/prof-$name-vhrun.log"
    [[ $prep != - ]] && $prep "$RS"
    env "${RCC_ENV[@]}" $RCC_CMD --timeline >/dev/null 2>"$RES/prof-$name-rcc.log"
}
verify() {  # verify WHO SPACE: after a run on a dirtied space, what was repaired
    local p=$C/pristine/$1 s=$2
    local a=no b=no c=no
    cmp -s "$p/os.py" "$s/lib/python3.11/os.py" && a=yes
    cmp -s "$p/decoder.py" "$s/lib/python3.11/json/decoder.py" && b=yes
    [[ -e $s/vhbench-extra.txt ]] || c=yes
    echo "{\"same_size_edit\": \"$a\", \"deleted_file\": \"$b\", \"added_file\": \"$c\"}" >"$RES/repair-$1.json"
}

VH_CMD="exec --mode copy --space $VH_SPACE -r $ROBOT/robot.yaml -- true" RCC_CMD=$RCC_VARS
# one sample of each in turn: the disk's and the machine's drift falls on both
for ((i = 1; i <= N_FIRST; i++)); do
    hf first-vhrun.$i 1 0 "$C/bin/fresh.sh $VS" "${VH_ENV[@]}" -- $VH_EXEC
    hf first-rcc.$i 1 0 "$C/bin/fresh.sh $RS" "${RCC_ENV[@]}" -- $RCC_VARS
done
profile first "$C/bin/fresh.sh"

hf reuse-vhrun "$N_REUSE" 2 - "${VH_ENV[@]}" -- $VH_EXEC
hf reuse-rcc "$N_REUSE" 2 - "${RCC_ENV[@]}" -- $RCC_VARS
profile reuse -

hf dirty-vhrun "$N_DIRTY" 1 "$C/bin/dirty.sh $VS" "${VH_ENV[@]}" -- $VH_EXEC
hf dirty-rcc "$N_DIRTY" 1 "$C/bin/dirty.sh $RS" "${RCC_ENV[@]}" -- $RCC_VARS
profile dirty "$C/bin/dirty.sh"
verify vhrun "$VS"
verify rcc "$RS"

# the full run, on clean spaces (rcc keeps the same-size edit: restore both)
"$C/bin/fresh.sh" "$VS"; env "${VH_ENV[@]}" $VH_EXEC 2>/dev/null
"$C/bin/fresh.sh" "$RS"; env "${RCC_ENV[@]}" $RCC_VARS >/dev/null 2>&1
VH_CMD="run --mode copy --space $VH_SPACE -r $ROBOT/robot.yaml" RCC_CMD=$RCC_RUN
hf run-vhrun "$N_RUN" 1 - "${VH_ENV[@]}" -- $VH_RUN
hf run-rcc "$N_RUN" 1 - "${RCC_ENV[@]}" -- $RCC_RUN
profile run -

[[ $(libstate) == "$lib_before" ]] || { log "the gzip hololib changed under the benchmark (library or catalog)"; exit 1; }
load1=$(cut -d' ' -f1-3 /proc/loadavg)
grep -q " $W" /proc/mounts && log "warning: mounts under $W left: $(grep " $W" /proc/mounts)"

# ------------------------------------------------------------ report
W=$W RCC=$RCC REPO=$REPO QUICK=$quick LOAD0=$load0 LOAD1=$load1 \
    python3 - "$RES" "$write" "$REPO/BENCHMARKS.md" <<'EOF'
import datetime, glob, json, os, platform, re, statistics, subprocess, sys
res, write, md = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
W = os.environ["W"]
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
def results(name):
    """hyperfine's results for NAME (NAME.json, or NAME.<i>.json: one sample each)."""
    files = [f"{res}/{name}.json"] if os.path.exists(f"{res}/{name}.json") else sorted(
        glob.glob(f"{res}/{name}.*.json"), key=lambda p: int(p.rsplit(".", 2)[1]))
    return [json.load(open(p))["results"][0] for p in files]
def times(name):
    return [t for r in results(name) for t in r["times"]]
def cpu(name):
    """Mean user + system seconds per run (the command and its children)."""
    rs = results(name)
    return sum((r["user"] + r["system"]) * len(r["times"]) for r in rs) / sum(len(r["times"]) for r in rs)
def cell(t):
    f = lambda v: f"{v:.2f} s" if v >= 1 else f"{v * 1e3:.0f} ms"
    return f"{f(statistics.median(t))} ({f(min(t))}-{f(max(t))})"
cases = [
    ("first", "first run (space deleted before each sample)", "vhrun exec -- true / rcc holotree variables"),
    ("reuse", "second run, unchanged space", "idem"),
    ("dirty", "dirtied space (1 same-size edit, 1 deletion, 1 addition)", "idem"),
    ("run", "full run, unchanged space", "vhrun run / rcc run"),
]
rows, verdicts = [], []
for k, label, cmds in cases:
    v, r = times(f"{k}-vhrun"), times(f"{k}-rcc")
    ratio = statistics.median(r) / statistics.median(v)
    rows.append(f"| {label} | {cmds} | {cell(v)} | {cell(r)} | {len(v)} / {len(r)} | {ratio:.1f}x |")
    if k != "run":
        verdicts.append((label, ratio >= 1, ratio))
table = "\n".join(["| case | commands | vhrun copy mode | rcc | runs | rcc / vhrun (medians) |",
                   "|---|---|---:|---:|---:|---:|"] + rows)

def vh_prof(k):
    s = json.load(open(f"{res}/prof-{k}-vhrun.json"))
    c = s.get("copy") or {}
    return s, c
def walks(k):
    """The copy.check spans of the vhrun -v log: one walk of the space each."""
    unit = {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}
    out = []
    for line in open(f"{res}/prof-{k}-vhrun.log", errors="replace"):
        m = re.search(r"copy\.check: close time\.busy=([\d.]+)(ns|µs|ms|s)\b", line)
        if m:
            out.append(float(m.group(1)) * unit[m.group(2)])
    return " + ".join(f"{w:.1f}" for w in out) + " ms" if out else "?"
def rcc_restore(k):
    """rcc's 'Restore space from library' step, from its --timeline (seconds)."""
    t0 = t1 = total = None
    for line in open(f"{res}/prof-{k}-rcc.log", errors="replace"):
        m = re.match(r"\s*\d+:\s+[\d.]+%\s+([\d.]+)\s+(.*)", line)
        if not m:
            continue
        t, what = float(m.group(1)), m.group(2)
        if "Restore space from library" in what:
            t0 = t
        if "Fresh holotree done" in what:
            t1 = t
        if what.strip() == "Now.":
            total = t
    return (t1 - t0 if t0 is not None and t1 is not None else None), total
prof = ["| case | vhrun state | vhrun check walks | vhrun prepare (lock, check, repair) | vhrun whole run | rcc restore step | rcc whole command | CPU (user+sys, mean of the timed runs): vhrun / rcc |",
        "|---|---|---:|---:|---:|---:|---:|---:|"]
for k, label, _ in cases:
    s, c = vh_prof(k)
    if s.get("mode") != "copy":
        raise SystemExit(f"bench/copy.sh: the {k} run was not in copy mode: {s.get('mode')}")
    rs, rt = rcc_restore(k)
    fmt = lambda v: "?" if v is None else (f"{v:.2f} s" if v >= 1 else f"{v * 1e3:.0f} ms")
    prof.append(f"| {label} | {c.get('state', '?')} ({c.get('restored', 0)} restored, {c.get('repaired', 0)} repaired, "
                f"{c.get('removed', 0)} removed) | {walks(k)} | {c.get('prepare_ms', 0):.1f} ms | "
                f"{s['time_ms']['total']:.1f} ms | {fmt(rs)} | {fmt(rt)} | {fmt(cpu(k + '-vhrun'))} / {fmt(cpu(k + '-rcc'))} |")
prof = "\n".join(prof)

rep = {w: json.load(open(f"{res}/repair-{w}.json")) for w in ("vhrun", "rcc")}
repair = "\n".join(["| after one run on the dirtied space | vhrun copy mode | rcc |", "|---|---|---|"] + [
    f"| {what} | {rep['vhrun'][key]} | {rep['rcc'][key]} |" for key, what in [
        ("same_size_edit", "same-size edit of `lib/python3.11/os.py` undone"),
        ("deleted_file", "deleted `lib/python3.11/json/decoder.py` restored"),
        ("added_file", "added `vhbench-extra.txt` removed")]])

missed = [f"{l} ({x:.2f}x)" for l, ok, x in verdicts if not ok]
target = ("**met**: vhrun's copy mode is faster than rcc in every restore case" if not missed
          else "**missed**: vhrun's copy mode is slower than rcc in: " + "; ".join(missed))
hf = out("hyperfine", "--version")
rccv = out(os.environ["RCC"], "version", "--bundled") or "?"
head = out("git", "-C", os.environ["REPO"], "rev-parse", "--short", "HEAD")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
quick = os.environ["QUICK"] == "1"
section = f"""## Copy mode (machines without FUSE or namespaces)

Generated by `sudo bench/copy.sh{' --quick' if quick else ''}` ({date}, vhrun {head}, rcc {rccv.splitlines()[0] if rccv else '?'}, {hf});
Linux {platform.release()}, {os.cpu_count()} cores ({cpu}); load average at start / end: {os.environ["LOAD0"]} / {os.environ["LOAD1"]}.
Warm: the hololib is in the page cache for every sample (read once before each first-run sample);
hyperfine `-N`, median (min-max).

Contenders, on the same catalog (the benchmark environment lifted into the gzip hololib
`{W}/vh/gz`, which rcc reads through its own `ROBOCORP_HOME`: the library hard-linked, `catalog/` copied),
each into its own space next to the catalog's recorded path (`{W}/holotree/<space>`):
vhrun `exec --mode copy --space vhbench-copy -r robot.yaml -- true` (restore or check/repair, then `true`
in place) against rcc `holotree variables --bundled --space rccbench --json conda.yaml` (rcc's
restore-only path); for the full run `vhrun run --mode copy` against `rcc run --bundled -t t`. The robot:
`tasks: {{t: {{shell: "true"}}}}`, `conda.yaml` = the benchmark blueprint (both resolve the same catalog).
First run: the space and its `.lck`/`.meta`/`.use`/`.vhrun` siblings deleted (and `sync`) before
each sample, one sample of each contender in turn. Dirtied: before each sample
`lib/python3.11/os.py`'s first byte rewritten (same size), `lib/python3.11/json/decoder.py`
deleted, a file added at the space root.

{table}

Target (issue): copy mode never slower than rcc, first run or reuse: {target}.
The full run is not a like-for-like comparison: `rcc run` runs `pip freeze --all` in the environment
before every task (~3 s here), `vhrun run` does not.

Where the time goes (one more run of each case, untimed, so its figures may differ from the medians
above: `vhrun -v --stats-json` spans `copy.check` / `copy.repair`; `rcc --timeline`, its step
"Restore space from library" to "Fresh holotree done"; CPU from the timed runs):

{prof}

vhrun walks the space (directories and inodes, no content) once when it finds it clean, twice
when it repairs: the check, then the same walk again under the exclusive lock (another run may
have repaired or changed the space meanwhile), so the walk is most of a small repair.

What each one repairs:

{repair}

rcc decides per file by name, size and mode plus the digest its `<space>.meta` recorded: a file
rewritten with the same size and mode stays as the task left it, even with a new mtime. vhrun
demands the restore's mtime and a ctime older than its `<space>.vhrun` stamp as well, so any write
since the space was last found clean is seen without reading content.
"""
print(section)
open(f"{res}/section.md", "w").write(section)
if write:
    sys.path.insert(0, os.path.dirname(md) + "/bench")
    from section import put_section
    put_section(md, "Copy mode (machines without FUSE or namespaces)", section)
    print(f"bench/copy.sh: wrote the section into {md}", file=sys.stderr)
EOF
log "done in $((SECONDS - started)) s; raw figures in $RES"
