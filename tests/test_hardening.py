"""Hardening (issue 10): bad input and odd states get a clear answer, and nothing is lost.

Every test runs the installed executable on a real tree and looks at the disk afterwards.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import EFSPURGE, final, make_file, remove_tree, run_cli, snapshot

from efspurge.rootcheck import refusal_reason


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


# --- 2. well-known system directories as roots ----------------------------------------------

SYSTEM_ROOTS = ["/etc", "/usr", "/bin", "/sbin", "/lib", "/var/lib", "/etc/ssl", "/usr/local"]


@pytest.mark.parametrize("path", [p for p in SYSTEM_ROOTS if os.path.isdir(p)])
def test_system_directory_is_refused_as_root(path):
    result = run_cli(path, "--dry-run")
    assert result.returncode == 2, result.stdout[-300:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to purge" in lines[0] and "system directory" in lines[0]
    assert result.stdout == ""


def test_symlink_to_a_system_directory_is_refused(tmp_path):
    os.symlink("/etc", tmp_path / "conf")
    result = run_cli(str(tmp_path / "conf"), "--dry-run")
    assert result.returncode == 2
    assert "'/etc'" in result.stderr and "system directory" in result.stderr


@pytest.mark.skipif(not os.access("/var/lib", os.W_OK), reason="needs a writable /var/lib")
def test_application_state_directory_is_refused_and_nothing_is_deleted():
    state = Path(tempfile.mkdtemp(prefix="efspurge-test-", dir="/var/lib"))
    try:
        make_file(state / "db/table.dat", old=True)
        make_file(state / "old.log", old=True)
        before = snapshot(state)
        result = run_cli(str(state), "--max-age-days", "0")
        assert result.returncode == 2
        assert "state directory" in result.stderr and len(result.stderr.splitlines()) == 1
        assert snapshot(state) == before
        # One level further down is an application's own directory: allowed.
        result = run_cli(str(state / "db"), "--dry-run")
        assert result.returncode == 0, result.stderr
        assert final(result.stdout)["files_to_purge"] == 1
    finally:
        remove_tree(state)


@pytest.mark.parametrize("path", ["/tmp", "/var/tmp", "/dev/shm"])
def test_temporary_directories_stay_legitimate_roots(path):
    if not os.path.isdir(path):
        pytest.skip(f"no {path} here")
    with tempfile.TemporaryDirectory(dir=path) as tmp:
        make_file(Path(tmp) / "old", old=True)
        result = run_cli(tmp, "--dry-run")
        assert result.returncode == 0, result.stderr
        assert final(result.stdout)["files_to_purge"] == 1
    assert refusal_reason(path) is None


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/", True),
        ("/etc", True),
        ("/etc/", True),
        ("//etc", True),
        ("/etc/ssl/certs", True),
        ("/etcetera", False),
        ("/usr/local/lib", True),
        ("/lib64", True),
        ("/boot/efi", True),
        ("/home", True),
        ("/home/alice/.cache", False),
        ("/root", True),
        ("/root/.cache", False),
        ("/var", True),
        ("/var/log", False),
        ("/var/log/app", False),
        ("/var/lib", True),
        ("/var/lib/mysql", True),
        ("/var/lib/jenkins/workspace", False),
        ("/var/spool/cron/crontabs", True),
        ("/opt", True),
        ("/opt/app/cache", False),
        ("/mnt", False),
        ("/mnt/efs", False),
        ("/srv/data", False),
        ("/dev", True),
        ("/dev/shm", False),
        ("/run", True),
        ("/tmp", False),
        ("/var/tmp", False),
    ],
)
def test_refusal_list(path, refused):
    assert (refusal_reason(path) is not None) is refused


# --- 12. any error about the root is one line, exit 2 ---------------------------------------


def test_unreadable_magic_link_root_is_one_line_exit_2():
    """/proc/1/root: readlink is refused without ptrace rights over pid 1 (a raw traceback and
    exit 1 before); where it can be read it is '/', refused as the filesystem root."""
    result = run_cli("/proc/1/root", "--dry-run")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
