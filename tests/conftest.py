"""Shared helpers: build real trees with explicit ages, snapshot them, run the purger."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from efspurge.jsonlog import setup_logging
from efspurge.purger import AsyncPurger
from efspurge.roots import prepare_root
from efspurge.run import Outcome
from efspurge.settings import Settings

# Build test trees in memory when we can: the suite creates hundreds of thousands of files, and
# on a virtual disk that alone can take minutes. The engine treats tmpfs like any local
# filesystem; the multi-threaded mode below covers the network-filesystem code path.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    tempfile.tempdir = "/dev/shm"

DAY = 86_400
NOW = time.time()
OLD = NOW - 100 * DAY  # well past the default 30-day cutoff
NEW = NOW - 1 * DAY  # well inside it

EFSPURGE = shutil.which("efspurge", path=os.path.dirname(sys.executable)) or "efspurge"


def make_file(path: Path, old: bool, size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = OLD if old else NEW
    os.utime(path, (stamp, stamp))
    return path


def age_dirs(root: Path, stamp: float = OLD) -> None:
    """Make every directory below root (not root) old, as it is on a real purge target.

    Directories created by a test are brand new; tests of the young-directory rail
    (--keep-empty-dirs-newer-than) age them first, as time would. Walks by descriptor, so
    trees deeper than PATH_MAX work."""
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    while stack:
        fd = stack.pop()
        with os.scandir(fd) as entries:
            subdirs = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        for name in subdirs:
            os.utime(name, (stamp, stamp), dir_fd=fd, follow_symlinks=False)
            stack.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
        os.close(fd)


@contextlib.contextmanager
def tmpfs_mount(mount_point: Path, options: str):
    """A private tmpfs with these mount options, for tests that need a filesystem's own
    behaviour (a full disk, strict atime). The suite runs as root: a refused mount fails."""
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def remove_tree(root: Path) -> None:
    """rm -rf that works at any depth (shutil.rmtree in Python 3.11 recurses)."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


@pytest.fixture
def deep_tmp(tmp_path):
    """A tmp_path that is removed even when a test fails half-way down a deep tree."""
    yield tmp_path
    remove_tree(tmp_path)
    tmp_path.mkdir()


def snapshot(root: Path) -> set[str]:
    """Every entry below root (not following symlinks), as 'kind:relative/path'."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(full):
                kind = "link"
            elif os.path.isdir(full):
                kind = "dir"
            else:
                kind = "file"
            found.add(f"{kind}:{rel}")
    return found


@dataclass
class Run:
    outcome: Outcome
    log: list[dict]

    @property
    def stats(self) -> dict:
        return self.outcome.record

    @property
    def code(self) -> int:
        return self.outcome.exit_code


def purge(root: Path, **overrides) -> Run:
    """Run the engine in-process on a real tree; return the final record and the log lines."""
    overrides.setdefault("progress_interval", 0)
    settings = Settings(path=str(root), **overrides)
    info = prepare_root(settings.path, settings.reads_atime)
    stream = io.StringIO()
    logger = setup_logging(settings.log_level, stream=stream)
    try:
        outcome = asyncio.run(AsyncPurger.from_settings(settings, info, logger).run())
    finally:
        os.close(info.fd)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return Run(outcome, lines)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, prefix: tuple = ()
) -> subprocess.CompletedProcess:
    """Run the installed efspurge executable as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    full_env.update(env or {})
    return subprocess.run(
        [*prefix, EFSPURGE, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def act_mid_run(args: list[str], act, preexec_fn=None) -> tuple[int, str]:
    """Run efspurge slowly (batches of one entry, progress every 50 ms) and call act(proc)
    when the first progress record appears: the run is then under way, so whatever act does
    lands mid-run without any sleep. Returns the exit code and everything printed on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    proc = subprocess.Popen(
        [EFSPURGE, *args, "--task-batch-size", "1", "--progress-interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if json.loads(line)["message"] == "Progress":
            act(proc)
            break
    rest, _ = proc.communicate(timeout=60)
    return proc.returncode, "".join(lines) + rest


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def final(stdout: str) -> dict:
    done = [r for r in records(stdout) if r["message"] == "Purge operation completed"]
    assert len(done) == 1, stdout
    return done[0]["extra_fields"]


# Thread settings every engine test runs with: one thread (the local-disk path) and several
# threads with small batches (the network path: chunks shared between threads).
ENGINE_MODES = [
    pytest.param({"io_threads": 1}, id="1-thread"),
    pytest.param({"io_threads": 8, "task_batch_size": 7}, id="8-threads-batch-7"),
]


@pytest.fixture(params=ENGINE_MODES)
def mode(request) -> dict:
    return dict(request.param)
