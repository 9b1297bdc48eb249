"""Post-order completion, and the descriptor housekeeping every kind of unit needs.

Completion: a directory is finished when its last hold (its listing, a batch of its files, a
child) is released (:func:`efspurge.tree.release`). A finished directory is offered to the
remover if it is empty and allowed, or dropped (its descriptors closed) and its parent told,
which may finish the parent in turn: children strictly before parents, iteratively, so a chain
of any depth finishes without recursion.

Descriptors: to stay within the budget, idle descriptors are closed (least recently used
first), and a directory whose descriptor was closed is reopened down from its nearest open
ancestor, every step checked against the identity recorded when it was first opened. A
directory that cannot be reopened (moved or replaced meanwhile) is abandoned: kept, with its
ancestors.

Listing steps, file batches and removals all release holds and need descriptors, so they all
come here; the state they change is the shared :class:`efspurge.walkstate.WalkState`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from efspurge import fsops, tree
from efspurge.emptydirs import Decision
from efspurge.tree import DirNode
from efspurge.walkstate import WalkState


class Completion:
    """Finishes directories post-order, and closes and reopens their descriptors."""

    def __init__(self, state: WalkState) -> None:
        self.state = state
        self.reopening: set[DirNode] = set()  # directories whose reopen is under way

    # --- descriptors ------------------------------------------------------------------------

    def make_room(self, needed: int) -> bool:
        """Close idle descriptors until ``needed`` more fit the budget."""
        while not self.state.fds.room(needed):
            victim = self.state.fds.evictable()
            if victim is None:
                return False
            fsops.close(self.state.fds.closed(victim))
        return True

    def reopen_unit(self, node: DirNode) -> Callable[[], Any] | None:
        """Reopen a directory whose descriptor was closed, down from its nearest open
        ancestor, every step checked against the identity recorded when it was first opened."""
        if node in self.reopening:
            return None  # already under way
        chain = node.chain()
        anchor_index = next(i for i, n in enumerate(chain) if n.fd is not None)
        anchor = chain[anchor_index]
        path = [(n.name, n.st) for n in reversed(chain[:anchor_index])]
        self.state.fds.pin(anchor)  # first: making room must not close the anchor itself
        if not self.make_room(1):
            self.state.fds.unpin(anchor)
            return None
        self.state.fds.open += 1
        self.reopening.add(node)

        async def unit() -> None:
            if not await self.state.throttle(2 * len(path)):
                self.reopening.discard(node)
                self.state.fds.unpin(anchor)
                self.state.fds.open -= 1
                return
            self.state.charge(2 * len(path), 2 * len(path))
            try:
                fd = await fsops.areopen(anchor.fd, path, self.state.plan.list_rules.noatime)
            except (OSError, fsops.DirectoryChanged) as exc:
                fd = None
                self.state.counts.dirs_skipped_changed += 1
                self.state.events.changed(node, exc)
            finally:
                self.reopening.discard(node)
                self.state.fds.unpin(anchor)
                self.state.fds.open -= 1
            if fd is None:
                self._abandon(node)
            elif node.fd is None:
                self.state.fds.opened(node, fd, None)
            else:
                fsops.close(fd)

        return unit

    def _abandon(self, node: DirNode) -> None:
        """A directory that cannot be reopened (moved or replaced): nothing more is done in
        it; it is kept, and so are its ancestors."""
        node.kept = True
        for item in [item for item in self.state.files if item[0] is node]:
            self.state.files.remove(item)
            self.state.queued_entries -= len(item[1])
            self.release(node)
        for child in [n for n in self.state.stack if n.parent is node and n.fd is None]:
            self.state.stack.remove(child)
            self.state.queued_entries -= 1
            child.pending = 0
            self.finished(child, kept=True)
        for child in self.state.remover.waiting_on(node):
            self.removal_done(child, keeps_parent=True)

    # --- post-order completion --------------------------------------------------------------

    def release(self, node: DirNode, kept: bool = False) -> None:
        if tree.release(node, kept):
            self.finished(node, node.kept)

    def finished(self, node: DirNode, kept: bool) -> None:
        """Everything below ``node`` is decided: remove it if it is empty and allowed, and tell
        its parent. Iterative: a chain 100,000 levels deep finishes without recursion."""
        while node.parent is not None:
            decision = self.state.remover.decide(node, kept or node.kept, self.state.stopping)
            if decision is Decision.REMOVE:
                self.state.remover.offer(node)
                return
            parent = self.drop(node)
            if not tree.release(parent, kept=decision is Decision.KEEP):
                return
            node, kept = parent, parent.kept

    def removal_done(self, node: DirNode, keeps_parent: bool) -> None:
        parent = self.drop(node)
        if tree.release(parent, keeps_parent):
            self.finished(parent, parent.kept)

    def drop(self, node: DirNode) -> DirNode:
        """A finished directory leaves the walk: close its descriptor."""
        if node.listing is not None:
            fsops.close_listing(node.listing)
            self.state.fds.listing_closed(node)
        fd = self.state.fds.closed(node)
        if fd is not None:
            fsops.close(fd)
        assert node.parent is not None
        return node.parent

    def close_everything(self) -> None:
        """After the walk (finished or stopped): close what unfinished directories hold."""
        for node in self.state.stack:
            if node.listing is not None:
                fsops.close_listing(node.listing)
                self.state.fds.listing_closed(node)
        while (node := self.state.fds.evictable()) is not None:
            fsops.close(self.state.fds.closed(node))
