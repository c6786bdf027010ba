"""The one exception type the command line turns into a clean message."""


class TumorsegError(Exception):
    """A problem with the user's input or environment: printed as one line, no traceback.

    The message should name the file (or option) and say what is wrong with it.
    """
