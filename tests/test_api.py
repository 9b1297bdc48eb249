"""The Python API: efspurge.AsyncPurger with the reference class's keywords and defaults."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_file, snapshot

import efspurge
from efspurge.settings import SettingsError


def tree(root):
    make_file(root / "old.log", old=True, size=5)
    make_file(root / "cache" / "old.bin", old=True, size=7)
    make_file(root / "new.log", old=False)


def test_dry_run_is_the_default_as_in_the_reference(tmp_path):
    tree(tmp_path)
    before = snapshot(tmp_path)
    purger = efspurge.AsyncPurger(str(tmp_path), max_age_days=30)
    stats = asyncio.run(purger.purge())
    assert snapshot(tmp_path) == before  # a script moved over from the reference deletes nothing
    assert stats is purger.stats and purger.exit_code == 0
    assert stats["dry_run"] is True and stats["files_to_purge"] == 2 and stats["files_purged"] == 0


def test_a_real_purge_with_the_reference_keywords_and_the_stats_names(tmp_path):
    tree(tmp_path)
    purger = efspurge.AsyncPurger(
        tmp_path,
        max_age_days=30,
        max_concurrency=50,
        dry_run=False,
        log_level="WARNING",
        memory_limit_mb=0,
        task_batch_size=100,
        remove_empty_dirs=True,
        max_empty_dirs_to_delete=10,
        max_delete=5,  # any CLI option is a keyword too
    )
    stats = asyncio.run(purger.purge())
    assert snapshot(tmp_path) == {"file:new.log"}
    for key in ("files_scanned", "files_purged", "bytes_freed", "errors", "empty_dirs_deleted"):
        assert key in stats
    assert stats["files_purged"] == 2 and stats["bytes_freed"] == 12
    assert stats["empty_dirs_deleted"] == 1 and stats["files_scanned"] == 3


def test_bad_values_and_unknown_keywords_are_refused_before_anything_is_touched(tmp_path):
    tree(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SettingsError, match="max_age_days"):
        efspurge.AsyncPurger(str(tmp_path), max_age_days=-1, dry_run=False)
    with pytest.raises(TypeError, match="max_age"):
        efspurge.AsyncPurger(str(tmp_path), max_age=3, dry_run=False)
    with pytest.raises(SettingsError, match="PATH"):
        asyncio.run(efspurge.AsyncPurger(str(tmp_path / "missing"), dry_run=False).purge())
    with pytest.raises(SettingsError, match="refusing"):
        asyncio.run(efspurge.AsyncPurger("/etc", max_age_days=0, dry_run=False).purge())
    assert snapshot(tmp_path) == before


def test_it_runs_inside_a_callers_event_loop(tmp_path):
    tree(tmp_path)

    async def caller():
        purger = efspurge.AsyncPurger(str(tmp_path), dry_run=False, processes=1)
        other = asyncio.create_task(asyncio.sleep(0))  # the caller's own work goes on
        stats = await purger.purge()
        await other
        # The caller's loop keeps a working default executor of its own.
        assert await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2]) == 3
        return stats

    assert asyncio.run(caller())["files_purged"] == 2
    assert snapshot(tmp_path) == {"file:new.log", "dir:cache"}
