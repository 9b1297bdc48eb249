"""efspurge: delete files older than a given age from large directory trees."""

__version__ = "2.0.0"

__all__ = ["AsyncEFSPurger", "AsyncPurger", "__version__"]


def __getattr__(name: str):
    # Imported on first use: `import efspurge` stays light, and the command line installs its
    # early signal handlers before the engine (asyncio, psutil, ...) is loaded.
    if name in ("AsyncPurger", "AsyncEFSPurger"):  # the second: the reference package's name
        from efspurge.purger import AsyncPurger

        return AsyncPurger
    raise AttributeError(f"module 'efspurge' has no attribute {name!r}")
