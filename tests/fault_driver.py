"""`fttrace` with one injected fault, for the resume tests:  python fault_driver.py FAULT ARGS...

FAULT is one of
  kill-writing-results:N  SIGKILL this process halfway through its Nth write of results.parquet (before the rename)
  disk-full-checkpoint:N  saving the Nth checkpoint fails the way tensorstore fails on a full disk
and ARGS are the arguments of `fttrace` (e.g. `run CONFIG --workdir DIR ...`).
"""
import os
import signal
import sys

import orbax.checkpoint as ocp
import pyarrow.parquet as pq

from fttrace import cli


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def target_name(where) -> str:
    return os.path.basename(getattr(where, "name", str(where)))


def install(fault: str) -> None:
    name, _, arg = fault.partition(":")
    if name == "kill-writing-results":
        write_table, writes = pq.write_table, []

        def write_then_die(table, where, *args, **kwargs):
            if target_name(where).startswith(".results.parquet."):
                writes.append(where)
                if len(writes) == int(arg):
                    where.write(b"PAR1 half a table")
                    where.flush()
                    die()
            return write_table(table, where, *args, **kwargs)
        pq.write_table = write_then_die
    elif name == "disk-full-checkpoint":
        save, saves = ocp.CheckpointManager.save, []

        def save_until_full(self, step, *args, **kwargs):
            saves.append(step)
            if len(saves) < int(arg):
                return save(self, step, *args, **kwargs)
            raise ValueError(f"RESOURCE_EXHAUSTED: Error writing \"state\" in OCDBT database at local file "
                             f"\"{self.directory}/{step}.orbax-checkpoint-tmp/\": Failed to write 4096 bytes: "
                             f"No space left on device [os_error_code='28']")
        ocp.CheckpointManager.save = save_until_full
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(cli.main(sys.argv[2:]))
