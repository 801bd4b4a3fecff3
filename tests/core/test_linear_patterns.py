"""Every regular expression applied to user or model text runs in linear time.

Each pattern gets the worst inputs we know for a backtracking engine, at the
maximum input length (``TENET_MAX_INPUT_CHARS``), and the same inputs at a
quarter of it. Linear work grows about 4x from the quarter to the full length;
quadratic work grows 16x (the old arithmetic pattern took ~30 s on 32,000
digits). The measurement runs in a subprocess with a generous timeout so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import tenet

_SRC = Path(tenet.__file__).parent

_PROBE = textwrap.dedent(
    """
    import sys, time
    from tenet.ids import _PATTERN as ids_pattern
    from tenet.models import openai, scripted
    from tenet.server.logs import RedactTokens
    from tenet.settings import Settings
    from tenet import text

    n = Settings().max_input_chars
    patterns = {
        "scripted.remember": scripted._REMEMBER,
        "scripted.recall": scripted._RECALL,
        "scripted.expr": scripted._EXPR,
        "scripted.clock": scripted._CLOCK,
        "scripted.use": scripted._USE,
        "scripted.said_first": scripted._SAID_FIRST,
        "scripted.said_before": scripted._SAID_BEFORE,
        "scripted.ask_name": scripted._ASK_NAME,
        "scripted.give_name": scripted._GIVE_NAME,
        "openai.context_words": openai._CONTEXT_WORDS,
        "ids": ids_pattern,
        "logs.bearer": RedactTokens._PATTERNS[0][0],
        "logs.token": RedactTokens._PATTERNS[1][0],
        "text.surrogate": text._SURROGATE,
    }
    # Repeated units that make a backtracking engine retry from every offset.
    units = ["1", "1+", "(1", "1)", "1 + ", "1.1", " ", "use a", " a=b", "remember ",
             "bearer ", "bearer\\t", "tnt_", "tnt_a", "what is", "a", "-(", "1 *-(1"]
    def inputs(length):
        for unit in units:
            body = (unit * (length // len(unit) + 1))[: length - 1]
            yield unit, body + "!"       # a tail that defeats the match at the very end
            yield unit + "$", body[: length - 2] + "x="

    def cost(pattern, text):
        start = time.perf_counter()
        pattern.search(text)
        pattern.match(text)
        if hasattr(pattern, "sub"):
            pattern.sub("", text)
        return time.perf_counter() - start

    worst = []
    for name, pattern in patterns.items():
        for (unit, small), (_, full) in zip(inputs(n // 4), inputs(n)):
            assert len(full) <= n
            quarter = min(cost(pattern, small) for _ in range(3))
            whole = min(cost(pattern, full) for _ in range(3))
            # Linear: ~4x. Quadratic: ~16x. The slack absorbs timer noise at microseconds.
            if whole > 8 * quarter + 0.05:
                worst.append(f"{name} on {unit!r}: {quarter:.4f}s -> {whole:.4f}s")
    print("\\n".join(worst))
    sys.exit(1 if worst else 0)
    """
)


def test_every_pattern_over_user_text_runs_in_linear_time() -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=100
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("a pattern took minutes on an input of the maximum length") from None
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_compiles_a_backtracking_pattern_over_user_text() -> None:
    """New patterns go through :mod:`tenet.linear_re`; only ids.py's anchored,
    fixed-length pattern and text.py's one-character class and fixed-length escape
    (on bytes and lone surrogates, which RE2 does not take) use :mod:`re` (the
    ones over str are measured above)."""
    offenders = []
    for path in sorted(_SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if "re" in names or "regex" in names:
                offenders.append(str(path.relative_to(_SRC)))
    assert offenders == ["ids.py", "text.py"], offenders
