"""Which entries the user selected, by glob patterns on their path relative to the root.

Pattern rules (the same for --include, --exclude and --exclude-dir):

* A pattern without ``/`` matches the entry's name, at any depth: ``*.log``.
* A pattern with ``/`` matches the whole path relative to the root: ``cache/*.tmp`` matches
  ``cache/a.tmp`` but not ``x/cache/a.tmp``. A leading ``/`` anchors a plain name at the
  root: ``/top.log`` is only the root's own ``top.log``.
* ``*`` matches within one path component, ``?`` one character, ``[abc]``/``[!abc]`` a set;
  ``**`` matches any number of whole components, including none: ``**/tmp/*``, ``logs/**``.
* Metacharacters are literal inside brackets: ``[*]`` matches a ``*`` in a name.
* Spellings are normalized (see ``normalize``): ``./keep`` is ``/keep``, a trailing ``/`` of an
  --exclude-dir pattern is dropped, an absolute path inside the root is made relative to it;
  a pattern that could never match (an absolute path elsewhere, ``..``) is refused.

A file is considered for deletion when it matches at least one --include (or there is none)
and no --exclude: exclude wins. A directory matching --exclude-dir is not even listed.
Pure: no I/O here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass


def translate(pattern: str, sets_match_slash: bool = False) -> str:
    """A glob pattern as an anchored regular expression (see the module rules).

    A set never matches '/' (as in a shell), except with ``sets_match_slash``: exclusions are
    read that way, as before this rule, because a narrower exclusion would purge files an
    existing ``--exclude 'srv/app[!_]*.keep'`` kept (found by review): where the two
    readings differ, the one that keeps more wins."""
    pat = pattern.lstrip("/")
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        ch = pat[i]
        if pat.startswith("**", i):
            at_start = i == 0 or pat[i - 1] == "/"
            after = i + 2
            if at_start and after < n and pat[after] == "/":
                out.append("(?:.*/)?")  # '**/' : any number of leading components
                i = after + 1
                continue
            out.append(".*")
            i = after
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = set_end(pat, i)
            if end == -1:
                raise ValueError(f"unclosed '[' in pattern {pattern!r}")
            body = pat[i + 1 : end]
            negate = body.startswith(("!", "^"))
            if negate:
                body = body[1:]
            # A set never matches '/', as in a shell's glob: '[!_]' is one character of a
            # name, and an --include must not reach into subdirectories through it.
            if sets_match_slash:
                out.append("[" + ("^" if negate else "") + _set_body(body) + "]")
            elif negate:
                out.append("[^" + _set_body(body) + "/]")
            else:
                out.append("(?!/)[" + _set_body(body) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "(?s:" + "".join(out) + r")\Z"


def set_end(pat: str, i: int) -> int:
    """Where the set opened by the '[' at ``pat[i]`` ends (the index of its ']'), or -1 if
    it is never closed. A ']' right after '[' or '[!' is a member, not the end ('[]]',
    '[!]]'); a '[' inside a set is a member too ('[[]' matches a literal '[')."""
    first = i + 2 if pat[i + 1 : i + 2] in ("!", "^") else i + 1
    return pat.find("]", first + 1 if pat[first : first + 1] == "]" else first)


def split_list(text: str) -> list[str]:
    """The patterns of one environment variable: split on the commas outside sets, where a
    set ends exactly as :func:`translate` ends it (so ``[[]*,*.keep`` is two patterns, and a
    literal comma is ``[,]``)."""
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "[":
            end = set_end(text, i)
            if end != -1:
                i = end + 1
                continue
        elif text[i] == ",":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _set_body(body: str) -> str:
    """The inside of a ``[...]`` set as a regular expression: ranges ``a-z`` kept, every
    other character literal. Escaping each one keeps the re module from reading a nested set
    (``[[]``, the documented way to match a literal ``[``) or a set operation (``&&``, ``~~``,
    ``||``, ``--``), which it warns about (FutureWarning) on stderr."""
    items = []
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            items.append(re.escape(body[j]) + "-" + re.escape(body[j + 2]))
            j += 3
        else:
            items.append(re.escape(body[j]))
            j += 1
    return "".join(items)


@dataclass(frozen=True)
class _PatternSet:
    by_name: re.Pattern[str] | None
    by_path: re.Pattern[str] | None

    @classmethod
    def build(cls, patterns: Iterable[str], keeps: bool = False) -> _PatternSet:
        """``keeps``: the patterns keep what they match (--exclude, --exclude-dir)."""
        names = [translate(p) for p in patterns if "/" not in p]
        paths = [translate(p, sets_match_slash=keeps) for p in patterns if "/" in p]
        return cls(
            re.compile("|".join(names)) if names else None,
            re.compile("|".join(paths)) if paths else None,
        )

    @property
    def empty(self) -> bool:
        return self.by_name is None and self.by_path is None

    @property
    def needs_path(self) -> bool:
        return self.by_path is not None

    def matches(self, name: str, relpath: str | None) -> bool:
        if self.by_name is not None and self.by_name.match(name):
            return True
        return (
            self.by_path is not None and relpath is not None and bool(self.by_path.match(relpath))
        )


class Selector:
    def __init__(
        self,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        exclude_dir: Iterable[str] = (),
    ) -> None:
        self._include = _PatternSet.build(include)
        self._exclude = _PatternSet.build(exclude, keeps=True)
        self._exclude_dir = _PatternSet.build(exclude_dir, keeps=True)
        self.filters_files = not (self._include.empty and self._exclude.empty)
        self.filters_dirs = not self._exclude_dir.empty
        self.needs_path = (
            self._include.needs_path or self._exclude.needs_path or self._exclude_dir.needs_path
        )

    def file_selected(self, name: str, relpath: str | None) -> bool:
        if not self._include.empty and not self._include.matches(name, relpath):
            return False
        return not self._exclude.matches(name, relpath)

    def dir_excluded(self, name: str, relpath: str | None) -> bool:
        return self._exclude_dir.matches(name, relpath)

    @property
    def excludes_files(self) -> bool:
        return not self._exclude.empty

    def exclude_names(self, name: str, relpath: str | None) -> bool:
        """Would an --exclude pattern match this entry, were it a file? (For a directory it
        does nothing: --exclude keeps files only.)"""
        return self._exclude.matches(name, relpath)


def _refuse_path_prefix(pattern: str, pat: str, root: str, given: str | None) -> None:
    """A relative pattern that starts with PATH itself or its last parts (``--exclude-dir
    data/keep`` with PATH ``data``; ``mnt/efs/keep`` or ``efs/keep`` with PATH ``/mnt/efs``)
    would only match PATH/data/keep: almost surely not what was meant, and what it was meant
    to keep would be purged (found by review). Refused, with how to write it. Pure: PATH as
    written and made absolute, no symlink resolved."""
    if pat.startswith(("/", "./")):
        return
    parts = root.strip("/").split("/")
    prefixes = {"/".join(parts[i:]) for i in range(len(parts))}
    if given is not None and not given.startswith("/"):
        prefixes.add(os.path.normpath(given))
    for prefix in prefixes - {"", "."}:
        if pat.startswith(prefix + "/"):
            rest = pat[len(prefix) + 1 :]
            raise ValueError(
                f"{pattern!r} starts with PATH ({prefix!r}), but patterns are relative to "
                f"PATH: write {rest!r} (or {'./' + pat!r} if PATH really holds {pat!r})"
            )


def normalize(
    pattern: str, roots: tuple[str, ...], for_dirs: bool, given: str | None = None
) -> str:
    """The spellings people write, as the rules above read them; ValueError (with how to
    write it) for a pattern that could never match.

    ``roots`` are the absolute spellings of PATH's directory (as written, and with symlinks
    resolved when that differs: see :func:`efspurge.resolve.root_spellings`), the first one
    for messages. ``./keep`` is ``/keep`` (PATH's own keep); ``keep/`` is ``keep`` for
    --exclude-dir; ``a//b`` is ``a/b``; an absolute path inside PATH is made relative to it
    (``/mnt/efs/keep`` with PATH ``/mnt/efs`` is ``/keep``).
    """
    pat = re.sub(r"/{2,}", "/", pattern)
    roots = tuple(r.rstrip("/") or "/" for r in roots)
    root = roots[0]
    _refuse_path_prefix(pattern, pat, root, given)
    anchored = outside = False
    if pat.startswith("./"):
        while pat.startswith("./"):
            pat = pat[2:].lstrip("/")
        anchored = True
    elif pat.startswith("/"):
        if pat.rstrip("/") in roots:
            raise ValueError(f"{pattern!r} is PATH itself, which is never purged or excluded")
        inside = next((r for r in roots if r != "/" and pat.startswith(r + "/")), None)
        if inside is not None:
            pat = pat[len(inside) + 1 :]
        else:
            pat = pat[1:]
            outside = True  # fine for a plain name (/top.log), not for a path
        anchored = True
    if pat.endswith("/") and pat.strip("/"):
        if not for_dirs:
            raise ValueError(
                f"{pattern!r} ends with '/' and never matches a file: use --exclude-dir "
                f"{pattern.rstrip('/')!r} to skip a directory, or {pattern + '**'!r} for the "
                "files below it"
            )
        pat = pat.rstrip("/")
    head, _, last = pat.rpartition("/")
    if for_dirs and head and last and not last.strip("*?") and head.strip("*?/"):
        # 'keep/**', 'keep/*', 'keep/?*': "what is in keep". As --exclude-dir it matches the
        # directories below keep, not the files in keep itself, which would be purged:
        # almost surely not what was meant (found by review).
        written = pattern.rstrip("/")
        while not written.rpartition("/")[2].strip("*?"):  # 'keep/**/*' -> 'keep'
            written = written.rpartition("/")[0]
        raise ValueError(
            f"{pattern!r} skips only the directories below {written.lstrip('/')!r}, not the "
            f"files in it: write {written!r} to keep the whole directory"
        )
    parts = pat.split("/")
    if not pat or ".." in parts or "." in parts:
        raise ValueError(f"{pattern!r} never matches: patterns are relative to PATH")
    if outside and len(parts) > 1:
        raise ValueError(
            f"{pattern!r} is an absolute path outside PATH {root!r}: patterns are relative "
            f"to PATH ({parts[-1]!r} is a name at any depth, 'sub/{parts[-1]}' the path "
            f"PATH/sub/{parts[-1]})"
        )
    # A pattern with a '/' is matched from PATH anyway; a plain name needs the leading '/'.
    return "/" + pat if anchored and len(parts) == 1 else pat


def validate(patterns: tuple[str, ...]) -> str | None:
    """Settings check: every pattern must compile."""
    for pattern in patterns:
        try:
            re.compile(translate(pattern))
            _refuse_slash_in_set(pattern)
        except (ValueError, re.error) as exc:
            return f"bad pattern {pattern!r}: {exc}"
    return None


def _refuse_slash_in_set(pattern: str) -> None:
    """A set that names '/' ('logs[/]keep.txt') matches nothing in an --include and '/'
    in an --exclude: refused rather than read two ways."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "[" and (end := set_end(pattern, i)) != -1:
            if "/" in pattern[i + 1 : end]:
                raise ValueError("a set never holds '/': write the '/' outside the brackets")
            i = end
        i += 1
