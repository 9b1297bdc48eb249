#!/usr/bin/env python3
"""Set the release version everywhere it is written: efspurge.__version__ (the source of
truth: pyproject.toml reads it) and every image tag or build argument in the deployment
files and docs. tests/test_deploy.py fails when any of them disagrees.

    python3 scripts/set_version.py 1.2.0
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEMVER = r"\d+\.\d+\.\d+(?:[-.]?(?:a|b|rc)\d+)?"
# Where a version is written, and the pattern of each mention (group 1 is kept).
MENTIONS = re.compile(rf"((?:efspurge/efspurge|/efspurge|\befspurge):|VERSION=)({SEMVER})\b")
FILES = [
    "Dockerfile",
    "k8s-cronjob.yaml",
    "k8s-indexed-job.yaml",
    "docker-compose.yml",
    "deploy/ecs-task-definition.json",
    "README.md",
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md"))),
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "deploy").glob("*.yaml"))),
]


def main(version: str) -> int:
    if not re.fullmatch(SEMVER, version):
        print(f"not a version: {version!r}", file=sys.stderr)
        return 2
    init = ROOT / "src" / "efspurge" / "__init__.py"
    text = init.read_text()
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', text))
    for name in FILES:
        path = ROOT / name
        if path.exists():
            old = path.read_text()
            new = MENTIONS.sub(lambda m: m.group(1) + version, old)
            if new != old:
                path.write_text(new)
                print(f"updated {name}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
