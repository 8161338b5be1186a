"""The one exception type for bad user input (config, data, checkpoint, paths).

The CLI prints its message on one line, without a traceback, and exits non-zero. Anything else that escapes is
a bug and keeps its traceback.
"""
import os
import re


class UserError(Exception):
    """Bad input from the user; the message names the problem."""


def out_of_memory(error: Exception) -> bool:
    """Whether `error` is a device or host running out of memory (XLA's RESOURCE_EXHAUSTED, which tensorstore also
    uses for a full disk: that one carries an `os_error_code`)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text and "os_error_code" not in text or "out of memory" in text.lower()


def os_reason(error: Exception) -> str | None:
    """The operating system's reason behind an I/O failure (`No space left on device`, ...), if it gave one.

    tensorstore (under orbax) reports OS errors as ValueError text carrying `os_error_code='28'`.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    code = re.search(r"os_error_code='?(\d+)", str(error))
    return os.strerror(int(code.group(1))) if code else None


def io_reason(error: Exception) -> str:
    """`os_reason`, or else the first line of the error."""
    text = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return os_reason(error) or text


# The packages whose exceptions mean an object store could not be reached (s3fs raises botocore's connection errors
# as they are; gcsfs raises aiohttp's, which are OSErrors already).
STORAGE_CLIENTS = ("botocore.", "aiobotocore.", "aiohttp.", "google.auth.", "google.api_core.")


def storage_error(error: BaseException) -> bool:
    """Whether `error` is a failed read or write of a file or object: an OSError, or an object store's client that
    could not reach the store (a lost connection)."""
    return isinstance(error, OSError) or type(error).__module__.startswith(STORAGE_CLIENTS)
