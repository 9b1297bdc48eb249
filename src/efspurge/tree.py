"""The walk's bookkeeping as plain data: no I/O, no threads, no asyncio.

Every directory of the walk is a :class:`DirNode` from the moment its parent's listing shows
it until it is finished. ``pending`` counts what still holds it open:

* its own listing (1 until the listing is exhausted),
* batches of its files queued or in flight,
* child directories not yet finished.

When ``pending`` reaches zero the directory is finished: everything below it has been decided.
Then (with ``--remove-empty-dirs``) it may be removed if nothing was kept in it, and its parent
is told, which may finish the parent in turn: children strictly before parents, and a chain
emptied by the purge disappears in one run. Only directories in flight are in memory: a node is
dropped when it is finished, so memory follows the walk's frontier, not the tree.

Descriptors. A node holds its descriptor while it is needed: for its listing, its files, opening
its children and removing them. :class:`Descriptors` counts what is open against a budget and
keeps the idle ones (open, but no listing and no operation in flight) in least-recently-used
order, so that :class:`efspurge.completion.Completion` can close one when the budget is
reached and reopen it, checked by identity, when it is needed again. A tree of any depth
therefore fits any ``ulimit -n``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator

# The longest relative path a node keeps (DirNode.rel): everyday paths; longer ones are made
# when needed, so that deep chains of long names do not hold a path per level.
REL_KEPT_MAX = 256


class DirNode:
    """One directory of the walk, alive from its listing until it is finished."""

    __slots__ = (
        "_rel",
        "fd",
        "found_empty",
        "ino",
        "kept",
        "key",
        "listing",
        "name",
        "parent",
        "pending",
        "pins",
        "relpaths",
        "seen",
        "st",
        "top",
    )

    def __init__(self, name: str, parent: DirNode | None, key: int = 0, rel: str | None = None):
        self.name = name
        self.parent = parent
        self.key = key  # running CRC of the relative path, for the shard partition
        self.relpaths = rel is not None  # the run needs paths relative to the root
        self._rel = rel  # this one's, when short enough to keep (see ``rel``)
        # The top-level directory this one is in, for the report ("." for the root itself).
        self.top = "." if parent is None else (name if parent.parent is None else parent.top)
        self.fd: int | None = None
        self.st: os.stat_result | None = None
        self.listing: Iterator[os.DirEntry[str]] | None = None
        self.pending = 1  # its own listing
        self.pins = 0  # operations in flight that use the descriptor
        self.kept = False  # something stays inside: it cannot be removed
        self.seen = 0  # entries its listing returned so far
        self.found_empty = False  # the listing was exhausted without a single entry
        self.ino: int | None = None  # the inode its parent's listing showed (d_ino)

    def __repr__(self) -> str:
        return f"DirNode({self.name!r}, pending={self.pending}, fd={self.fd})"

    @property
    def rel(self) -> str | None:
        """The path relative to the root, when the run needs it (None otherwise). Kept on the
        node up to REL_KEPT_MAX characters; a longer one is made from the nearest ancestor
        that keeps its own. Kept whole, a chain of N nested directories would hold N paths
        of up to N names each: 2 GB at 4,000 levels of 255-character names (found by
        review); made on demand, memory stays linear in the depth."""
        if self._rel is not None or not self.relpaths:
            return self._rel
        names = []
        node: DirNode | None = self
        while node is not None and node._rel is None:
            names.append(node.name)
            node = node.parent
        assert node is not None  # the root keeps its own: ""
        names.reverse()
        return "/".join([node._rel, *names]) if node._rel else "/".join(names)

    def chain(self) -> list[DirNode]:
        """This node and its ancestors up to the root, root last."""
        nodes: list[DirNode] = []
        node: DirNode | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes


def add_child(
    parent: DirNode, name: str, key: int, with_rel: bool, ino: int | None = None
) -> DirNode:
    """A directory found by ``parent``'s listing: it holds its parent until it is finished."""
    parent.pending += 1
    child = DirNode(name, parent, key)
    child.relpaths = with_rel
    if with_rel and parent._rel is not None:
        rel = f"{parent._rel}/{name}" if parent._rel else name
        child._rel = rel if len(rel) <= REL_KEPT_MAX else None
    child.ino = ino
    return child


def add_work(node: DirNode, count: int = 1) -> None:
    node.pending += count


def release(node: DirNode, kept: bool = False) -> bool:
    """One of ``node``'s holds is done. Returns True when that finished the node."""
    if kept:
        node.kept = True
    node.pending -= 1
    assert node.pending >= 0, node
    return node.pending == 0


class Counter:
    """A named limit that can say how full it is (a cap: --max-delete, the empty-dir limit).

    Slots are reserved before the operation and given back if it did not happen, so that
    concurrent operations never exceed the cap. ``limit`` 0 means no cap.
    """

    __slots__ = ("limit", "reserved", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0  # handed out to operations in flight
        self.used = 0  # consumed by operations that happened

    @property
    def capped(self) -> bool:
        return self.limit > 0

    def free(self) -> int | None:
        """Slots neither used nor reserved (None: no cap)."""
        if not self.limit:
            return None
        return self.limit - self.used - self.reserved

    def reserve(self, wanted: int) -> int | None:
        """Reserve up to ``wanted`` slots; returns how many (None: no cap, take all)."""
        free = self.free()
        if free is None:
            return None
        granted = max(0, min(wanted, free))
        self.reserved += granted
        return granted

    def settle(self, granted: int | None, used: int) -> None:
        """An operation holding ``granted`` slots is over and used ``used`` of them."""
        if granted is not None:
            self.reserved -= granted
        self.used += used

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.used >= self.limit

    @property
    def full(self) -> bool:
        """No slot left to reserve: all are used or reserved. Never true without a cap (there,
        ``free()`` is None, which must not read as 0)."""
        free = self.free()
        return free is not None and free <= 0


# Open listings at once, at most. An open listing holds the C library's read buffer (32 KB,
# up to 1 MB on NFS, sized from the directory's block size), so a chain of big directories,
# each listing left open while the walk goes down, must not hold one per level: at the cap,
# the walk finishes an open listing before it starts another (efspurge.listing).
MAX_OPEN_LISTINGS = 128


class Descriptors:
    """Open directory descriptors against a budget, with the idle ones in LRU order; and the
    open listings (each also a descriptor) against their own cap."""

    __slots__ = ("budget", "idle", "listing_cap", "listings", "open")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.open = 0  # descriptors held: one per node fd, one per open listing
        self.idle: OrderedDict[DirNode, None] = OrderedDict()
        self.listing_cap = MAX_OPEN_LISTINGS  # read here, at the start of a run
        self.listings = 0  # open listings, and new directories' steps that may leave one open

    @property
    def listings_full(self) -> bool:
        return self.listings >= self.listing_cap

    def room(self, needed: int) -> bool:
        return self.open + needed <= self.budget

    def opened(self, node: DirNode, fd: int, st: os.stat_result | None) -> None:
        node.fd = fd
        if st is not None:
            node.st = st
        self.open += 1
        self._update(node)

    def listing_opened(self, node: DirNode) -> None:
        self.open += 1
        self.listings += 1
        self.idle.pop(node, None)

    def listing_closed(self, node: DirNode) -> None:
        node.listing = None
        self.open -= 1
        self.listings -= 1
        self._update(node)

    def closed(self, node: DirNode) -> int | None:
        """Forget ``node``'s descriptor; returns it, for the caller to close."""
        fd, node.fd = node.fd, None
        if fd is not None:
            self.open -= 1
        self.idle.pop(node, None)
        return fd

    def pin(self, node: DirNode) -> None:
        assert node.fd is not None, node
        node.pins += 1
        self.idle.pop(node, None)

    def unpin(self, node: DirNode) -> None:
        node.pins -= 1
        self._update(node)

    def _update(self, node: DirNode) -> None:
        if node.fd is not None and node.pins == 0 and node.listing is None and node.parent:
            self.idle[node] = None
            self.idle.move_to_end(node)

    def evictable(self) -> DirNode | None:
        """The least recently used idle node (never the root, which stays open)."""
        return next(iter(self.idle), None)

    def statistics(self) -> dict[str, int]:
        return {
            "fds_open": self.open,
            "fds_budget": self.budget,
            "fds_idle": len(self.idle),
            "listings_open": self.listings,
        }
