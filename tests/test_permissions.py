"""Real permission failures: the tool runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH.

The suite runs as root, and root ignores permission bits. ``setpriv`` drops the two
capabilities from the bounding set, so the child process is refused exactly as an
unprivileged pod would be, and the tool's handling of real EACCES is what is tested.
"""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import final, make_file, run_cli, snapshot

SETPRIV = shutil.which("setpriv")
NO_DAC = (
    (
        SETPRIV,
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    )
    if SETPRIV
    else ()
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not SETPRIV, reason="needs root and setpriv to drop capabilities"
)


def test_capabilities_really_are_dropped(tmp_path):
    locked = tmp_path / "locked"
    make_file(locked / "f", old=True)
    locked.chmod(0o555)
    try:
        import subprocess

        result = subprocess.run([*NO_DAC, "rm", "-f", str(locked / "f")], capture_output=True)
        assert result.returncode != 0  # otherwise the tests below would prove nothing
    finally:
        locked.chmod(0o755)


def test_permission_errors_are_counted_and_the_run_goes_on(tmp_path):
    make_file(tmp_path / "unwritable/old", old=True)  # cannot unlink: no write on the dir
    make_file(tmp_path / "unreadable/old", old=True)  # cannot even open the dir
    make_file(tmp_path / "fine/old", old=True)
    make_file(tmp_path / "fine/new", old=False)
    (tmp_path / "unwritable").chmod(0o555)
    (tmp_path / "unreadable").chmod(0o000)
    try:
        result = run_cli(str(tmp_path), "--remove-empty-dirs", prefix=NO_DAC)
    finally:
        (tmp_path / "unwritable").chmod(0o755)
        (tmp_path / "unreadable").chmod(0o755)
    stats = final(result.stdout)
    assert result.returncode == 1, result.stderr
    assert stats["errors"] == 2
    assert stats["files_purged"] == 1
    assert snapshot(tmp_path) == {
        "dir:unwritable",
        "file:unwritable/old",
        "dir:unreadable",
        "file:unreadable/old",
        "dir:fine",
        "file:fine/new",
    }
    paths = {
        r["extra_fields"].get("path")
        for r in map(__import__("json").loads, result.stdout.splitlines())
        if r["level"] == "WARNING"
    }
    assert str(tmp_path / "unwritable/old") in paths
    assert str(tmp_path / "unreadable") in paths


def test_unreadable_root_is_a_clear_error(tmp_path):
    root = tmp_path / "root"
    make_file(root / "old", old=True)
    root.chmod(0o000)
    try:
        result = run_cli(str(root), prefix=NO_DAC)
    finally:
        root.chmod(0o755)
    assert result.returncode == 2
    assert "permission denied" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (root / "old").exists()
