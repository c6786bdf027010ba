"""Exclusive locks for writers that leave no lock file behind.

The lock of a path (a file or a folder, existing or not) is an ``flock`` on a hidden file beside
it, ``.NAME.lock``. It is removed on release while still held; a waiter that opened the removed
file notices (its inode is no longer the path's) and takes the new one, so removal never lets two
writers in. The command line takes the locks of every command's outputs from one table
(``cli/files.py``) before the command runs.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tumorseg.errors import TumorsegError
from tumorseg.files import made_folder


@contextmanager
def exclusive_lock(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold ``lock_path`` exclusively, or raise ``busy`` at once when another process holds it."""
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as err:
            raise TumorsegError(f"{lock_path.parent}: cannot write here ({err.strerror})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise TumorsegError(busy) from err
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed this file as we opened it: take the new one
    try:
        yield
    finally:
        try:
            os.unlink(lock_path)
        finally:
            os.close(fd)


def lock_beside(path: Path) -> Path:
    """The lock file of ``path``: beside what it names once links are followed, so that two names
    of one output share one lock."""
    real = Path(os.path.realpath(path))
    return real.parent / f".{real.name}.lock"


@contextmanager
def outputs_locked(paths: Iterable[Path]) -> Iterator[None]:
    """Hold the lock of every path, or raise naming the first that another process is writing.

    Missing parent folders are made for the lock files and removed again if they are left empty,
    so that a command refused (or failing) leaves no folder behind.
    """
    with ExitStack() as stack:
        for path in dict.fromkeys(map(Path, paths)):  # once each, in the table's order
            lock = lock_beside(path)
            try:
                stack.enter_context(made_folder(lock.parent))
            except OSError as err:
                raise TumorsegError(f"{lock.parent}: cannot make this folder ({err.strerror})") from err
            busy = f"{path}: another tumorseg command is writing it; wait for it, or write elsewhere"
            stack.enter_context(exclusive_lock(lock, busy))
        yield
