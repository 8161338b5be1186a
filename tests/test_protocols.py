"""Fine-tuning protocols (fttrace/engine/protocols.py): each protocol moves only what it should, all of them train
together in one vmapped program, a member trains the same alone and in a mixed sweep, and bad configs are refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import fttrace
from fttrace import config as config_lib
from fttrace.engine import protocols
from fttrace.cli import main as fttrace_main
from fttrace.errors import UserError
from fttrace.model.transformer import Transformer
from fttrace.answer.sweep import build_groups
from fttrace.answer.tasks.registry import build_task
from fttrace.engine.train import AnswerObjective, DataSpec, QueryMix, init_members, train_steps
from helpers import ROOT, assert_open_gives_logged_accuracies

CONFIG = str(ROOT / "configs" / "protocols.py") + ":tiny"
# Members fine-tuned from one pretrained member (same key, same batches), at an LR large enough to move weights.
NAMES = ("full", "l2sp_0", "l2sp_huge", "top1", "lora2", "lora4", "svf")
STEPS = 10


def with_protocols(config):
    with config.protocols.named.unlocked():
        config.protocols.named.l2sp_0 = dict(kind="l2sp", strength=0.0)
        config.protocols.named.l2sp_huge = dict(kind="l2sp", strength=1e6)
        config.protocols.named.lora4 = dict(kind="lora", rank=4)
    return config


def finetune(config, names, steps=STEPS, lr=1e-2):
    """Fine-tune one pretrained member with each protocol in `names`; returns (pretrained params, members' merged
    params before and after, losses)."""
    group = build_groups(config)[0]
    task = build_task(config)
    parent = init_members(group.model, config.pretrain, config.seed, [0], [1e-3])
    members = pd.DataFrame([protocols.member_columns(config, name) for name in names])
    layout = protocols.group_layout(config, group.model.n_layers, members)
    n = len(names)
    keys = jnp.stack([jax.random.PRNGKey(7)] * n)
    state, spec = protocols.fan_out(parent, np.zeros(n, np.int32), config.finetune, np.full(n, lr, np.float32), keys,
                                    layout, members)
    before = protocols.merge(layout, state).params
    model = protocols.Reparameterised(Transformer(group.model), layout)
    run = jax.jit(train_steps(model, AnswerObjective(task), config.finetune))
    data = DataSpec(batch=QueryMix(queries=jnp.tile(task.query_mix(ft=1.0), (n, 1)), spurious=jnp.zeros(n)),
                    protocol=spec)
    final, losses = run(state, data, None, jnp.int32(steps))
    pretrained = jax.tree.map(lambda x: x[0], parent.params)
    return pretrained, before, protocols.merge(layout, final).params, np.asarray(losses), layout


@pytest.fixture(scope="module")
def trained():
    config = with_protocols(config_lib.load(CONFIG))
    return dict(zip(("pretrained", "before", "after", "losses", "layout"), finetune(config, NAMES)))


def member(tree, name):
    return jax.tree.map(lambda x: np.asarray(x[NAMES.index(name)]), tree)


def leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def adapted(layout):
    return {jax.tree_util.keystr(tuple(jax.tree_util.DictKey(k) for k in kernel)): axes
            for _, kernel, axes in protocols.matrices(layout)}


def test_every_protocol_starts_as_the_pretrained_model_exactly(trained):
    for name in NAMES:
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(member(trained["before"], name)),
                                                         jax.tree.leaves(trained["pretrained"])))


def test_lora_changes_only_target_matrices_within_rank_r(trained):
    before, after = leaves(trained["pretrained"]), leaves(member(trained["after"], "lora2"))
    targets = adapted(trained["layout"])
    for path, w0 in before.items():
        if path not in targets:
            assert np.array_equal(after[path], w0), path
            continue
        delta = (after[path] - w0).reshape(int(np.prod(w0.shape[:targets[path]])), -1)
        s = np.linalg.svd(delta, compute_uv=False)
        assert s[0] > 1e-4, path  # it moved
        assert s[2] < 1e-6 * max(s[0], 1.0), (path, s[:4])  # rank <= 2


def test_svf_keeps_the_singular_vectors(trained):
    before, after = leaves(trained["pretrained"]), leaves(member(trained["after"], "svf"))
    targets = adapted(trained["layout"])
    for path, w0 in before.items():
        if path not in targets:
            assert np.array_equal(after[path], w0), path
            continue
        shape = (int(np.prod(w0.shape[:targets[path]])), -1)
        u, _, vh = np.linalg.svd(w0.reshape(shape), full_matrices=False)
        rotated = u.T @ (after[path] - w0).reshape(shape) @ vh.T  # diag(ds) if U and V are kept
        off = rotated - np.diag(np.diag(rotated))
        assert np.abs(np.diag(rotated)).max() > 1e-4, path
        assert np.abs(off).max() < 1e-3 * np.abs(rotated).max(), path  # full fine-tuning: off-diagonal ~ diagonal


def test_top_k_leaves_lower_layers_bit_identical(trained):
    before, after = leaves(trained["pretrained"]), leaves(member(trained["after"], "top1"))
    for path, w0 in before.items():
        frozen = path.startswith(("['block_0']", "['embed']", "['pos_embed']"))
        assert np.array_equal(after[path], w0) == frozen, path


def test_l2sp_at_strength_0_is_full_fine_tuning_and_a_huge_strength_stays_near_the_base(trained):
    full, zero = member(trained["after"], "full"), member(trained["after"], "l2sp_0")
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(zero)))
    losses = trained["losses"]
    np.testing.assert_array_equal(losses[NAMES.index("full")], losses[NAMES.index("l2sp_0")])
    base = np.concatenate([x.ravel() for x in jax.tree.leaves(trained["pretrained"])])

    def distance(name):
        return np.linalg.norm(np.concatenate([x.ravel() for x in jax.tree.leaves(member(trained["after"], name))])
                              - base)
    assert distance("l2sp_huge") < 0.3 * distance("full")


@pytest.mark.slow
def test_a_member_alone_equals_the_member_inside_the_mixed_sweep(trained):
    config = with_protocols(config_lib.load(CONFIG))
    for name in ("lora2", "top1"):  # lora2 alone has LoRA factors of rank 2, in the sweep of rank 4 (lora4's)
        _, _, alone, losses, _ = finetune(config, (name,))
        np.testing.assert_allclose(losses[0], trained["losses"][NAMES.index(name)], rtol=1e-5, atol=1e-6)
        # To float tolerance (as for members of plain sweeps): batching members changes the rounding, and Adam
        # turns rounding in near-zero gradients into differences of up to the LR x steps on a few parameters.
        for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[0], alone)),
                        jax.tree.leaves(member(trained["after"], name))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("override, key", [
    ("protocols.named.full.kind='bogus'", "protocols.named.full.kind"),
    ("protocols.named.lora2.rank=0", "protocols.named.lora2.rank"),
    ("protocols.named.top1.top_k=3", "protocols.named.top1.top_k"),
    ("protocols.named.l2sp_1.strength=-1.0", "protocols.named.l2sp_1.strength"),
    ("protocols.targets=('attn.query','ln1')", "protocols.targets"),
    ("protocols.targets=('attn.query.bias',)", "protocols.targets"),
    ("sweep.protocol=('nope',)", "sweep.protocol"),
    ("protocols.named.svf={'kind': 'svf', 'rank': 2}", "protocols.named.svf.rank"),
])
def test_bad_protocol_configs_name_the_key(override, key, tmp_path, capsys):
    with pytest.raises(UserError, match=f"config key '{key}'"):
        config_lib.load(CONFIG, [override])
    assert fttrace_main(["run", CONFIG, "--workdir", str(tmp_path / "w"), f"--config.{override}"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w" / "results.parquet").exists()


@pytest.mark.slow
def test_a_protocol_sweep_runs_as_one_group_with_protocol_columns_and_weight_changes_and_resumes(tmp_path):
    from fttrace.engine.runner import run_study
    config = config_lib.load(CONFIG, ["evals=('weights',)", "sweep.seeds=1"])
    frame = pd.read_parquet(str(run_study(config, tmp_path / "run", quiet=True)))
    ft = frame[frame.phase == "finetune"]
    assert set(ft.protocol) == set(config.sweep.protocol) and ft.group.nunique() == 1
    assert set(protocols.COLUMNS) <= set(frame.columns)
    lora = ft[ft.protocol == "lora2"]
    assert (lora.lora_rank == 2).all() and lora.top_k_layers.isna().all()
    weights = frame[frame.phase == "weights"].pivot_table(index=["protocol", "step"], columns="metric",
                                                          values="value")
    assert weights.loc[("top1", 0), "attn.weight_change"] == 0 and weights.loc[("top1", 1), "attn.weight_change"] > 0
    assert weights.loc[("lora2", -1), "embed.weight_change"] == 0
    assert weights.loc[("full", -1), "all.weight_change"] > 0
    # Opened, each member's tree is merged into the weights it was evaluated with.
    run = fttrace.open(tmp_path / "run")
    assert_open_gives_logged_accuracies(run, frame, run.heldout())
    # Resumed: the fine-tuned trees come back from their checkpoint and merge to the same weights.
    (tmp_path / "run" / "parts" / "g0-weights.parquet").unlink()
    again = pd.read_parquet(str(run_study(config, tmp_path / "run", quiet=True)))
    key = ["member", "phase", "step", "metric"]
    pd.testing.assert_frame_equal(again.sort_values(key).reset_index(drop=True),
                                  frame.sort_values(key).reset_index(drop=True))
