"""`fttrace launch skypilot` without a cloud: the task files it writes (each shard's command, resources and recovery,
the merge job), SkyPilot's own loader accepting them, DRY_RUN; the launch scripts' headers and dry runs."""
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from fttrace.cli import main
from fttrace.engine.results import write_json
from fttrace.tools.skypilot import MOUNT_POINT, READY, write_tasks
from helpers import ROOT

OVERRIDES = ["sweep.seeds=8", "finetune.lr_scale.large=3.0"]


def tasks(tmp_path, workdir="gs://bucket/study", **options):
    paths = write_tasks("configs/smoke.py", workdir, 3, OVERRIDES, out_dir=tmp_path / "sky", **options)
    return paths, [yaml.safe_load(p.read_text()) for p in paths]


def test_every_shard_runs_its_slice_with_the_resources_and_recovery_asked_for(tmp_path):
    paths, (*shards, merge) = tasks(tmp_path, gpus="H100:1", spot=True, restarts=5)
    assert [p.name for p in paths] == ["shard-0.yaml", "shard-1.yaml", "shard-2.yaml", "merge.yaml"]
    for i, task in enumerate(shards):
        assert shlex.split(task["run"]) == [
            "fttrace", "run", "configs/smoke.py", "--workdir", f"gs://bucket/study/shard-{i}", "--shard", f"{i}/3",
            "-q", "--config.sweep.seeds=8", "--config.finetune.lr_scale.large=3.0"]
        assert task["resources"] == dict(accelerators="H100:1", use_spot=True, job_recovery=dict(
            strategy="EAGER_NEXT_REGION", max_restarts_on_errors=5))
        assert "file_mounts" not in task  # gs:// is written directly
        assert "jax[cuda12]" in task["setup"]
    assert "accelerators" not in merge["resources"] and "use_spot" not in merge["resources"]
    assert "fttrace merge gs://bucket/study/shard-0 gs://bucket/study/shard-1 gs://bucket/study/shard-2 --out " \
           "gs://bucket/study/merged --overwrite" in merge["run"]


def test_a_cpu_on_demand_shard_and_a_mounted_bucket(tmp_path):
    _, (*shards, merge) = tasks(tmp_path, workdir="s3://bucket/study/")
    for i, task in enumerate(shards + [merge]):
        assert task["file_mounts"] == {MOUNT_POINT: dict(source="s3://bucket/study", mode="MOUNT_CACHED")}
    assert shards[2]["resources"] == dict(use_spot=False, job_recovery=dict(strategy="EAGER_NEXT_REGION",
                                                                            max_restarts_on_errors=3))
    assert f"--workdir {MOUNT_POINT}/shard-2 " in shards[2]["run"] and "jax[cuda12]" not in shards[2]["setup"]


def test_skypilot_loads_and_validates_every_task(tmp_path):
    sky = pytest.importorskip("sky")
    paths, found = tasks(tmp_path, gpus="H100:1", spot=True)
    for path, task in zip(paths, found):
        loaded = sky.Task.from_yaml(str(path))
        assert loaded.name == task["name"] and loaded.run == task["run"]
        [resources] = list(loaded.resources)
        if path.name == "merge.yaml":
            assert not resources.use_spot and not resources.accelerators
            continue
        assert resources.accelerators == {"H100": 1} and resources.use_spot
        assert resources.job_recovery == dict(strategy="EAGER_NEXT_REGION", max_restarts_on_errors=3)
    (tmp_path / "bad.yaml").write_text(paths[0].read_text().replace("run:", "runn:"))
    with pytest.raises(Exception, match="runn"):  # the loader does validate
        sky.Task.from_yaml(str(tmp_path / "bad.yaml"))


def test_the_merge_job_waits_for_every_shard_to_be_complete(tmp_path):
    workdirs = [tmp_path / f"shard-{i}" for i in range(2)]
    for w, status in zip(workdirs, ("complete", "running")):
        w.mkdir()
        write_json(w / "manifest.json", dict(config={}, devices=[], status=status))
    ready = lambda: subprocess.run([sys.executable, "-c", READY, *map(str, workdirs)], cwd=ROOT,  # noqa: E731
                                   capture_output=True).returncode
    assert ready() != 0
    write_json(workdirs[1] / "manifest.json", dict(config={}, devices=[], status="complete"))
    assert ready() == 0


@pytest.mark.parametrize("dry", [["--dry-run"], []])
def test_dry_run_prints_what_it_would_submit(dry, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "0" if dry else "1")
    out = tmp_path / "sky"
    assert main(["launch", "skypilot", "configs/smoke.py", "--workdir", "gs://b/s", "--shards", "2", "--spot",
                 "--out-dir", str(out), *dry]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"sky jobs launch -y -d {out}/{name}.yaml" for name in ("shard-0", "shard-1", "merge")]


@pytest.mark.parametrize("args, message", [
    (["--workdir", "runs/x", "--shards", "2"], "--workdir runs/x: SkyPilot's shards run on VMs of their own"),
    (["--workdir", "gs://b/s", "--shards", "0"], "--shards 0: expected a positive number"),
    (["--workdir", "gs://b/s", "--shards", "2", "--gpus", "H100:one"], "--gpus H100:one: expected"),
])
def test_bad_launch_arguments_are_one_line(args, message, tmp_path, capsys):
    assert main(["launch", "skypilot", "configs/smoke.py", *args, "--out-dir", str(tmp_path / "sky"),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: ") and message in err[0]
    assert not (tmp_path / "sky").exists()


LAUNCH = ROOT / "launch"


def dry_run(script, *args, **env):
    out = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "DRY_RUN": "1", "FTTRACE": "fttrace", "REMOTE_DIR": ".", **env})
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.parametrize("script, engine", [("tpu_pod.sh", "--worker=all"), ("slurm_array.sh", "SLURM"),
                                            ("multi_gpu.sh", "srun"), ("cloud_vms.sh", "SkyPilot")])
def test_each_script_says_what_starts_its_processes_and_how_it_resumes(script, engine):
    header = "\n".join(line for line in (LAUNCH / script).read_text().splitlines() if line.startswith("#"))
    processes = [line for line in header.splitlines() if line.startswith("# Processes: ")]
    assert processes and engine in header
    assert any(line.startswith("# Preempted: ") for line in header.splitlines())


def test_cloud_vms_is_a_thin_wrapper_of_launch_skypilot(tmp_path):
    """DRY_RUN=1 launch/cloud_vms.sh runs `fttrace launch skypilot`, which writes the tasks and prints the
    commands it would submit."""
    lines = dry_run("cloud_vms.sh", "configs/smoke.py", "gs://b/s", "--config.sweep.seeds=8", SHARDS="4",
                    GPUS="A100:8", SPOT="1", OUT_DIR=str(tmp_path), FTTRACE=f"{sys.executable} -m fttrace.cli")
    names = [f"shard-{i}" for i in range(4)] + ["merge"]
    assert lines == [f"sky jobs launch -y -d {tmp_path}/{name}.yaml" for name in names]
    shard = yaml.safe_load((tmp_path / "shard-3.yaml").read_text())
    assert shard["resources"]["accelerators"] == "A100:8" and shard["resources"]["use_spot"]
    assert shard["run"].endswith("--workdir gs://b/s/shard-3 --shard 3/4 -q --config.sweep.seeds=8")
