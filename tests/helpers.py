"""Shared test settings: tiny configs that compile and run in seconds on a 2-core CPU; `fttrace` subprocesses."""
import os
import pathlib
import subprocess
import sys

import pytest

from fttrace import cli, config as config_lib
from fttrace.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.py")

TINY = [
    "model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "model.n_layers=1",
    "pretrain.steps=20", "pretrain.eval_every=10", "pretrain.batch_size=8", "pretrain.warmup_steps=2",
    "finetune.steps=10", "finetune.eval_every=10", "finetune.batch_size=8",
    "eval.examples=64", "sweep.prior=('high',)", "sweep.finetune_lr=('large',)", "sweep.spurious=(1.0,)",
    "reft.steps=20", "reft.eval_every=10", "reft.batch_size=8",
    "probe.steps=30", "probe.train_examples=128", "probe.test_examples=64",
    "prune.examples=64", "prune.mask_steps=5", "prune.mask_examples=32", "prune.neuron_ks=(0,1,2)",
    "prune.head_ks=(0,1)", "attention.examples=32",
]
NO_EVALS = "evals=()"


def tiny_config(*overrides):
    return config_lib.load(SMOKE, TINY + list(overrides))


def assert_config_error(config: str, override: str, key: str, workdir, capsys) -> None:
    """`config` with `override` is refused on load naming `key`, and by `fttrace run` with one line, exit 2 and
    no workdir."""
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        config_lib.load(config, [override])
    capsys.readouterr()
    assert cli.main(["run", config, "--workdir", str(workdir), f"--config.{override}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: config key") and key in err[0]
    assert not pathlib.Path(workdir).exists()


def assert_opens_every_member(workdir, results, unchanged=()) -> None:
    """fttrace.open on an LM study's workdir: the members table is the results' members, and each member's model
    applies its own saved parameters (a child's differ from its parent's, except for the members in `unchanged`,
    stopped before their first step, whose parameters are their parent's)."""
    import jax
    import numpy as np

    import fttrace
    run = fttrace.open(workdir)
    found = set(map(tuple, run.members[["phase", "member"]].astype(str).to_numpy()))
    assert found == set(map(tuple, results[["phase", "member"]].drop_duplicates().astype(str).to_numpy()))
    for member, parent in run.members[["member", "parent"]].itertuples(index=False):
        model = run.model(member)
        tokens = np.zeros((2, 8), np.int32)
        assert model.logits(tokens).shape == (2, 8, model.cfg.vocab_size)
        if parent is not None and parent == parent:  # not None / NaN
            child, mine = run.params(member), run.params(int(parent))
            same = all(jax.tree.leaves(jax.tree.map(np.array_equal, child, mine)))
            assert same == (member in set(unchanged)), member


def assert_open_gives_logged_accuracies(run, results, sets, tolerance: float = 0.0) -> None:
    """Every trained member of an opened PCFG/Tracr run answers the run's held-out sets with the accuracies the run
    logged at the last step of its phase (within `tolerance`)."""
    acc = results[results.metric.isin(["pt_acc", "ft_acc"]) & results.phase.isin(set(run.members.phase))]
    last = acc[acc.step == acc.groupby("member").step.transform("max")]
    logged = last.pivot_table(index="member", columns="metric", values="value")
    assert set(logged.index) == set(run.members.member)
    for member in run.members.member:
        model = run.model(member)
        for metric, heldout in (("pt_acc", sets["pt"]), ("ft_acc", sets["ft"])):
            assert abs(model.accuracy(heldout) - logged.loc[member, metric]) <= tolerance + 1e-9, (member, metric)


def dead_pid() -> int:
    """The id of a process of this host that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


class Runs:
    """`fttrace` subprocesses sharing a compilation cache, each logging to tmp/<name>.log. Run `name` works in
    tmp/<name>; `name#k` also works there (several processes, or runs one after another). A subclass's
    `start(name, ...)` builds the command and calls `launch`."""

    timeout = 900

    def __init__(self, tmp):
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        self.env.update(FTTRACE_COMPILATION_CACHE=str(tmp / "xla-cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # cache even the small programs
        self.running = {}

    def launch(self, name, arguments, devices=None, program=None):
        """Start `program` (default `python -m fttrace.cli`) with `arguments`, on `devices` host devices."""
        env = dict(self.env)
        if devices:  # must be set before jax is imported, hence in the subprocess's environment
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        log = open(self.tmp / f"{name}.log", "w")
        command = [*(program or [sys.executable, "-m", "fttrace.cli"]), *arguments]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.running[name] = (process, log)
        return process

    def wait(self, name):
        process, log = self.running.pop(name)
        process.wait(self.timeout)
        log.close()
        return process.returncode, (self.tmp / f"{name}.log").read_text()

    def run(self, name, *args, **kwargs):
        self.start(name, *args, **kwargs)
        return self.wait(name)

    def workdir(self, name):
        return self.tmp / name

    def stop_all(self):
        for name in list(self.running):
            self.running[name][0].kill()
            self.wait(name)


# A store caught mid-run, for the readers of a store as it is on disk (`fttrace tensorboard`, `fttrace wandb`): four
# fine-tuning members of two pretrained ones, two cells (finetune_lr small / large), ft3 frozen after its first
# evaluation (NaN), pt members without the fine-tuning settings.
STORE_MEMBERS = {"member": ["ft0", "ft1", "ft2", "ft3"], "parent": ["pt0", "pt0", "pt1", "pt1"], "seed": [0, 1, 0, 1],
                 "finetune_lr": [1e-3, 1e-3, 1e-2, 1e-2], "finetune_lr_name": ["small", "small", "large", "large"],
                 "prior": [0.2] * 4}
STORE_ACC = [[0.1, 0.3, 0.5, 0.9], [0.2, 0.4, 0.6, float("nan")]]  # two evaluations x four members


def finetune_records(acc, steps):
    """The fine-tuning phase's records: ft_acc `acc[i]` and ft_loss 1 - acc[i] at steps[i]."""
    import numpy as np
    return [(s, {"ft_acc": np.asarray(acc[i]), "ft_loss": 1 - np.asarray(acc[i])}) for i, s in enumerate(steps)]


def write_running_store(workdir):
    """A workdir whose pretraining is finished (its curve, its final record, a pruning evaluation at one step) and
    whose fine-tuning has logged two evaluations so far (its live curve), with the manifest of a running run.
    Returns its ResultsStore."""
    import json

    import numpy as np
    import pandas as pd

    from fttrace.engine.results import MANIFEST_FILE, ResultsStore, long_frame
    store = ResultsStore(workdir)
    store.prepare()
    members = pd.DataFrame(STORE_MEMBERS)
    pre = members.iloc[:2].assign(member=["pt0", "pt1"], parent=None).drop(columns=["finetune_lr", "finetune_lr_name"])
    curve = [(0, {"pt_acc": np.array([0.0, 0.2])}),
             (10, {"pt_acc": np.array([0.8, 1.0]), "diverged_step": np.array([-1.0, -1.0])})]
    store.write_part("g0-pretrain", long_frame(pre, "pretrain", curve))
    store.write_part("g0-prune", long_frame(pre, "prune", [(0, {"pt_acc": np.array([1.0, 1.0])})]))
    store.write_live("g0-finetune", long_frame(members, "finetune", finetune_records(STORE_ACC, [0, 50])))
    (store.workdir / MANIFEST_FILE).write_text(json.dumps(dict(config={"task": {"name": "pcfg"}, "seed": 0},
                                                               status="running", devices=["cpu:0"], shard=None)))
    return store
