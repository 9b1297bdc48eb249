"""``python -m efspurge``."""

from efspurge.cli import main

raise SystemExit(main())
