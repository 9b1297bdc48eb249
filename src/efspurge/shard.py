"""Deterministic partition of the files of one tree among N independent workers (shards).

Kubernetes Indexed Jobs and AWS Batch array jobs start N copies of efspurge with an index
each; no coordinator, no shared state. Every shard walks the whole tree (listing costs one
round trip per few hundred entries) and stats and deletes only the regular files it owns:

    owner(file) = mix(crc32(relative path bytes)) * N >> 32

* Stable across processes, machines and Python versions: CRC-32 of the path's bytes (names
  exactly as on disk), not ``hash()``, which is salted per process.
* Per file, not per directory: one huge directory is spread over all N shards, which delete in
  it N times faster when they run on N clients (separate mounts, separate directory locks).
* ``mix`` (a multiplicative hash) spreads the CRC's low bits, so sequential names
  (``file-000001``, ``file-000002`` ...) land evenly.

Directories are removed by whichever shard finds one empty: ``rmdir`` is atomic and only
removes an empty directory, so exactly one shard succeeds, and only when nothing is left.
Pure: no I/O here.
"""

from __future__ import annotations

import os
import zlib

_GOLDEN = 0x9E3779B1  # 2**32 / golden ratio, odd: a bijection on 32-bit values


def child_key(parent_key: int, name: str) -> int:
    """The running CRC of a path, extended by one component: crc32('/a/b/c')."""
    return zlib.crc32(b"/" + os.fsencode(name), parent_key)


def shard_of(key: int, count: int) -> int:
    return (((key * _GOLDEN) & 0xFFFFFFFF) * count) >> 32


class Shard:
    __slots__ = ("count", "index")

    def __init__(self, index: int = 0, count: int = 1) -> None:
        if not 0 <= index < count:
            raise ValueError(f"shard index {index} is not in 0..{count - 1}")
        self.index = index
        self.count = count

    def owner(self, dir_key: int, name: str) -> int:
        return shard_of(child_key(dir_key, name), self.count)

    def owns_file(self, dir_key: int, name: str) -> bool:
        return self.owner(dir_key, name) == self.index

    def owns_dir(self, key: int) -> bool:
        return shard_of(key, self.count) == self.index
