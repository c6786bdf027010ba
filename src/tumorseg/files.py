"""Writing small text outputs whole: a temporary file beside the target, then a rename.

A reader (or a process killed mid-write) sees the old file or the new one, never half of one.
Large binary outputs (the store, checkpoints, NIfTI, figures) follow the same rule in their
own modules, since each library writes its own files. JSON is read back with ``load_json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def made_folder(folder: Path) -> Iterator[Path]:
    """``folder``, made with its missing parents if need be; on leaving, each folder this made is
    removed again if it is still empty (innermost first), so that a command that wrote nothing
    leaves no folder behind."""
    folder = Path(folder)
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        for path in made:
            with suppress(OSError):  # written into (or gone): kept
                path.rmdir()


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_json(path: Path) -> object:
    """The JSON value in ``path``; a malformed file is a ValueError (``parse_json``)."""
    return parse_json(Path(path).read_text(encoding="utf-8"))


def parse_json(text: str) -> object:
    """The JSON value of ``text``. Every malformed text is a ValueError, arrays nested too deep for
    Python's parser included (``[[[[...`` raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError as err:
        raise ValueError("nested too deeply") from err


def write_json(path: Path, value: object) -> None:
    write_text(path, json.dumps(rounded(value), indent=2) + "\n")


def rounded(value: object) -> object:
    """Floats to 10 significant digits, so that files hold 14.963 rather than 14.963000000000001."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    return value


def write_csv(path: Path, rows: list[dict], fieldnames: list[str]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
