"""Render a ``tenet bench --json`` report as the Markdown tables of docs/benchmarks.md.

python benchmarks/render.py docs/benchmarks.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def render(report: dict[str, Any]) -> str:
    out = ["### Throughput and latency (zero agent latency unless stated)", ""]
    out.append(
        "| target | U | latency ms | runs done | runs/s | events/s | TTFE p50 ms "
        "| event p50 / p95 / p99 ms | run p50 / p99 ms | fairness | errors |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    phases = list(report["phases"]) + list((report.get("latency_check") or {}).get("phases", []))
    for p in phases:
        ev, run = p["event_latency_ms"], p["run_latency_ms"]
        done = _n(p["runs_completed"], 0) + (" (deadline)" if p.get("stopped_early") else "")
        out.append(
            f"| {p['target']} | {_n(p['users'])} | {_n(p['latency_ms'], 0)} | {done} "
            f"| {_n(p['runs_per_s'])} | {_n(p['events_per_s'], 0)} "
            f"| {_n(p['time_to_first_event_ms']['p50'], 2)} "
            f"| {_n(ev['p50'])} / {_n(ev['p95'])} / {_n(ev['p99'])} "
            f"| {_n(run['p50'])} / {_n(run['p99'])} | {_n(p['fairness'], 2)} | {p['errors']} |"
        )
    out += ["", "### Cost", ""]
    out.append(
        "| target | U | latency ms | server CPU s | CPU ms/run | peak RSS MiB "
        "| KiB per connected user | driver µs/event |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        out.append(
            f"| {p['target']} | {_n(p['users'])} | {_n(p['latency_ms'], 0)} "
            f"| {_n(p['server_cpu_s'], 2)} | {_n(p['server_cpu_ms_per_run'], 2)} "
            f"| {_n(p['server_peak_rss_mib'])} | {_n(p['rss_per_connected_user_kib'])} "
            f"| {_n(p['driver_cpu_us_per_event'])} |"
        )
    out += ["", "### Against the floor and the naive design", ""]
    out.append(
        "| U | tenet events/s | floor events/s | tenet / floor | naive events/s | tenet / naive |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|")
    for c in report["comparison"]:
        out.append(
            f"| {_n(c['users'])} | {_n(c.get('tenet_events_per_s'), 0)} "
            f"| {_n(c.get('floor_events_per_s'), 0)} "
            f"| {_n(c.get('fraction_of_floor'), 3)} | {_n(c.get('naive_events_per_s'), 0)} "
            f"| {_n(c.get('multiple_of_naive'), 2)} |"
        )
    out += [
        "",
        "### The targets",
        "",
        "| target | goal | measured | met | the floor, same figure |",
        "|---|---|---:|---|---:|",
    ]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        floor = _n(t["floor"], 2) if t.get("floor") is not None else ""
        out.append(f"| {t['target']} | {t['goal']} | {_n(t['measured'], 2)} | {met} | {floor} |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(render(json.load(fh)))
