"""Running the bench from the command line: the progress bar, the tables, the files."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .runner import BenchConfig, run_bench


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_report(report: dict[str, Any], console: Console) -> None:
    m = report["machine"]
    console.print(f"[bold]tenet bench[/]  {m['nproc']} cores, {m['cpu']}, Python {m['python']}")
    phases = list(report["phases"])
    if report.get("latency_check"):
        phases += report["latency_check"]["phases"]
    speed = Table(title="throughput and latency (ms)")
    for col in (
        "target", "U", "lat", "runs/s", "events/s", "TTFE p50", "event p50", "p95", "p99",
        "run p50", "run p99", "fairness", "errors",
    ):  # fmt: skip
        speed.add_column(col, justify="left" if col == "target" else "right")
    cost = Table(title="cost: server CPU and memory, driver CPU")
    for col in (
        "target", "U", "lat", "server CPU s", "CPU ms/run", "RSS MiB", "peak RSS MiB",
        "KiB/user", "driver CPU s", "driver us/event",
    ):  # fmt: skip
        cost.add_column(col, justify="left" if col == "target" else "right")
    for p in phases:
        ev, run, ttfe = p["event_latency_ms"], p["run_latency_ms"], p["time_to_first_event_ms"]
        head = (p["target"], _fmt(p["users"]), _fmt(p["latency_ms"], 0))
        speed.add_row(
            *head, _fmt(p["runs_per_s"]), _fmt(p["events_per_s"], 0), _fmt(ttfe["p50"], 2),
            _fmt(ev["p50"], 2), _fmt(ev["p95"], 2), _fmt(ev["p99"], 2), _fmt(run["p50"], 1),
            _fmt(run["p99"], 1), _fmt(p["fairness"], 2), _fmt(p["errors"]),
        )  # fmt: skip
        cost.add_row(
            *head, _fmt(p["server_cpu_s"], 2), _fmt(p["server_cpu_ms_per_run"], 2),
            _fmt(p["server_rss_connected_mib"]), _fmt(p["server_peak_rss_mib"]),
            _fmt(p["rss_per_connected_user_kib"]), _fmt(p["driver_cpu_s"], 2),
            _fmt(p["driver_cpu_us_per_event"], 1),
        )  # fmt: skip
    console.print(speed)
    console.print(cost)
    if report["config"].get("url"):
        sources = sorted({str(p.get("server_cpu_source")) for p in phases})
        how = {"pid": "/proc by PID", "metrics": "its /metrics"}
        console.print(
            "server CPU and RSS of "
            + report["config"]["url"]
            + " read from "
            + ", ".join(how.get(s, s) for s in sources)
        )
    if report["comparison"]:
        cmp = Table(title="tenet against the floor and the naive design (events/s)")
        for col in ("U", "tenet", "floor", "fraction of floor", "naive", "multiple of naive"):
            cmp.add_column(col, justify="right")
        for c in report["comparison"]:
            cmp.add_row(
                _fmt(c["users"]),
                _fmt(c["tenet_events_per_s"], 0),
                _fmt(c.get("floor_events_per_s"), 0),
                _fmt(c.get("fraction_of_floor"), 3),
                _fmt(c.get("naive_events_per_s"), 0),
                _fmt(c.get("multiple_of_naive"), 2),
            )
        console.print(cmp)
    for idle in report.get("idle") or []:
        console.print(
            f"idle: {idle['target']}: {idle['connected']:,}/{idle['sockets']:,} sockets, RSS "
            f"{_fmt(idle['rss_before_mib'])} -> {_fmt(idle['rss_connected_mib'])} MiB, "
            f"{_fmt(idle['rss_per_idle_user_kib'])} KiB per idle user"
        )
    churn = report.get("churn")
    if churn:
        console.print(
            f"churn: {churn['users']:,} users came, ran {churn['runs']:,} runs and went; RSS "
            f"fresh {churn['rss_fresh_mib']} MiB, baseline {churn['rss_baseline_mib']} MiB, "
            f"after {churn['rss_after_mib']} MiB ({churn['growth_pct']:+.2f}%)"
        )
    hist = report.get("history")
    if hist:
        extra = hist["extra_cpu_ms_per_run"]
        console.print(
            f"history: {hist['cpu_ms_per_run_empty_thread']:.2f} ms CPU per run on an empty "
            f"thread; reading it costs {hist['history_cpu_ms_per_run']:+.2f} ms per run at "
            f"{hist['turns']} turns (against the same threads' runs not reading it, "
            f"{hist['cpu_ms_per_run_history_not_read']:.2f} ms); extra against the empty "
            "thread "
            + ", ".join(f"{extra[k]:+.2f} ms at {k} turns" for k in extra)
            + f" (budget {hist['context_tokens']:,} tokens)"
        )
    goals = Table(title="the targets")
    for col in ("target", "goal", "measured", "met", "the floor"):
        goals.add_column(col)
    for t in report["targets"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "not measured"}[t["met"]]
        floor = _fmt(t["floor"], 2) if t.get("floor") is not None else ""
        goals.add_row(t["target"], t["goal"], _fmt(t["measured"], 2), met, floor)
    console.print(goals)


def main(
    config: BenchConfig,
    *,
    console: Console,
    json_file: str | None = None,
    plot_file: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """What ``tenet bench`` does: run with a progress bar, print, write the files."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(description: str, done: int, total: int | None) -> None:
            task = tasks.get(description)
            if task is None:
                task = tasks[description] = bar.add_task(description, total=total)
            bar.update(task, completed=done, total=total)

        report = run_bench(config, progress, command=command)
    print_report(report, console)
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if plot_file:
        from .plot import plot

        plot(report, plot_file)
    return report
