"""``python -m efspurge``."""

from efspurge.cli import entry

entry()
