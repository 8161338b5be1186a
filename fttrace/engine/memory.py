"""Member batches (the members trained together, vmapped) sized from device memory.

On an accelerator, training every member at once is fastest until the program overflows the device's memory. Where
a phase leaves `member_batch` at 0 and the device reports its memory (`bytes_limit` in `memory_stats()`; a CPU
reports none), the batch comes from the compiler's own plan: the training program compiled, not run, for a few
members, its `memory_analysis()` split into what every member holds for the whole chunk (its state and data: the
arguments and outputs) and what only the members computing together need (the temporaries), scaled to the member
count against the device's limit with a margin (`batch_for_memory`). The plan sees the dtype, the attention form
and every term of the step (the T^2 attention scores included), which a count of activations does not. Where the
device reports no memory, `train.train_member_batch`'s activation budget stays.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from fttrace.errors import UserError

# The share of the device's limit a training program may plan to use: the rest for the evaluation's temporaries,
# host-side measurements' buffers, fragmentation and the plan's own error.
MARGIN = 0.8
PROBE_MEMBERS = 4  # members the training program is compiled for when it is measured


def device_bytes_limit(device=None) -> int | None:
    """The memory the device lets JAX allocate (`memory_stats()["bytes_limit"]`), None where it reports none (a
    CPU)."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")


def host_bytes_limit() -> int | None:
    """The memory this process may use on the host: the machine's physical memory, or its cgroup's limit where
    that is lower (a container); None where neither can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def tree_bytes(tree) -> int:
    """Bytes of the arrays (or shapes) of `tree`."""
    return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def require_room(shapes, what: str, device=None, limit: int | None = None) -> None:
    """Refuse, before anything is allocated, to make arrays of `shapes` (a tree of shapes, e.g. from
    `jax.eval_shape`) that alone exceed the memory they would live in: the device's limit, or the host's where the
    device reports none (a CPU). An operating system's out-of-memory killer ends a process with no message; this
    names the problem instead."""
    device_limit = device_bytes_limit(device)
    limit = limit or device_limit or host_bytes_limit()
    need = tree_bytes(shapes)
    if limit and need > MARGIN * limit:
        raise UserError(f"{what} need {need / 2**30:,.1f} GiB, more than {MARGIN:.0%} of the "
                        f"{limit / 2**30:,.1f} GiB this {'device' if device_limit else 'machine'} "
                        "offers: run fewer members at once (fewer seeds or sweep values, or --shard i/N to split the "
                        "sweep into runs)")


def batch_for_memory(members: int, shared_bytes: float, held_per_member: float, temp_per_member: float,
                     bytes_limit: float, margin: float = MARGIN) -> int:
    """The largest power of two g (at most the power of two that covers `members`) such that the shared inputs,
    every member's held bytes and g members' temporaries fit `margin` x `bytes_limit`; 1 where not even one fits
    (the run then says it is out of memory, naming the phase's member_batch)."""
    room = margin * bytes_limit - shared_bytes - members * held_per_member
    fit = int(room // temp_per_member) if temp_per_member > 0 else members
    cap = 1 << max(members - 1, 0).bit_length()
    g = 1
    while g * 2 <= min(fit, cap):
        g *= 2
    return g


def planned_bytes(program, state, data, shared, probe: int) -> dict:
    """The compiler's plan of `program` (jitted: (state, data, shared, steps) -> ...) for `probe` members of the
    member-stacked `state` and `data` (shapes only: nothing is allocated): {"argument", "output", "alias", "temp"}
    bytes, and "shared", the bytes of the shared inputs."""
    spec = lambda x: jax.ShapeDtypeStruct((probe,) + tuple(x.shape[1:]), x.dtype)  # noqa: E731
    compiled = program.lower(jax.tree.map(spec, state), jax.tree.map(spec, data), shared,
                             jax.ShapeDtypeStruct((), jnp.int32)).compile()
    plan = compiled.memory_analysis()
    return dict(argument=plan.argument_size_in_bytes, output=plan.output_size_in_bytes,
                alias=getattr(plan, "alias_size_in_bytes", 0), temp=plan.temp_size_in_bytes,
                shared=sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(shared)))


def measured_member_batch(program, state, data, shared, bytes_limit: int, probe: int = PROBE_MEMBERS) -> int:
    """Members to train together (a power of two) for the member axis of `state`, from `program`'s plan for a few
    of them (`planned_bytes`) scaled against `bytes_limit` (`batch_for_memory`)."""
    members = state.step.shape[0]
    probe = min(probe, members)
    plan = planned_bytes(program, state, data, shared, probe)
    held = max(plan["argument"] + plan["output"] - plan["alias"] - plan["shared"], 0) / probe
    return batch_for_memory(members, plan["shared"], held, plan["temp"] / probe, bytes_limit)
