#!/usr/bin/env python3
"""sudo bench/inenv-ab.py [ROUNDS]: the warm heavy import, in-environment,
one sample of each contender in turn, with the sandbox's own floor.

Contenders (the scratch dir of bench/run must exist: W, default
/tmp/vhbench):
  plain        the plain directory (its bin first in PATH)
  overlay      vhrun's sandbox and overlay over that same plain directory
               (`vhrun exec --lower-dir`): what any vhrun run pays
  image        vhrun over the kernel image (root)
  fuse-served  the FUSE warm server without passthrough (root): the data
               path of a rootless run
  rootless     the FUSE warm server as the bench user (bench/run's
               contender "c-user"; needs /dev/fuse 0666, as bench/run sets)

Each sample is `inenv.sh import` run as the task (it reports the
interpreter's start and end on fd 3). Prints medians and the median of
per-round ratios to plain: on a shared VM a series moves by several
percent, and pairing is what keeps the comparison fair.
"""
import os
import statistics
import subprocess
import sys
from pathlib import Path

W = Path(os.environ.get("W", "/tmp/vhbench"))
REPO = Path(__file__).resolve().parent.parent


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    vhrun = os.environ.get("VHRUN") or subprocess.run(
        [REPO / "bench" / "vhrun-bin", "--no-build"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env_dir = next((W / "holotree").glob("hbe7c0de_*"))
    key = next(p.name for p in sorted((W / "vh" / "gz" / "hololib" / "catalog").iterdir())
               if "." in p.name and not p.name.endswith(".info"))
    inenv = str(W / "vh" / "bin" / "inenv.sh")
    path = f"{env_dir}/bin:{os.environ['PATH']}"
    pyc = str(W / "vh" / "pyc" / "d")
    root = dict(os.environ, ROBOCORP_HOME=str(W / "vh" / "gz"), VHRUN_HOME=str(W / "vh" / "gz" / "vhrun"))
    user = W / "vh" / "user"
    import pwd
    pw = pwd.getpwnam("vhbench")
    contenders = {
        "plain": ([inenv, "import"], dict(root, PATH=path, PYTHONPYCACHEPREFIX=pyc)),
        "overlay": ([vhrun, "exec", "--lower-dir", str(env_dir), "--env-path", str(env_dir), "--",
                     "env", f"PYTHONPYCACHEPREFIX={pyc}", f"PATH={path}", inenv, "import"], root),
        "image": ([vhrun, "exec", "--catalog", key, "--", inenv, "import"], root),
        "fuse-served": ([vhrun, "exec", "--catalog", key, "--", inenv, "import"],
                        dict(root, VHRUN_IMAGE="off", VHRUN_PASSTHROUGH="off")),
        "rootless": (["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                      vhrun, "exec", "--catalog", key, "--", inenv, "import"],
                     dict(os.environ, ROBOCORP_HOME=str(user), VHRUN_HOME=str(user / "vhrun"),
                          HOME=str(user), VHRUN_IMAGE="off")),
    }
    # fd 3 of each sample is a pipe; keep 3 taken between samples so that
    # no pipe of ours lands on it.
    os.dup2(os.open("/dev/null", os.O_RDONLY), 3)
    null = os.open("/dev/null", os.O_RDONLY)
    assert null != 3

    def sample(argv, env):
        r, w = os.pipe()
        os.dup2(w, 3)
        os.close(w)
        p = subprocess.Popen(argv, env=env, pass_fds=(3,), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        os.dup2(null, 3)
        out = os.read(r, 200).decode()
        os.close(r)
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"inenv-ab.py: {argv[0]} ... exited {p.returncode}: {err.decode()[-400:]}")
        start, end = map(float, out.split())
        return end - start

    for argv, env in contenders.values():  # warm-up: caches, servers
        for _ in range(2):
            sample(argv, env)
    times = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, (argv, env) in contenders.items():
            times[k].append(sample(argv, env))
    base = times["plain"]
    for k, v in times.items():
        paired = statistics.median(a / b for a, b in zip(v, base))
        print(f"{k:12s} median {statistics.median(v) * 1000:7.1f} ms   paired ratio to plain {paired:.3f}")


if __name__ == "__main__":
    main()
