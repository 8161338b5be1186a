"""The one exception type for bad user input (config, data, checkpoint, paths).

The CLI prints its message on one line, without a traceback, and exits non-zero. Anything else that escapes is
a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user; the message names the problem."""
