#!/usr/bin/env python3
"""bench/ab.py ROUNDS 'COMMAND A' 'COMMAND B' ...: short commands timed
one run at a time, in turn (A B C A B C ...), each started with
posix_spawn (no shell, output to /dev/null) and waited for.

Prints each command's median wall time and the median of its per-round
ratio to A: pairing keeps a ratio meaningful while the machine's speed
drifts, which on a shared VM it does as much as two activations differ.
Used for the activation figures in bench/README.md, e.g.

    bench/ab.py 400 "$OLD exec --catalog $KEY -- true" \\
                    "$NEW exec --catalog $KEY -- true" \\
                    "bwrap --dev-bind / / --unshare-all --die-with-parent true"
"""
import os
import shlex
import statistics
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    cmds = [shlex.split(c) for c in sys.argv[2:]]
    null = os.open("/dev/null", os.O_RDWR)
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
               (os.POSIX_SPAWN_DUP2, null, 2)]

    def once(argv):
        t = time.perf_counter_ns()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"ab.py: {shlex.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
        return (time.perf_counter_ns() - t) / 1e6

    for c in cmds:  # warm-up: page cache, warm servers, images
        for _ in range(20):
            once(c)
    times = [[] for _ in cmds]
    for _ in range(rounds):
        for i, c in enumerate(cmds):
            times[i].append(once(c))
    for i, c in enumerate(cmds):
        ratio = statistics.median(a / b for a, b in zip(times[i], times[0]))
        print(f"{statistics.median(times[i]):7.3f} ms  {ratio:.3f}x of the first  {shlex.join(c)}")


if __name__ == "__main__":
    main()
