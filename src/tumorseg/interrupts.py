"""Ctrl-C and SIGTERM end a command as interrupted (exit 130 or 143), with every ``finally``
run to remove what it had begun, wherever the interrupt lands.

Python raises a signal handler's exception wherever the main thread happens to be, and there it
can be lost:

- inside a finalizer (a weakref callback, a ``__del__``) it is printed as "Exception ignored"
  and dropped; it is raised again from a short timer, once the finalizer has returned;
- some code catches it as any other error, or clears it in C; long loops call ``check`` at each
  step, where no interrupt can be on its way out, and raise it again there;
- either way, a command that returns after an interrupt ends as interrupted, never with 0.

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


#: The interrupts raised while a command runs under ``handled``; emptied when it ends.
_raised: list[KeyboardInterrupt] = []


def _interrupt(signum: int, frame: object) -> None:
    error = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    _raised.append(error)
    raise error


def check() -> None:
    """Raise again an interrupt that was raised but never arrived: call it where none can be on
    its way out (the top of a loop's step), so that a swallowed Ctrl-C still stops the work."""
    if _raised:
        raise _raised[-1]


@contextmanager
def handled() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM ``Terminated``, and neither is ever lost."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def again(signum: int, frame: object) -> None:
        raise _raised[-1]

    def hook(unraisable: object) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _raised.append(unraisable.exc_value)
            signal.setitimer(signal.ITIMER_REAL, REDELIVERY_SECONDS)
        else:
            previous_hook(unraisable)

    held = [signal.SIGTERM, signal.SIGALRM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with it ignored
        held.append(signal.SIGINT)
    previous = [signal.signal(signum, again if signum == signal.SIGALRM else _interrupt) for signum in held]
    previous_hook, sys.unraisablehook = sys.unraisablehook, hook
    try:
        yield
        check()  # the command finished after an interrupt that never arrived
    except Exception as err:
        interrupt = buried_interrupt(err)
        if interrupt is None:
            raise
        raise interrupt from err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        for signum, handler in zip(held, previous, strict=True):
            signal.signal(signum, handler)
        _raised.clear()


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
