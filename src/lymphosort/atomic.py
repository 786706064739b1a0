"""Atomic file writes: a killed command leaves the old file or the new one, never half of one.

Every final artefact a later run reads (model cards, metrics, histories, exports, benchmark
results, plots) goes through `atomic_write`: the content is written to a temporary file in
the same folder (same file system, so the rename is atomic) and moved over the target
with `os.replace`. The temporary name keeps the target's suffix, because writers such as
`np.save`, `np.savez` and `savefig` look at it.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "write_json_atomic", "write_text_atomic"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary path next to `path`, then rename it to `path`.

    The parent folder is created. On any error (or interrupt) the temporary file is removed
    and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; the writer creates the file with
    # the usual umask permissions. pid + random part: concurrent writers never share it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """`Path.write_text`, atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding=encoding))


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """`data` as JSON (plus a final newline), atomically; `dumps` go to `json.dumps`."""
    return write_text_atomic(path, json.dumps(data, indent=indent, **dumps) + "\n")
