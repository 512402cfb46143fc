"""The robustness curve as a PNG."""

from __future__ import annotations

from pathlib import Path

from fsr_models.facts.paper import PAPER_EPS


def plot_curve(report: dict, path: Path):
    """The robustness curve as a PNG: accuracy (%) against eps in /255 (symlog axis), the paper's 8/255 marked.
    Returns the matplotlib Figure drawn."""
    from matplotlib.figure import Figure  # no pyplot: nothing to display, Agg renders the file

    c = report["curve"]
    eps, acc = [e * 255 for e in c["eps"]], [100 * a for a in c["accuracy"]]
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(eps, acc, marker="o", label=c["attack"])
    for e, a in zip(eps, acc):
        ax.annotate(f"{a:.1f}", (e, a), textcoords="offset points", xytext=(3, 5), fontsize=8)
    paper = min(range(len(eps)), key=lambda i: abs(eps[i] - PAPER_EPS * 255))
    ax.axvline(PAPER_EPS * 255, color="tab:red", linestyle="--", label=f"the paper's eps 8/255: {acc[paper]:.1f}%")
    ax.set_xscale("symlog", linthresh=2)
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.set_xlim(0, max(eps) * 1.3)
    ax.set_ylim(-2, 110)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("eps (x/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{report['model']}\n{report['dataset']} test images {report['indices']} ({c['images']} images)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=120)
    return fig
