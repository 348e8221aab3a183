"""The sandbox stores' files (sandbox/files.py): whole writes, and logs read back after a crash."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from sandbox.files import load_state, read_jsonl, save_state, write_atomically


class _State(BaseModel):
    n: int = 0


def test_write_atomically_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomically(path, b"new", 0o640)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_read_jsonl_cuts_a_partial_last_line_off_the_file_and_numbers_the_rest(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\n{"c": ')  # a crash mid-append
    assert list(read_jsonl(path)) == [(1, b'{"a": 1}'), (3, b'{"b": 2}')]
    # Cut from the file too, so the next append starts on a line of its own.
    assert path.read_bytes() == b'{"a": 1}\n\n{"b": 2}\n'


def test_read_jsonl_of_a_missing_file_is_empty(tmp_path: Path):
    assert list(read_jsonl(tmp_path / "none.jsonl")) == []


def test_load_state_reads_back_what_save_state_wrote(tmp_path: Path):
    path = tmp_path / "state.json"
    save_state(path, _State(n=7))
    assert load_state(path, _State) == _State(n=7)
    assert load_state(tmp_path / "missing.json", _State) == _State()


def test_load_state_keeps_an_unreadable_file_aside_and_starts_fresh(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert load_state(path, _State) == _State()
    assert not path.exists()
    (kept,) = tmp_path.glob("state.unreadable-*.json")
    assert kept.read_text() == "{not json"
