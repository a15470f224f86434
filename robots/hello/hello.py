"""Print the environment this task runs in: interpreter, prefix, rcc's
variables, working directory, and whether the environment can be written
(under vhrun writes land in a throwaway overlay, never in the hololib)."""

import os
import platform
import sys
import tempfile


def mount_of(path):
    """The mount point and filesystem type holding `path` (Linux)."""
    best = ("?", "?")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                fstype = fields[fields.index("-") + 1]
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                    best = (point, fstype)
    except OSError:
        pass
    return best


def writable(directory):
    """Try to create and remove a file in `directory`."""
    try:
        fd, name = tempfile.mkstemp(prefix=".hello-", dir=directory)
    except OSError as e:
        return f"no ({e.strerror})"
    os.close(fd)
    os.unlink(name)
    return "yes"


def main():
    prefix = sys.prefix
    point, fstype = mount_of(prefix)
    rows = [
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("executable", sys.executable),
        ("sys.prefix", prefix),
        ("prefix mount", f"{point} ({fstype})"),
        ("prefix writable", writable(prefix)),
        ("cwd", os.getcwd()),
    ]
    for key in sorted(os.environ):
        if key.startswith(("RCC_", "ROBOT_", "CONDA_")) or key in ("ROBOCORP_HOME", "PYTHON_EXE", "PYTHONPATH"):
            rows.append((key, os.environ[key]))
    width = max(len(k) for k, _ in rows)
    print("Hello from a robot!")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")

    artifacts = os.environ.get("ROBOT_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        with open(os.path.join(artifacts, "hello.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"{k}={v}\n" for k, v in rows))
        print(f"wrote {os.path.join(artifacts, 'hello.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
