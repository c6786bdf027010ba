"""The one exception type the command line turns into a clean message, and how messages quote input."""

import math
import reprlib


class _Quote(reprlib.Repr):
    """``reprlib``'s bounded repr, whose ints are bounded too: Python refuses to write an int of
    more than 4,300 digits (a ValueError), and writing one of fewer takes time in its length."""

    def repr_int(self, x: int, level: int) -> str:
        digits = math.floor(x.bit_length() * math.log10(2)) + 1
        return (
            super().repr_int(x, level)
            if digits <= self.maxlong
            else f"<an integer of about {digits:,} digits>"
        )


_QUOTE = _Quote()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlong = 2, 60, 60, 40
_QUOTE.maxtuple = _QUOTE.maxlist = _QUOTE.maxdict = _QUOTE.maxset = 4
LIMIT = 100


class TumorsegError(Exception):
    """A problem with the user's input or environment: printed as one line, no traceback.

    The message should name the file (or option) and say what is wrong with it.
    """


def short(value: object) -> str:
    """A bounded ``repr`` of a value from the user: built cut short, so that no input (a huge
    string, a deeply nested YAML alias) can flood a message or the memory that builds it."""
    text = _QUOTE.repr(value)
    return text if len(text) <= LIMIT else text[: LIMIT - 3] + "..."


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (bounded), or its type when it has none."""
    text = str(err)
    return text.splitlines()[0][:200] if text.strip() else type(err).__name__
