"""efspurge: delete files older than a given age from large directory trees."""

__version__ = "2.0.0"
