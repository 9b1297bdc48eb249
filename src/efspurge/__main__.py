"""``python -m efspurge``."""

if __name__ == "__main__":
    from efspurge.cli import entry

    entry()
