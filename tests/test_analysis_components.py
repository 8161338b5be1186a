"""Compiled components against what pruning locates: the share of the first pruned units inside each component."""
import numpy as np
import pandas as pd

from analysis.components import located_display, located_units
from analysis.load import load_study
from synthetic_store import Plant, build_frame, write_store

# A compiled model of 2 blocks x 4 MLP neurons and 2 heads per block: component "count" = block 1's neurons 0 and 2
# and block 0's head 1.
TASK = dict(kind="tracr", layers=2, units_per_layer=dict(neurons=4, heads=2), components=[
    dict(name="count", kind="mlp", block=1, heads=None, neurons=[0, 2]),
    dict(name="count", kind="attn", block=0, heads=[1], neurons=None)])


def store_with_removal_orders(tmp_path, orders):
    """The synthetic store with, for members ft0 and ft1, the removal orders {member: (neurons, heads)}."""
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "wrapper")
    frame = build_frame(plant, 0)
    base = frame[(frame.phase == "prune") & (frame.metric == "neurons.pt_acc")].drop_duplicates("member")
    rows = []
    for member, (neurons, heads) in orders.items():
        info = base[base.member == member].iloc[0]
        for kind, units in (("neurons", neurons), ("heads", heads)):
            rows += [dict(info, step=k + 1, metric=f"{kind}.unit", value=float(u)) for k, u in enumerate(units)]
    frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
    return load_study(write_store(tmp_path / "run", plant, frame=frame, task=TASK))


def test_located_share_counts_the_first_units_inside_each_component(tmp_path):
    # ft0 removes block 1's neurons 0 and 2 first (flat 4 + 0, 4 + 2) and head 1 of block 0: all inside.
    # ft1 removes neuron 4 + 0 then block 0's neuron 1 (outside), and head 0 of block 1 (outside).
    study = store_with_removal_orders(tmp_path, {"ft0": ([4, 6, 1], [1, 2]), "ft1": ([4, 1, 6], [2, 1])})
    units = located_units(study).set_index(["member", "kind"])
    assert units.loc[("ft0", "mlp"), "share"] == 1.0 and units.loc[("ft0", "attn"), "share"] == 1.0
    assert units.loc[("ft1", "mlp"), "share"] == 0.5 and units.loc[("ft1", "attn"), "share"] == 0.0
    np.testing.assert_allclose(units.loc[("ft0", "mlp"), "chance"], 2 / 8)  # 2 of 2 x 4 neurons
    np.testing.assert_allclose(units.loc[("ft0", "attn"), "chance"], 1 / 4)  # 1 of 2 x 2 heads
    shown = located_display(study)
    assert set(shown.component) == {"count"} and "share of the first pruned units in it" in shown


def test_no_components_in_the_manifest_no_table(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    study = load_study(write_store(tmp_path / "run", plant))
    assert located_units(study).empty and located_display(study).empty
