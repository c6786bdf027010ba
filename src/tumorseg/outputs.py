"""The one rule for what a command may write, applied by every command before it writes anything.

- An output that is one of the command's inputs (the same file, by any path or link) is refused,
  even with ``--overwrite``: nothing a command reads is ever replaced by what it writes.
- An output that exists (each companion file included) is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tumorseg.errors import TumorsegError


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same real path, or (existing) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def claim_outputs(outputs: Iterable[Path], inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse outputs that are inputs, and existing outputs unless ``overwrite``."""
    inputs = [Path(p) for p in inputs]
    for out in map(Path, outputs):
        for source in inputs:
            if same_file(out, source):
                raise TumorsegError(f"{out}: is one of this command's inputs; choose another output")
        if out.exists() and not overwrite:
            raise TumorsegError(f"{out}: exists; pass --overwrite to replace it")
