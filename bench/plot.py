"""plot.py RESULTS.json OUT.svg: the bar chart of bench/run's ratios.

Run by bench/bench.py with the benchmark environment's own interpreter
(matplotlib is part of that environment), never the system's.
Left: time relative to (d) the plain directory (1 = the floor, log scale).
Right: how many times faster than (a) rcc's copy model (log scale).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Contender labels come with the results (bench.py's LABELS).
LABELS = {}
METRICS = {
    "true": "activation (true)",
    "pass": "python -c pass (end to end)",
    "pass-in": "python -c pass (in env)",
    "import": "heavy import (end to end)",
    "import-in": "heavy import (in env)",
    "robot": "robot run",
    "cold": "cold first run",
    "conc": "8 concurrent imports",
}
COLORS = {
    "a": "#b0413e", "a-raw": "#d98c8a", "b": "#e0a030", "c": "#2f6db5",
    "c-nopt": "#7ea6d9", "c-raw": "#1b3f6b", "c-perrun": "#4fa3a5", "c-fuse": "#5b8fd0",
    "c-user": "#9b6fc0", "d": "#6a6a6a", "e": "#8a9a5b",
}


def median(res, m, c):
    r = res.get(m, {}).get(c)
    return r.get("median") if r and "error" not in r else None


def label(y):
    return f"{y:.0f}" if y >= 100 else f"{y:.3g}"


def panel(ax, res, names, ref, invert, title):
    metrics = [m for m in METRICS if m in res]
    # contenders with at least one figure (a failed one gets no bar)
    others = [c for c in names if c != ref and any(median(res, m, c) for m in metrics)]
    width = 0.8 / max(len(others), 1)
    top = low = 1.0
    for i, c in enumerate(others):
        xs, ys = [], []
        for j, m in enumerate(metrics):
            v, r = median(res, m, c), median(res, m, ref)
            if v and r:
                xs.append(j + (i - (len(others) - 1) / 2) * width)
                ys.append(r / v if invert else v / r)
        top = max([top] + ys)
        low = min([low] + ys)
        bars = ax.bar(xs, ys, width, label=LABELS[c], color=COLORS.get(c))
        for b, y in zip(bars, ys):
            ax.annotate(label(y), (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                        fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylim(min(0.8, low * 0.8), top * 4)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([METRICS[m] for m in metrics], rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.25)


def main():
    data = json.load(open(sys.argv[1]))
    res, names = data["results"], data["contenders"]
    LABELS.update(data["labels"])
    plt.rcParams["svg.hashsalt"] = "vhrun-bench"
    plt.rcParams["svg.fonttype"] = "none"
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6))
    panel(left, res, names, "d", False, "time / plain directory (d)  (lower is better, 1 = floor)")
    panel(right, res, names, "a", True, "times faster than copy restore (a)  (higher is better)")
    handles = {}
    for ax in (left, right):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = [LABELS[c] for c in names if LABELS[c] in handles]
    fig.legend([handles[k] for k in order], order, loc="lower center", ncol=min(len(order), 4), fontsize=8,
               frameon=False)
    m = data["machine"]
    fig.suptitle(f"vhrun benchmark: ~12k-file CPython env, medians; Linux {m['kernel']}, {m['cores']} cores",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(sys.argv[2], format="svg", metadata={"Date": None})


if __name__ == "__main__":
    main()
