"""Each figure is readable on its own, checked on the matplotlib objects it draws (not pixels): the pruning plot's
y-axis is the C_PT gain over k = 0 with its nulls solid and labelled and integer k ticks; in the reFT plot colour
tells reFT from the control and line style only C_Tr, and the step axis ends soon after the revivals; attention is
drawn as the change from the parent on a diverging scale centred at 0."""
import matplotlib.colors
import numpy as np
import pytest

from analysis import figures
from analysis.load import load_study
from synthetic_store import Plant, build_frame, log_spaced_reft, write_store

PLANT = Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0, 1.0),
              kind=lambda lr, prior, s: "wrapper" if lr == "medium" else "overwrite")
SHIFT = 0.3  # planted change of one head's attention in every fine-tuned member


@pytest.fixture(scope="module")
def frame():
    return build_frame(PLANT)


@pytest.fixture(scope="module")
def study(frame, tmp_path_factory):
    return load_study([write_store(tmp_path_factory.mktemp("figures") / "run", PLANT, frame=frame)])


def _colour(line):
    return matplotlib.colors.to_hex(line.get_color())


def _curves(ax):
    """The data lines of a panel (reference lines from axhline/axvline have two points on an axes transform)."""
    return [line for line in ax.lines if len(line.get_xdata()) > 2]


def _legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_the_pruning_plot_shows_the_gain_over_k0_beside_solid_labelled_nulls(study):
    fig = figures.pruning_curves(study, "neurons", budget=15)
    medium = fig.axes[0]
    assert medium.get_ylabel().endswith("C_PT gain over k = 0")
    low, high = medium.get_ylim()
    assert low < 0 < high and (low, high) != (-0.02, 1.02)
    curves = _curves(medium)
    assert all(line.get_ydata()[0] == 0 for line in curves)  # every curve is a change from k = 0
    by_colour = {}
    for line in curves:
        by_colour.setdefault(_colour(line), []).append(line)
    random, control = (by_colour[matplotlib.colors.to_hex(figures.COLORS[k])] for k in ("random", "control_null"))
    assert len(random) == 1 and len(control) == 1  # one null line each, whatever C_Tr
    assert random[0].get_linestyle() == control[0].get_linestyle() == "-"
    # The planted wrapper: the targeted gain reaches ~0.85 while random neurons stay near 0.
    targeted = by_colour[matplotlib.colors.to_hex(figures.COLORS["pt"])]
    assert {line.get_linestyle() for line in targeted} == {"-", "--"}
    assert min(line.get_ydata()[-1] for line in targeted) > 0.7 and abs(random[0].get_ydata()).max() < 0.1
    dashed = [line for line in medium.lines if line.get_linestyle() == "--"]
    assert dashed and all(_colour(line) == matplotlib.colors.to_hex(figures.COLORS["pt"]) for line in dashed)
    texts = _legend_texts(fig)
    assert "null: the same members, k random neurons removed" in texts
    assert "null: the control that never had C_PT, pruned the same way" in texts
    assert "C_Tr = 1 (of the fine-tuned members)" in texts


@pytest.mark.parametrize("method", ["neurons", "heads"])
def test_pruning_ticks_are_whole_units(study, method):
    fig = figures.pruning_curves(study, method)
    ax = fig.axes[0]
    fig.canvas.draw()
    left, right = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if left <= t <= right]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)
    if method == "heads":  # 0..4 heads: no random-neuron null exists for heads
        assert not any("random" in t for t in _legend_texts(fig))


def test_in_the_reft_plot_colour_tells_the_run_and_style_only_c_tr(study):
    fig = figures.reft_curves(study, threshold=0.95)
    reft, greys = matplotlib.colors.to_hex(figures.COLORS["reft"]), set()
    for ax in fig.axes:
        for line in _curves(ax):
            if _colour(line) == reft:
                continue
            greys.add(_colour(line))
            assert line.get_linestyle() == "-"  # a control has no C_Tr: solid
        styles = {line.get_linestyle() for line in _curves(ax) if _colour(line) == reft}
        assert styles == {"-", "--"}  # C_Tr 0 and 1
    assert len(greys) == 2  # the control at LR x1 and x10, told apart by colour
    texts = _legend_texts(fig)
    assert {"C_Tr = 0 (reFT of the fine-tuned member)", "C_Tr = 1 (reFT of the fine-tuned member)",
            "control (never had C_PT), LR x1", "control (never had C_PT), LR x10"} <= set(texts)
    assert fig.axes[0].get_xscale() == "linear"  # steps logged every 50: evenly spaced


def test_the_reft_axis_ends_after_the_revivals_on_a_log_scale(frame, tmp_path):
    logged = log_spaced_reft(frame)
    study = load_study([write_store(tmp_path / "run", PLANT, frame=logged)])
    steps = logged.value[logged.metric == "steps_to_threshold"].dropna()
    assert logged[logged.metric == "pt_acc"].step.max() == 1500
    fig = figures.reft_curves(study)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    left, right = ax.get_xlim()
    assert left == 0 and np.percentile(steps, 95) <= right < 1500
    assert right == figures.revival_horizon(study)
    assert f"reverse fine-tuning step (to {right:g} of 1500)" in [a.get_xlabel() for a in fig.axes]


def test_attention_is_drawn_as_the_change_from_the_parent(frame, tmp_path):
    finetuned = frame.member.str.startswith("ft")
    changed = (frame.phase == "attention") & finetuned & (frame.step == 0) & (frame.metric == "pt_query.h1.operand")
    study = load_study([write_store(tmp_path / "run", PLANT, frame=frame.assign(
        value=frame.value + np.where(changed, SHIFT, 0.0)))])
    fig = figures.attention_maps(study)
    images = {ax.get_title(): ax.images[0] for ax in fig.axes if ax.images}
    parents = images.pop("pretrained parents\n(attention mass)")
    assert parents.get_cmap().name == "magma" and parents.norm.vmin == 0
    assert set(images) == {f"{kind}, {lr} LR\nC_Tr = {s}" for kind in ("fine-tuned", "reFT")
                           for lr in ("medium", "large") for s in (0, 1)}
    for title, image in images.items():
        assert image.get_cmap().name == "RdBu_r"
        assert image.norm.vmin == -image.norm.vmax and image.norm.vmax > SHIFT - 0.06  # symmetric around no change
        matrix = image.get_array()
        # Row 1: layer 0, head 1; column 0: C_PT queries to the operand slot.
        expected = SHIFT if title.startswith("fine-tuned") else 0.0
        assert matrix[1, 0] == pytest.approx(expected, abs=0.06)
        assert np.nanmax(np.abs(np.delete(matrix.ravel(), 1 * matrix.shape[1]))) < 0.1  # elsewhere: noise only
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "change in attention mass (member - pretrained parent)" in labels
    assert "attention mass (pretrained)" in labels
