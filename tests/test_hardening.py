"""Hardening (issue 10): bad input and odd states get a clear answer, and nothing is lost.

Every test runs the installed executable on a real tree and looks at the disk afterwards.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import EFSPURGE, make_file, snapshot


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}


def _run_in(cwd, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EFSPURGE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**_env(), **(env or {})},
        timeout=120,
    )


# --- 1. an empty or blank PATH argument -----------------------------------------------------


@pytest.mark.parametrize("path", ["", " ", "\t", " \n"])
def test_empty_or_blank_path_argument_is_refused_and_nothing_changes(tmp_path, path):
    """`efspurge "$EFS_PATH"` with the variable unset must not purge the working directory."""
    make_file(tmp_path / "old.log", old=True)
    make_file(tmp_path / "sub/old.tmp", old=True)
    before = snapshot(tmp_path)
    result = _run_in(tmp_path, path, "--max-age-days", "0")
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PATH" in lines[0] and "empty" in lines[0], result.stderr
    assert result.stdout == ""
    assert snapshot(tmp_path) == before
