"""Where members live: the member axis over every device of every process.

One mesh axis, "members", spans `jax.devices()` (all processes' devices in a multi-host run), and every
member-stacked array is sharded along it with `NamedSharding(mesh, P("members"))`: each device trains a slice of
the members and, since members never talk to each other, no step communicates. A member count that the device
count does not divide is padded by copies of member 0; pad members train like any other but never reach the
results, because results are written from `local_rows`: the real members held by this process's devices.

A multi-host run joins its processes with `join_processes` before anything touches a JAX backend.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fttrace.errors import UserError

MEMBER_AXIS = "members"


def join_processes(coordinator: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None, auto: bool = False) -> None:
    """Connect to the other processes of a multi-host run (`jax.distributed.initialize`).

    `coordinator` (host:port), `num_processes` and `process_id` name the run explicitly; `auto` lets JAX find them
    in the environment (TPU pods, SLURM, Open MPI, Kubernetes). With neither, this is a single-process run.
    """
    if coordinator is None and not auto:
        return
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"cannot join the multi-process run: {e}") from None
    orbax_barriers_wait()


def orbax_barriers_wait() -> None:
    """Orbax's checkpoint barriers (creating a phase's checkpoint directory, saving, pruning) go through the
    coordination service and wait as long as `sync` does.

    By default orbax meets at a collective whose first use gives the other processes 30 s to arrive, and processes
    reach a checkpoint unevenly: each trains its own members, at its own pace. Orbax's own switch to the
    coordination service's barrier is an absl flag (read only once flags count as parsed); its wait, a module
    constant. Where a release lacks either, its default stays."""
    from absl import flags
    from orbax.checkpoint._src.multihost import multihost
    if not hasattr(multihost, "EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER"):
        return
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True
    if hasattr(multihost, "_DEFAULT_BARRIER_TIMEOUT"):
        multihost._DEFAULT_BARRIER_TIMEOUT = SYNC_TIMEOUT_S


SYNC_TIMEOUT_S = 24 * 3600  # how long a process waits at a barrier for the others (a phase may run in between)


def sync(name: str) -> None:
    """Wait until every process reaches this point (`name` unique per barrier; a no-op with one process).

    The barrier is the coordination service's, not a collective: the first CPU collective gives the other processes
    only 30 s to arrive, and processes reach the start of a run unevenly (imports, compilation, a busy host)."""
    if jax.process_count() > 1:
        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=SYNC_TIMEOUT_S * 1000)


_QUESTIONS = itertools.count()


def everywhere(ok: bool, name: str) -> bool:
    """Whether `ok` holds in every process (`name` unique per question; `ok` itself with one process).

    Each process posts its answer to the coordination service's key-value store and reads the others' after a
    `sync`, so the processes agree without a collective (see `sync`)."""
    if jax.process_count() == 1:
        return ok
    client = ocp.multihost.get_jax_distributed_client()
    folder = f"fttrace/{name} #{next(_QUESTIONS)}/"  # every process asks its questions in the same order
    client.key_value_set(folder + str(jax.process_index()), "1" if ok else "0")
    sync(name)
    return all(value == "1" for _, value in client.key_value_dir_get(folder))


class Placement:
    """Pads, shards and fetches member-stacked pytrees (every leaf has a leading member axis)."""

    def __init__(self, devices=None):
        devices = jax.devices() if devices is None else devices
        self.mesh = Mesh(np.asarray(devices), (MEMBER_AXIS,))
        self.members = NamedSharding(self.mesh, PartitionSpec(MEMBER_AXIS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def device_count(self) -> int:
        return self.mesh.size

    def padded(self, n: int) -> int:
        return -(-n // self.device_count) * self.device_count

    def place(self, tree):
        """Pad each leaf's member axis to `padded` and shard it over the members (a no-op where already so)."""
        return jax.tree.map(self._place_leaf, tree)

    def _place_leaf(self, x):
        n = np.shape(x)[0]
        pad = self.padded(n) - n
        # Exactly `self.members`, not merely an equivalent sharding: jitted phases compile (and hit the compilation
        # cache) once per phase only if fresh, trained and restored states all arrive sharded alike.
        if isinstance(x, jax.Array) and not pad and x.sharding == self.members:
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:  # spans processes: pad on device
            return jax.jit(lambda a: _pad(a, pad, jnp), out_shardings=self.members)(x)
        if isinstance(x, jax.Array) and not pad and self.members.is_fully_addressable:  # one process: reshard
            return jax.device_put(x, self.members)                                         # without the host
        host = _pad(np.asarray(x), pad, np)
        return jax.make_array_from_callback(host.shape, self.members, lambda index: host[index])

    def replicate(self, tree):
        """Every leaf whole on every device (shared inputs such as the evaluation sets)."""
        def leaf(x):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])
        return jax.tree.map(leaf, tree)

    def local_rows(self, n: int) -> np.ndarray:
        """The real members (of `n`) whose rows live on this process's devices, in member order."""
        index_map = self.members.addressable_devices_indices_map((self.padded(n),))
        rows = np.unique(np.concatenate([np.arange(self.padded(n))[index[0]] for index in index_map.values()]))
        return rows[rows < n]

    def fetch(self, tree, rows: np.ndarray):
        """The given rows of each leaf as numpy, read from this process's shards only."""
        return jax.tree.map(lambda x: _fetch_rows(x, rows), tree)


def _pad(x, pad: int, xp):
    """`x` with `pad` copies of its first row appended (xp: numpy or jax.numpy)."""
    return xp.concatenate([x, xp.repeat(x[:1], pad, axis=0)]) if pad else x


def _fetch_rows(x, rows: np.ndarray) -> np.ndarray:
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)[rows]
    out = np.empty((len(rows),) + x.shape[1:], x.dtype)
    for shard in x.addressable_shards:
        held = np.arange(x.shape[0])[shard.index[0]]
        wanted = np.isin(held, rows)
        out[np.searchsorted(rows, held[wanted])] = np.asarray(shard.data)[wanted]
    return out
