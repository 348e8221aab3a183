"""How the sandbox stores keep their files: whole-file writes that a crash cannot tear, and
append-only JSON-lines logs read back after one."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def write_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file and a reader
    never sees one. ``mode``: the file's permissions (default mkstemp's 0600)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_state(path: Path, model: type[M]) -> M:
    """A store's state file (``save_state``), or a fresh state when there is none. An unreadable
    file is kept aside (``<name>.unreadable-<id>.json``) for a person to look at, not overwritten.
    """
    if not path.exists():
        return model()
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        broken = path.with_suffix(f".unreadable-{uuid.uuid4().hex[:8]}.json")
        logger.exception("cannot read %s; moved it to %s", path, broken)
        path.replace(broken)
        return model()


def save_state(path: Path, state: BaseModel) -> None:
    write_atomically(path, state.model_dump_json().encode())


def read_jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of each non-empty line of an append-only log, for the caller to parse
    (and skip, with ``skip_unreadable``, a line it cannot read).

    A crash mid-append leaves a partial last line: it is cut off the file first, or the next
    append would glue a good record onto it and lose that one too.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("dropping a partial record at the end of %s", path)
        with path.open("r+b") as handle:
            handle.truncate(keep)
        data = data[:keep]
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            yield number, line


def skip_unreadable(path: Path, number: int) -> None:
    logger.warning("skipping unreadable line %d of %s", number, path)
