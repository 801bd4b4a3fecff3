"""The ``tenet`` command, run as a user would: separate processes on one SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tenet(tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TENET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "tenet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_notes_persist_per_user_and_never_cross_users(tmp_path: Path) -> None:
    first = tenet(tmp_path, "run", "assistant", "remember that my code is 4242", "--user", "alice")
    assert first.returncode == 0, first.stderr
    assert "remember" in first.stdout and "agent_completed" in first.stdout

    bob = tenet(tmp_path, "run", "assistant", "what is my code?", "--user", "bob")
    assert bob.returncode == 0, bob.stderr
    assert "recall" in bob.stdout
    assert "4242" not in bob.stdout

    alice = tenet(tmp_path, "run", "assistant", "what is my code?", "--user", "alice")
    assert alice.returncode == 0, alice.stderr
    assert "4242" in alice.stdout


def test_each_event_is_printed_on_one_line_in_order(tmp_path: Path) -> None:
    result = tenet(tmp_path, "run", "assistant", "what is (2 + 3) * 4?", "--user", "carol")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    seqs = [int(line.split()[0]) for line in lines]
    assert seqs == list(range(1, len(lines) + 1))
    assert lines[0].split()[1] == "agent_started"
    assert lines[-1].split()[1] == "agent_completed"
    assert any("calculator" in line and "20" in line for line in lines)


def test_a_failed_run_exits_1_and_an_unknown_agent_2(tmp_path: Path) -> None:
    slow = {"TENET_RUN_TIMEOUT_S": "0.2", "TENET_SCRIPTED_LATENCY_MS": "2000"}
    failed = tenet(tmp_path, "run", "assistant", "what is 1 + 1?", "--user", "eve", **slow)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "agent_error" in failed.stdout and "timeout" in failed.stdout

    unknown = tenet(tmp_path, "run", "no-such-agent", "hi")
    assert unknown.returncode == 2
    assert "unknown agent" in unknown.stderr


def test_users_add_prints_a_token_once_and_refuses_a_duplicate(tmp_path: Path) -> None:
    created = tenet(tmp_path, "users", "add", "dora")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("tnt_")
    again = tenet(tmp_path, "users", "add", "dora")
    assert again.returncode == 1
    assert "conflict" in again.stderr


def test_db_upgrade_migrates_an_empty_database(tmp_path: Path) -> None:
    result = tenet(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.db").exists()


def test_audit_against_an_in_process_server_passes_and_writes_json(tmp_path: Path) -> None:
    import json

    report_file = tmp_path / "audit.json"
    result = tenet(tmp_path, "audit", "--users", "3", "--runs", "1", "--json", str(report_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "routing" in result.stdout and "probes" in result.stdout
    report = json.loads(report_file.read_text())
    assert report["ok"] is True and report["users"] == 3
    assert set(report["checks"]) >= {"routing", "content", "sequence", "probes", "guard"}
    assert all(c["checked"] > 0 for c in report["checks"].values())


def test_sqlite_needs_neither_asyncpg_nor_redis(tmp_path: Path) -> None:
    """`make run` installs no extras: the embedded deployment must not import them."""
    script = (
        "import sys; sys.modules['asyncpg'] = None; sys.modules['redis'] = None\n"
        "from tenet.cli import main\n"
        "sys.argv = ['tenet', 'run', 'assistant', 'what is 2 + 2?', '--user', 'lean']\n"
        "main()\n"
    )
    env = {**os.environ, "TENET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lean.db'}"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "The answer is 4" in result.stdout


def test_audit_with_jwt_canaries_passes_and_jwks_prints_the_public_key(tmp_path: Path) -> None:
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "signing.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    printed = tenet(tmp_path, "jwks", str(pem), "--kid", "k1")
    assert printed.returncode == 0, printed.stderr
    (jwk,) = json.loads(printed.stdout)["keys"]
    assert jwk["kid"] == "k1" and jwk["alg"] == "ES256" and "d" not in jwk

    report_file = tmp_path / "audit.json"
    result = tenet(
        tmp_path, "audit", "--users", "3", "--runs", "1", "--jwt-key", str(pem),
        "--json", str(report_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(report_file.read_text())["ok"] is True
