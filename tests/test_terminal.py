"""Terminal mode, driven under a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

import pytest
from conftest import EFSPURGE, make_file, records, run_cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07|\r")


def spawn_in_pty(args: list[str]) -> tuple[subprocess.Popen, int]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)  # so that ^C on the terminal is SIGINT

    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    proc = subprocess.Popen(
        [EFSPURGE, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        preexec_fn=controlling_terminal,
        close_fds=True,
    )
    os.close(slave)
    return proc, master


def read_until(master: int, proc: subprocess.Popen, needle: str | None, timeout: float = 60) -> str:
    """Read the terminal until needle appears (or the program exits, for needle None)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
            if needle and needle in ANSI.sub("", out.decode("utf-8", "replace")):
                break
        elif proc.poll() is not None and needle is None:
            break
    return ANSI.sub("", out.decode("utf-8", "replace"))


def big_tree(root, dirs=30, files=1000):
    for d in range(dirs):
        for i in range(files):
            make_file(root / f"dir{d:02d}" / f"f{i}", old=i % 2 == 0, size=10)


def test_progress_display_and_summary_under_a_terminal(tmp_path):
    big_tree(tmp_path)
    proc, master = spawn_in_pty([str(tmp_path), "--dry-run", "--task-batch-size", "1"])
    try:
        live = read_until(master, proc, "files scanned")
        assert "efspurge (dry run)" in live  # the live display
        screen = live + read_until(master, proc, None)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0
    assert "Starting purge operation" in screen  # readable log lines, not JSON
    assert '{"timestamp"' not in screen
    assert "Dry run summary: nothing was deleted" in screen
    assert re.search(r"files to delete\s*│\s*15,000", screen)
    assert "Would be deleted, by top-level directory" in screen
    assert "Would be deleted, by age" in screen


def test_ctrl_c_leaves_a_clean_summary(tmp_path):
    big_tree(tmp_path)
    proc, master = spawn_in_pty([str(tmp_path), "--task-batch-size", "1"])
    try:
        read_until(master, proc, "files scanned")
        os.write(master, b"\x03")  # Ctrl-C, through the terminal's line discipline
        screen = read_until(master, proc, None)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 130
    assert "Purge summary (stopped early: SIGINT)" in screen
    assert re.search(r"files deleted\s*│\s*[\d,]+", screen)
    assert "Traceback" not in screen
    remaining = sum(len(os.listdir(tmp_path / d)) for d in os.listdir(tmp_path))
    assert 15_000 < remaining < 30_000  # stopped mid-way, young files all there


def test_json_stays_the_default_in_pipes(tmp_path):
    make_file(tmp_path / "old", old=True)
    result = run_cli(str(tmp_path))
    assert [r["message"] for r in records(result.stdout)][-1] == "Purge operation completed"
    assert result.stderr == ""


@pytest.mark.parametrize("forced", ["text", "json"])
def test_format_can_be_forced(tmp_path, forced):
    make_file(tmp_path / "old", old=True)
    result = run_cli(str(tmp_path), "--dry-run", "--log-format", forced)
    assert result.returncode == 0
    if forced == "json":
        records(result.stdout)  # every line parses
    else:
        assert "Dry run summary" in result.stdout and '{"timestamp"' not in result.stdout


def test_text_records_escape_names_that_would_drive_a_terminal(tmp_path):
    # Anyone who can create files on a shared filesystem chooses the names an operator's
    # terminal is sent (found by review): an escape sequence (clear the screen, set the
    # title), a newline that forges a record, undecodable bytes, rich markup. Shown escaped,
    # as the JSON records show them, and one line per record when not a terminal.
    names = [b"clear\x1b[2Jx", b"title\x1b]0;PWNED\x07x", b"new\nline.log", b"caf\xe9.log"]
    names += [b"[bold]d/f", b"\x1b[31mdir/f"]
    for name in names:
        path = os.path.join(os.fsencode(tmp_path), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb"):
            pass
        os.utime(path, (0, 0))
    result = run_cli(str(tmp_path), "--dry-run", "--log-level", "DEBUG", "--log-format", "text")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "path=" + str(tmp_path) + "/clear\\x1b[2Jx" in result.stdout
    assert "caf\\xe9.log" in result.stdout and "new\\x0aline.log" in result.stdout
    would = [line for line in result.stdout.splitlines() if "Would delete file" in line]
    assert len(would) == 6  # one line each: the newline in a name forged none
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d DEBUG ", would[0])
    assert "[bold]d" in result.stdout and "\\x1b[31mdir" in result.stdout  # the summary table


def test_json_records_with_a_live_display_on_stderr(tmp_path):
    """efspurge ... > run.jsonl in a terminal: the display goes to the terminal (stderr) and
    the records file stays pure JSON lines."""
    big_tree(tmp_path, dirs=5, files=200)
    out = tmp_path.parent / "run.jsonl"
    master, slave = os.openpty()
    with open(out, "w") as records_file:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
        proc = subprocess.Popen(
            [EFSPURGE, str(tmp_path), "--dry-run"], stdout=records_file, stderr=slave, env=env
        )
        os.close(slave)
        screen = read_until(master, proc, None)
        os.close(master)
        assert proc.wait(timeout=60) == 0
    assert "Dry run summary" in screen
    lines = records(out.read_text())
    assert lines[-1]["message"] == "Purge operation completed"


def test_the_live_display_shows_the_rate_next_to_its_limit(tmp_path):
    big_tree(tmp_path, dirs=2, files=200)
    args = [str(tmp_path), "--dry-run", "--max-ops-per-second", "400", "--memory-limit-mb", "0"]
    proc, master = spawn_in_pty(args)
    try:
        live = read_until(master, proc, "limit 400 ops/s")
        read_until(master, proc, None)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0
    assert re.search(r"[\d,]+ ops/s", live) and "waited" in live
