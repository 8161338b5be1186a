"""Training groups sized from device memory.

On an accelerator, training every member at once is fastest until the program overflows the device's memory. Where
a phase leaves `member_batch` at 0 and the device reports its memory (`bytes_limit` in `memory_stats()`; a CPU
reports none), the group comes from the compiler's own plan: the training program compiled, not run, for a few
members, its `memory_analysis()` split into what every member holds for the whole chunk (its state and data: the
arguments and outputs) and what only the members computing together need (the temporaries), scaled to the member
count against the device's limit with a margin (`group_for_memory`). The plan sees the dtype, the attention form
and every term of the step (the T^2 attention scores included), which a count of activations does not. Where the
device reports no memory, `train.train_member_batch`'s activation budget stays.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

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


def group_for_memory(members: int, shared_bytes: float, held_per_member: float, temp_per_member: float,
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


def measured_group(program, state, data, shared, bytes_limit: int, probe: int = PROBE_MEMBERS) -> int:
    """Members to train together (a power of two) for the member axis of `state`, from `program`'s plan for a few
    of them (`planned_bytes`) scaled against `bytes_limit` (`group_for_memory`)."""
    members = state.step.shape[0]
    probe = min(probe, members)
    plan = planned_bytes(program, state, data, shared, probe)
    held = max(plan["argument"] + plan["output"] - plan["alias"] - plan["shared"], 0) / probe
    return group_for_memory(members, plan["shared"], held, plan["temp"] / probe, bytes_limit)
