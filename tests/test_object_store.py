"""Workdirs on an object store, against a real S3 server on this machine (moto's, reached through s3fs as any s3://
path is): the shards of a study merged there, its status and results read back, equal to the same merge on local
disk; a connection lost in the middle of a write leaves nothing half-written taken for done; a run on s3:// is
refused before anything is written (orbax writes checkpoints to local paths and gs:// only)."""
import os
import socket

import pandas as pd
import pytest

import fttrace
from fttrace.cli import main
from fttrace.engine.results import ResultsStore
from fttrace.errors import UserError
from helpers import NO_EVALS, SMOKE, TINY

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

GRID = [f"--config.{o}" for o in TINY + [NO_EVALS, "sweep.seeds=2", "pretrain.steps=10", "finetune.steps=10"]]
KEYS = ["phase", "member", "step", "metric"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """moto's S3 server in this process; stopped and started again on the same port, it keeps its objects."""

    def __init__(self):
        self.port = free_port()
        self.server = None

    def start(self):
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self):
        self.server.stop()


@pytest.fixture(scope="module")
def s3():
    server = Server()
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{server.port}", AWS_MAX_ATTEMPTS="1")
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("bucket")
    yield server, fs
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    s3fs.S3FileSystem.clear_instance_cache()


def sorted_frame(frame) -> pd.DataFrame:
    return frame.sort_values(KEYS).reset_index(drop=True)


def test_shards_merge_and_read_back_on_s3_as_on_local_disk(s3, tmp_path, capsys):
    server, fs = s3
    local = [tmp_path / f"shard-{i}" for i in range(2)]
    for i, workdir in enumerate(local):
        assert main(["run", SMOKE, "--workdir", str(workdir), "--shard", f"{i}/2", "-q", *GRID]) == 0
        fs.put(str(workdir / "manifest.json"), f"bucket/study/shard-{i}/manifest.json")
        fs.put(str(workdir / "results.parquet"), f"bucket/study/shard-{i}/results.parquet")
    assert main(["merge", *map(str, local), "--out", str(tmp_path / "merged")]) == 0
    remote = [f"s3://bucket/study/shard-{i}" for i in range(2)]
    assert main(["merge", *remote, "--out", "s3://bucket/study/merged"]) == 0
    assert capsys.readouterr().out.strip().endswith("results: s3://bucket/study/merged/results.parquet")
    assert not fs.exists("bucket/study/merged/lock.json")  # the merge's lock record is gone once it is done
    opened, here = fttrace.open("s3://bucket/study/merged"), fttrace.open(tmp_path / "merged")
    pd.testing.assert_frame_equal(sorted_frame(opened.results), sorted_frame(here.results))
    assert main(["status", "s3://bucket/study/shard-1"]) == 0
    assert "finished" in capsys.readouterr().out.splitlines()[0]
    # A second merge into the same place is refused, naming it, and leaves it as it was.
    before = fs.cat("bucket/study/merged/results.parquet")
    assert main(["merge", *remote, "--out", "s3://bucket/study/merged"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert fs.cat("bucket/study/merged/results.parquet") == before


class Losing:
    """Stands for a module (`pyarrow.parquet` or `hashlib`) whose function `name` stops the store once it returns."""

    def __init__(self, module, name, server):
        self.module, self.name, self.server = module, name, server

    def __getattr__(self, attr):
        found = getattr(self.module, attr)
        if attr != self.name:
            return found

        def then_lose(*args, **kwargs):
            out = found(*args, **kwargs)
            self.server.stop()
            return out
        return then_lose


@pytest.mark.parametrize("where", ["pq", "hashlib"])
def test_a_connection_lost_mid_write_leaves_nothing_taken_for_done(s3, monkeypatch, where):
    """The store goes away while a part is written: during the upload of its temporary object (as pyarrow ends
    writing it), or after it, before the part is in place (as its checksum is computed). The write fails with one
    error naming the part; with the store back, the part is not done (a rerun computes it again), a temporary
    object left behind is cleared by the next run, and the parts written before are intact."""
    import hashlib

    import pyarrow.parquet as pq

    from fttrace.engine import results
    server, fs = s3
    store = ResultsStore(f"s3://bucket/lost-{where}")
    store.prepare()
    frame = pd.DataFrame(dict(member=["pt0"], parent=[None], phase=["pretrain"], step=[10], metric=["loss"],
                              value=[1.5], status=["ok"]))
    store.write_part("g0-pretrain", frame)
    monkeypatch.setattr(results, where, Losing(dict(pq=pq, hashlib=hashlib)[where],
                                               dict(pq="write_table", hashlib="sha256")[where], server))
    part = rf"s3://bucket/lost-{where}/parts/g0-finetune.parquet"
    with pytest.raises(UserError, match=rf"^cannot write {part}(.sha256)?: "):  # the part, or its checksum
        store.write_part("g0-finetune", frame.assign(phase="finetune"))
    monkeypatch.undo()
    server.start()
    fs.invalidate_cache()
    assert store.has_part("g0-pretrain") and not store.has_part("g0-finetune")
    left = [p for p in fs.find(f"bucket/lost-{where}") if p.endswith(".tmp")]
    assert bool(left) == (where == "hashlib")  # the upload done, its temporary object stays until the next run
    store.remove_temporaries()
    fs.invalidate_cache()
    assert not [p for p in fs.find(f"bucket/lost-{where}") if p.endswith(".tmp")]
    store.merge_parts()
    pd.testing.assert_frame_equal(store.read(), frame)
    store.write_part("g0-finetune", frame.assign(phase="finetune"))  # the rerun's write
    assert sorted(store.read().phase) == ["finetune", "pretrain"]


def test_a_run_on_s3_is_refused_before_anything_is_written(s3, capsys):
    server, fs = s3
    assert main(["run", SMOKE, "--workdir", "s3://bucket/run", "-q", *GRID]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: workdir s3://bucket/run: orbax writes checkpoints "
                                               "to local paths and gs:// only")
    assert not fs.exists("bucket/run")
