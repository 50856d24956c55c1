"""The one atomic writer: a failed write leaves what was there, and nothing beside it."""

import stat

import pytest

from recmig.atomic import write_atomic, write_directory_atomic, write_json_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"ndcg@10": 0.5})
    before = path.read_text()

    def crash(tmp):
        tmp.write_text('{"ndcg@10": 0.')  # half a file, then the process "dies"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, crash)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_files_are_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "results.md"
    write_atomic(path, lambda tmp: tmp.write_text("x"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_directory_replaces_a_stale_one_or_keeps_the_old_on_failure(tmp_path):
    entry = tmp_path / "cache" / "entry"
    write_directory_atomic(entry, lambda tmp: (tmp / "a.txt").write_text("1"), lambda: False)
    assert (entry / "a.txt").read_text() == "1"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o755

    def crash(tmp):
        (tmp / "a.txt").write_text("2")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_directory_atomic(entry, crash, lambda: False)
    assert (entry / "a.txt").read_text() == "1"
    assert [p.name for p in entry.parent.iterdir()] == ["entry"]

    write_directory_atomic(entry, lambda tmp: (tmp / "b.txt").write_text("3"), lambda: False)
    assert [p.name for p in entry.iterdir()] == ["b.txt"]
