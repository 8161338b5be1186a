"""docs/howto.md does what it says: each section's code runs as written."""
import re

import ml_collections
import pandas as pd

from fttrace import config as config_lib
from fttrace import evals
from fttrace.pipeline import run_study
from helpers import ROOT, tiny_config

HOWTO = ROOT / "docs" / "howto.md"


def section_code(title: str) -> str:
    """The Python block of the how-to section `title`."""
    text = HOWTO.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.search(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S).group(1)


def test_add_an_evaluation(tmp_path, monkeypatch):
    namespace = {}
    exec(compile(section_code("Add an evaluation"), "howto.md", "exec"), namespace)
    monkeypatch.setitem(evals.EVALS, "norms", namespace["run_norms"])  # what the page's registration does
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

