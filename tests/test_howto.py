"""docs/howto.md does what it says: each section's code runs as written."""
import json
import re

import ml_collections
import pandas as pd
import pytest

from fttrace import config as config_lib
from fttrace.answer import evals
from fttrace.engine.runner import run_study
from fttrace.answer.tasks import registry
from helpers import ROOT, tiny_config

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

HOWTO = ROOT / "docs" / "howto.md"


def section_code(title: str) -> str:
    """The Python blocks of the how-to section `title`, in order, as one program."""
    text = HOWTO.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return "\n".join(re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S))


def test_add_a_task(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))  # the page's registration lasts for this test
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    namespace = {}
    exec(compile(section_code("Add a task"), "howto.md", "exec"), namespace)
    frame = pd.read_parquet(namespace["results"])
    assert set(frame.phase) == {"pretrain", "finetune", "regime"}
    manifest = json.loads((tmp_path / "runs" / "copy" / "manifest.json").read_text())
    assert manifest["task"] == {"kind": "copy", "length": 6, "symbols": 8}
    # The task's own targets reach the logged accuracies. The prior decides pretrained C_FT: asked about the second
    # token in 20% of pretraining queries a member learns it, in 0.5% it stays at chance (1/8).
    pre = frame[(frame.phase == "pretrain") & (frame.step == frame[frame.phase == "pretrain"].step.max())]
    pre = pre.pivot_table(index=["member", "prior_name"], columns="metric", values="value").reset_index()
    assert (pre.pt_acc >= 0.9).all()
    assert (pre[pre.prior_name == "high"].ft_acc >= 0.9).all() and (pre[pre.prior_name == "low"].ft_acc < 0.3).all()
    # With the shortcut on every input (C_Tr 1) a low-prior member meets its criterion at once by answering the first
    # token: right on shortcut inputs, at chance without them — the reuse the taxonomy looks for.
    fine = frame[frame.phase == "finetune"]
    last = fine[fine.step == fine.groupby("member").step.transform("max")].pivot_table(
        index=["member", "spurious", "prior_name"], columns="metric", values="value").reset_index()
    reused = last[(last.spurious == 1.0) & (last.prior_name == "low")]
    assert len(reused) == 2 and (reused.stop_step == 0).all()
    assert (reused.ft_shortcut_acc >= 0.9).all() and (reused.ft_acc < 0.3).all()


def test_add_an_evaluation(tmp_path, monkeypatch):
    namespace = {}
    exec(compile(section_code("Add an evaluation"), "howto.md", "exec"), namespace)
    # what the page's registration does
    monkeypatch.setitem(evals.EVALS, "norms", evals.Measurement("norms", namespace["measure_norms"]))
    config = tiny_config("sweep.seeds=2")
    with config.unlocked():
        config.norms = ml_collections.ConfigDict()  # its config section
    config.evals = ("norms",)
    config_lib.validate(config)
    frame = pd.read_parquet(run_study(config, tmp_path / "run", quiet=True))
    norms = frame[frame.phase == "norms"]
    assert set(norms.metric) == {"param_norm"} and set(norms.step) == {0}
    assert set(norms.member) == {"pt0", "pt1", "ft0", "ft1"} and (norms.value > 0).all()
    # A fine-tuned member's norm is not its parent's: the evaluation read each phase's own states.
    value = norms.set_index("member").value
    assert value["ft0"] != value["pt0"]


def test_add_a_sweep_axis(capsys):
    exec(compile(section_code("Add a sweep axis"), "howto.md", "exec"), {})
    shown = capsys.readouterr().out
    # 2 seeds x 2 priors; each parent's children: 2 C_Tr x 2 weight decays
    assert "group 0: d_model 32, 4 pretrained, 16 fine-tuned" in shown
    assert "group 1: d_model 64, 4 pretrained, 16 fine-tuned" in shown
    # numbered seed by seed: group 1's first parent is seed 0's third member, pt2, with children ft8-ft11
    assert "finetune_weight_decay" in shown and re.search(r"ft11\s+pt2\s+0\s+high", shown)


def test_add_a_study_kind_names_what_every_kind_has():
    """Every study kind (the tasks' and each of STUDY_KINDS) has each method the page says a kind declares."""
    import importlib
    text = HOWTO.read_text()
    section = text[text.index("## Add a study kind\n"):]
    methods = ("groups", "shard", "member_count", "phase_tables", "prepare", "run_group", "protocol_layout",
               "final_lines")
    assert all(f"`{name}(" in section for name in methods)
    for module in (config_lib.TASK_STUDY, *config_lib.STUDY_KINDS.values()):
        kind = importlib.import_module(module).KIND
        assert all(callable(getattr(kind, name, None)) for name in methods), (module, methods)
        if module != config_lib.TASK_STUDY:
            assert callable(importlib.import_module(module).validate_config)
