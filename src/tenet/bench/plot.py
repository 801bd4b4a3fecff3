"""``--plot FILE.png``: throughput and p99 per-event latency against the number of users."""

from __future__ import annotations

from typing import Any


def plot(report: dict[str, Any], path: str) -> None:
    """Two panels, one line per target; needs matplotlib (the ``dev`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in ("tenet", "floor", "naive"):
        rows = sorted(
            (p for p in report["phases"] if p["target"] == kind), key=lambda p: p["users"]
        )
        if not rows:
            continue
        users = [p["users"] for p in rows]
        left.plot(users, [p["events_per_s"] for p in rows], marker="o", label=kind)
        p99 = [p["event_latency_ms"]["p99"] for p in rows]
        right.plot(
            users, [v if v is not None else float("nan") for v in p99], marker="o", label=kind
        )
    for ax, title, ylabel in (
        (left, "events delivered per second", "events/s"),
        (right, "per-event latency, p99", "ms"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent users")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    right.set_yscale("log")
    m = report["machine"]
    fig.suptitle(f"tenet bench: {m['nproc']} cores, {m['cpu']}, Python {m['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
