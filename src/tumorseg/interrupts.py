"""SIGTERM handled like Ctrl-C, so that every ``finally`` removes what a command had begun, and
an interrupt never lost in a finalizer.

Python raises a signal handler's exception wherever the main thread happens to be; inside a
finalizer (a weakref callback, a ``__del__``) it prints "Exception ignored" and drops it, and
the command would go on to finish with exit code 0. Such an interrupt is kept and raised again
from a short timer, once the finalizer has returned, or when the command ends, whichever comes
first.

Some writers turn an interrupt into their own error instead (``torch.save`` into a file object
reports a failed write), so checkpoints are written with interrupts ``deferred`` to the end.
Wherever else a library does so (h5py reports an interrupt inside its type conversion as a
``TypeError``), the error still carries the interrupt as its context, and the command ends as
interrupted all the same.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: How soon a dropped interrupt is raised again.
REDELIVERY_SECONDS = 0.01


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def handled() -> Iterator[None]:
    """SIGTERM raises ``Terminated``, and interrupts that land in finalizers are raised again."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    dropped: list[KeyboardInterrupt] = []

    def again(signum: int, frame: object) -> None:
        raise dropped[-1]

    def hook(unraisable: object) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            dropped.append(unraisable.exc_value)
            signal.setitimer(signal.ITIMER_REAL, REDELIVERY_SECONDS)
        else:
            previous_hook(unraisable)

    previous = signal.signal(signal.SIGTERM, _terminate), signal.signal(signal.SIGALRM, again)
    previous_hook, sys.unraisablehook = sys.unraisablehook, hook
    try:
        yield
        if dropped:  # the command finished before the timer fired
            raise dropped[-1]
    except Exception as err:
        interrupt = buried_interrupt(err)
        if interrupt is None:
            raise
        raise interrupt from err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGALRM, previous[1])


def buried_interrupt(error: BaseException) -> KeyboardInterrupt | None:
    """The interrupt that ``error`` was raised while handling, or was caused by, if any."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the block to end, then reach their handlers as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in held]
    try:
        yield
    finally:
        for signum, handler in zip(held, previous, strict=True):
            signal.signal(signum, handler)
    if caught:
        signal.raise_signal(caught[0])
