"""Exclusive locks for writers (a store, a run directory) that leave no lock file behind.

The lock is an ``flock`` on a file beside what is written. It is removed on release while still
held; a waiter that opened the removed file notices (its inode is no longer the path's) and
takes the new one, so removal never lets two writers in.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tumorseg.errors import TumorsegError


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
