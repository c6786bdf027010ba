"""The one exception type the command line turns into a clean message, and how messages quote input."""

import reprlib

_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 2, 60, 60
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
