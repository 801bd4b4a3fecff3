"""``tenet bench``: throughput, latency, CPU and memory of tenet against two reference points.

See ``docs/benchmarks.md`` for what is measured, how, and the figures.
"""

from .runner import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
