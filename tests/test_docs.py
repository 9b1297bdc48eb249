"""Every shell command in the documentation runs, so that none can rot.

Each fenced ```bash block of the documents below is run with bash -e (after `bash -n`) in a
scratch directory, with `efspurge` on PATH and tiny trees standing in for the paths the
examples use: `/mnt/efs` and `/data` become a scratch tree with a few old and new files, and a
`/tmp` argument becomes a scratch directory. A block whose fence is preceded by the line

    <!-- docs-test: syntax-only (why) -->

needs something a development machine does not have (a cluster, AWS, Docker, or it is the test
suite itself) and is only checked with `bash -n`. See CONTRIBUTING.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# PERFORMANCE.md is the benchmark's page: add it here once its commands run with tiny sizes.
DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!-- docs-test: syntax-only \((.+)\) -->\s*$")
FENCE = re.compile(r"^(\s*)```bash\s*$")


def bash_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, syntax-only reason or None) for each ```bash block."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            indent = len(fence.group(1))
            marker = MARKER.match(lines[i - 1]) if i > 0 else None
            start = i + 1
            i += 1
            while not lines[i].strip().startswith("```"):
                i += 1
            code = "\n".join(line[indent:] for line in lines[start:i]) + "\n"
            blocks.append((start, code, marker.group(1) if marker else None))
        i += 1
    return blocks


ALL_BLOCKS = [
    (doc, line, code, reason)
    for doc in DOCUMENTS
    for line, code, reason in bash_blocks((ROOT / doc).read_text())
]


def scratch_tree(base: Path) -> None:
    for top in ("tmp", "logs", "cache"):
        make_file(base / top / "old.log", old=True, size=10)
        make_file(base / top / "keep.log", old=False, size=10)
        make_file(base / top / "sub" / "old.tmp", old=True, size=3)


def localize(code: str, scratch: Path) -> str:
    """Point the documented paths at the scratch tree."""
    code = re.sub(r"(?<![\w/.])/mnt/efs\b", str(scratch / "efs"), code)
    code = re.sub(r"(?<![\w/.])/data\b", str(scratch / "data"), code)
    code = re.sub(r"(?<![\w/.$])/tmp(?=\s|$)", str(scratch / "tmp"), code)
    return code


def test_the_documents_have_commands_and_the_markers_have_reasons():
    assert len(ALL_BLOCKS) >= 5
    for doc in DOCUMENTS:
        for line in (ROOT / doc).read_text().splitlines():
            if "docs-test" in line:
                assert MARKER.match(line), f"{doc}: malformed marker {line!r}"


def test_the_setup_commands_come_first():
    """The README's two set-up commands open the page: install + dry run, then the suite."""
    blocks = bash_blocks((ROOT / "README.md").read_text())
    assert "pip install ." in blocks[0][1] and "--dry-run" in blocks[0][1]
    assert blocks[0][2] is None  # run for real (below)
    assert blocks[1][1].strip().splitlines()[-1] == "bash scripts/test.sh"


@pytest.mark.parametrize(("doc", "line", "code", "reason"), ALL_BLOCKS,
                         ids=[f"{d}:{n}" for d, n, _, _ in ALL_BLOCKS])  # fmt: skip
def test_documented_commands_parse(doc, line, code, reason):
    syntax = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{doc}:{line}: {syntax.stderr}"


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_documented_commands_run(doc, tmp_path):
    """The blocks of one document run in order in one shell, as a reader would type them
    (a later block may use a variable an earlier one set)."""
    blocks = [(line, code) for d, line, code, reason in ALL_BLOCKS if d == doc and reason is None]
    if not blocks:
        return
    script = "".join(f"echo '>>> {doc}:{line}' >&2\n{code}" for line, code in blocks)
    scratch = tmp_path / "scratch"
    for name in ("efs", "data"):
        scratch_tree(scratch / name)
    (scratch / "tmp").mkdir()
    work = tmp_path / "work"
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(scratch / "tmp"),
        "LC_ALL": "C.UTF-8",
    }
    if "pip install ." in script:
        # The README's install command, in a copy of the project and offline: pip takes the
        # dependencies and the build backend from the wheelhouse scripts/test.sh prepared.
        wheelhouse = ROOT / ".wheelhouse"
        if not wheelhouse.is_dir():
            pytest.fail(".wheelhouse is missing: scripts/test.sh prepares it")
        shutil.copytree(
            ROOT,
            work,
            ignore=shutil.ignore_patterns(
                ".venv*", ".git", ".tools", ".wheelhouse", "*.png", "__pycache__", "build"
            ),
        )
        env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    else:
        work.mkdir()
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", localize(script, scratch)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    where = [line for line in result.stderr.splitlines() if line.startswith(">>> ")]
    assert result.returncode == 0, (
        f"failed in {where[-1] if where else doc}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    assert len(where) == len(blocks)  # every block ran
    assert os.path.isdir(scratch)
