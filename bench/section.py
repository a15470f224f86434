"""BENCHMARKS.md's sections owned by one bench script each (bench/copy.sh,
bench/remote.sh, bench/build.sh): put one in, replacing its old text up to
the next `## ` heading, or appended when it is new."""
import os
import re


def put_section(md, heading, section):
    """Write `section` (starting with `## heading`) into the file `md`."""
    text = open(md).read() if os.path.exists(md) else "# Benchmarks\n"
    start = text.find("\n## " + heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = re.search(r"^## ", text[start + 2:], re.M)
        rest = text[start + 2 + nxt.start():] if nxt else ""
        text = text[:start].rstrip("\n") + "\n\n" + section + ("\n" + rest if rest else "")
    open(md, "w").write(text)
