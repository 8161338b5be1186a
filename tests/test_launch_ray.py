"""`fttrace launch ray` on a local Ray instance: 3 shards of a tiny study, once undisturbed and once with one shard's
worker process killed (SIGKILL) mid-phase; the killed shard is retried, resumes from its checkpoints, and the merged
results equal the undisturbed run's."""
import json
import os
import signal
import threading
import time

import pandas as pd
import pytest

from fttrace.cli import main
from fttrace.tools.launch_ray import launch_ray, parse_resources
from fttrace.tools.merge import merge_workdirs
from fttrace.errors import UserError
from helpers import NO_EVALS, SMOKE, TINY

ray = pytest.importorskip("ray")

# Six lineages (3 seeds x 2 pretraining rates), two per shard; a checkpoint every chunk of 10 steps.
GRID = TINY + [NO_EVALS, "sweep.seeds=3", "sweep.pretrain_lr=(1e-3,3e-3)", "pretrain.steps=30",
               "pretrain.schedule=constant", "pretrain.warmup_steps=0", "checkpoint.every_chunks=1"]
KEYS = ["phase", "member", "step", "metric"]


def merged(results) -> pd.DataFrame:
    return pd.read_parquet(results).sort_values(KEYS).reset_index(drop=True)


def kill_worker_when_checkpointed(shard, killed):
    """SIGKILL the Ray worker running `shard` once its first pretraining checkpoint exists (the run is mid-phase)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        if (shard / "checkpoints" / "g0-pretrain" / "10").exists():
            holder = json.loads((shard / "lock.json").read_text() or "{}")
            if holder.get("pid"):
                killed.append(holder["pid"])  # the worker itself: the run is the task, in the worker's process
                os.kill(holder["pid"], signal.SIGKILL)
                return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_killed_shard_is_retried_and_the_merge_equals_an_undisturbed_run(local_ray, tmp_path):
    # The undisturbed sharded run, here in this process (its shards share their compiled programs).
    for i in range(3):
        assert main(["run", SMOKE, "--workdir", str(tmp_path / "undisturbed" / f"shard-{i}"), "--shard", f"{i}/3",
                     "-q", *(f"--config.{o}" for o in GRID)]) == 0
    undisturbed = merge_workdirs([tmp_path / "undisturbed" / f"shard-{i}" for i in range(3)],
                                 tmp_path / "undisturbed" / "merged")

    lines, killed = [], []
    watcher = threading.Thread(target=kill_worker_when_checkpointed,
                               args=(tmp_path / "killed" / "shard-1", killed), daemon=True)
    watcher.start()
    results = launch_ray(main, SMOKE, str(tmp_path / "killed"), 3, GRID, every=0.5, say=lines.append)
    watcher.join()
    print("\n".join(lines))
    assert killed, "the shard's worker was never killed"
    assert lines[-1] == f"fttrace launch ray: every shard done; merged into {tmp_path / 'killed' / 'merged'}"
    assert any(line.startswith("shard 1/3: attempt 1 on ") and "attempt 2 on " in line for line in lines)
    assert any(line.startswith("shard 1/3  attempt 2 on ") for line in lines)  # the view shows the retry
    # The retry resumed the shard (its manifest lists both invocations) and the others ran once.
    invocations = [len(json.loads((tmp_path / "killed" / f"shard-{i}" / "manifest.json").read_text())
                       ["invocations"]) for i in range(3)]
    assert invocations == [1, 2, 1]
    pd.testing.assert_frame_equal(merged(results), merged(undisturbed))
    assert set(merged(results).member) >= {f"pt{i}" for i in range(6)}


def test_a_refused_shard_is_not_retried_and_nothing_is_merged(local_ray, tmp_path):
    (tmp_path / "w" / "shard-0").mkdir(parents=True)
    (tmp_path / "w" / "shard-0" / "manifest.json").write_text("not json")  # refused: not an fttrace manifest
    lines = []
    with pytest.raises(UserError, match=r"not merging, 1 shard\(s\) failed \(shard 0/1: fttrace run exited with "
                                        r"status 2: fttrace: error: .*manifest.json is unreadable"):
        launch_ray(main, SMOKE, str(tmp_path / "w"), 1, GRID, retries=2, every=0.5, say=lines.append)
    assert not any("attempt 2" in line for line in lines)
    assert not (tmp_path / "w" / "merged").exists()


@pytest.mark.parametrize("text, message", [
    ("{GPU: 1}", "--resources {GPU: 1}: not JSON"),
    ('{"GPU": -1}', "expected a JSON object of resource names and non-negative amounts"),
    ('["GPU"]', "expected a JSON object"),
])
def test_bad_resources_are_one_line(text, message, capsys, tmp_path):
    assert main(["launch", "ray", SMOKE, "--workdir", str(tmp_path), "--shards", "2", "--resources", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: ") and message in err[0]


def test_resources_become_task_options():
    assert parse_resources(None) == dict(num_cpus=1)
    assert parse_resources('{"GPU": 1, "CPU": 4, "TPU": 8}') == dict(num_cpus=4, num_gpus=1, resources={"TPU": 8})
