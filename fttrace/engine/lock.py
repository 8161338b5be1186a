"""One writer per workdir: `WorkdirLock`, held by `fttrace run` (process 0 of a multi-process run, which writes the
manifest and clears the workdir for --overwrite) and by `fttrace merge --out` for as long as they write, and the
record of who holds it, which `fttrace status` reads (readers never take the lock).

    WORKDIR/lock.json    {"host", "pid", "since", "command", "argv"} of the holder; empty or absent when nobody holds it

On a local or NFS filesystem the lock is the operating system's: `flock` on lock.json, released by the kernel when
the holder exits, however it exits, so a record found under a lock that was granted is one its holder left behind
(killed by SIGKILL, its host gone) and is taken over, saying so. Where the filesystem gives no lock (gs://, an NFS
mount without locking) the record alone is the lock: written when absent, deleted on release; a record left on this
host by a process that is gone is taken over, any other is refused (README: what such a workdir needs).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import platform
import sys

from fttrace.errors import UserError, io_reason
from fttrace.engine.results import workdir_path, write_json

LOCK_FILE = "lock.json"


def holder_of(workdir) -> dict | None:
    """The recorded holder of a workdir's lock; None when nobody holds it (or its record is being written)."""
    try:
        return _parse((workdir_path(workdir) / LOCK_FILE).read_text())
    except OSError:
        return None


def _parse(text: str) -> dict | None:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("pid"), int) and found.get("host") else None


def gone(holder: dict) -> bool:
    """Whether the holder's process is known to have ended: it ran on this host and no process has its id now."""
    if holder.get("host") != platform.node() or not holder["pid"] > 0:
        return False
    try:
        os.kill(holder["pid"], 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


def describe(holder: dict) -> str:
    """`fttrace run`, process 4242 on host-a since 2026-01-02 03:04:05 UTC"""
    return f"`fttrace {holder.get('command', '?')}`, process {holder['pid']} on {holder['host']} since " \
           f"{holder.get('since', '?')}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class WorkdirLock:
    """`with WorkdirLock(workdir, "run"):` the caller is the workdir's only writer until the block ends, or a
    UserError names the holder and nothing is touched. The workdir must exist."""

    def __init__(self, workdir, command: str, say=None):
        self.workdir = workdir_path(workdir)
        self.path = self.workdir / LOCK_FILE
        self.command = command
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.fd, self.record = None, None

    def __enter__(self) -> WorkdirLock:
        self.record = dict(host=platform.node(), pid=os.getpid(), since=_now(), command=self.command,
                           argv=list(sys.argv))
        if "://" in str(self.workdir) or not self._lock_file():
            self._claim_record()
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the file releases the lock
            self.fd = None
        elif self.record is not None and holder_of(self.workdir) == self.record:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _busy(self, holder: dict | None, advice: str = "") -> UserError:
        who = describe(holder) if holder else "another fttrace process"
        return UserError(f"workdir {self.workdir} is being written by {who}; wait for it to end or stop it, then run "
                         f"this again{advice}")

    def _took_over(self, holder: dict) -> None:
        self.say(f"fttrace: taking over workdir {self.workdir} from {describe(holder)}, which is gone")

    def _lock_file(self) -> bool:
        """Take the OS lock on lock.json and write the record into it; False where the filesystem has no locks."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create {self.path}: {io_reason(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._busy(holder_of(self.workdir)) from None
            return False  # ENOLCK, EOPNOTSUPP...: a filesystem without locks
        try:
            left = _parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
            if left:
                self._took_over(left)
            data = json.dumps(self.record, sort_keys=True).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise UserError(f"cannot write {self.path}: {io_reason(e)}") from None
        self.fd = fd
        return True

    def _claim_record(self) -> None:
        held = holder_of(self.workdir)
        if held and not gone(held):
            raise self._busy(held, f" (if it is gone, delete {self.path})")
        if held:
            self._took_over(held)
        write_json(self.path, self.record)
