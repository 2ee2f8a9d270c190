"""astroflow.dask_cluster: the four schedulers compute like numpy, close cleanly, describe
themselves; dask-jobqueue renders the SLURM job script from the config; the tracking check."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from astroflow.config import ConfigError
from astroflow.dask_cluster import (
    check_tracking_for_executor,
    dask_client,
    dask_settings,
    slurm_cluster_kwargs,
)
from astroflow.processes import pid_alive

from .conftest import job_states, read_jsonl, submissions_by_rule


@pytest.fixture
def uneven():
    """A numpy array and its Dask twin on uneven chunks (the edge chunks are the risky ones)."""
    x = np.random.default_rng(8).normal(size=(37, 23)).astype(np.float32)
    return x, da.from_array(x, chunks=((10, 20, 7), (5, 18)))


def _check_equal(runner, x, a):
    total, column_max, centred = runner.compute((a * 2.0).sum(axis=0), a.max(axis=1),
                                                a - a.mean())
    np.testing.assert_allclose(total, (x * 2.0).sum(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(column_max, x.max(axis=1))
    np.testing.assert_allclose(centred, x - x.mean(), rtol=1e-5, atol=1e-6)


def test_processes_is_the_default_and_computes_like_numpy(uneven):
    x, a = uneven
    with dask_client({}, threads=3) as runner:
        assert runner.scheduler == "processes"
        assert runner.client is None
        assert runner.parallelism == 3
        assert runner.spec == {"scheduler": "processes", "num_workers": 3, "start_method": "fork"}
        _check_equal(runner, x, a)
    with dask_client({"dask": {"scheduler": "threads"}}, threads=2) as runner:
        assert runner.spec == {"scheduler": "threads", "num_workers": 2}
        _check_equal(runner, x, a)


def _pid_and_square(value):
    if value < 0:
        raise ValueError(f"negative: {value}")
    return os.getpid(), value * value


@pytest.mark.parametrize("scheduler", ["processes", "threads"])
def test_executor_runs_tasks_in_workers(scheduler):
    """The executor behind the reduce stage's exposure tasks: processes run them in other
    processes, threads in this one; results in submission order, errors raised by result()."""
    with dask_client({"dask": {"scheduler": scheduler}}, threads=2) as runner:
        with runner.executor() as pool:
            futures = [pool.submit(_pid_and_square, v) for v in range(6)]
            failed = pool.submit(_pid_and_square, -1)
            results = [f.result() for f in futures]
            with pytest.raises(ValueError, match="negative: -1"):
                failed.result()
    assert [square for _, square in results] == [v * v for v in range(6)]
    pids = {pid for pid, _ in results}
    if scheduler == "processes":
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
    else:
        assert pids == {os.getpid()}


def _signal_and_wait(started: str, go: str, done: str) -> int:
    Path(started).touch()
    for _ in range(3000):  # 30 s: a caller that waited for this task fails instead of hanging
        if os.path.exists(go):
            Path(done).touch()
            return os.getpid()
        time.sleep(0.01)
    raise TimeoutError("never told to finish")


def test_leaving_the_executor_does_not_wait_for_its_workers_but_the_runner_does(tmp_path):
    """The field job writes its outputs while its worker processes leave: the executor block
    ends with a task still running; leaving ``dask_client`` waits for it and the workers."""
    started, go, done = (str(tmp_path / name) for name in ("started", "go", "done"))
    with dask_client({}, threads=2) as runner:
        with runner.executor() as pool:
            task = pool.submit(_signal_and_wait, started, go, done)
            while not os.path.exists(started):
                time.sleep(0.01)
        assert not os.path.exists(done)  # the block ended with its task still running
        Path(go).touch()
    assert os.path.exists(done)
    assert not pid_alive(task.result())  # the worker left and was reaped


def test_one_worker_runs_each_task_when_its_result_is_asked():
    """One worker: no pool; a task submitted ahead runs only when its result is wanted, so it
    can use what the caller did in between (as the field job's catalog board relies on)."""
    done = []
    with dask_client({}, threads=1) as runner:
        with runner.executor() as pool:
            later = pool.submit(lambda: list(done))
            done.append("catalog posted")
            assert later.result() == ["catalog posted"]
            assert later.result() == ["catalog posted"]  # ran once
            failed = pool.submit(_pid_and_square, -2)
            assert isinstance(failed.exception(), ValueError)


@pytest.mark.parametrize("processes", [False, True])
def test_local_cluster_computes_like_numpy_and_closes(uneven, processes):
    x, a = uneven
    cfg = {"dask": {"scheduler": "local", "local": {"n_workers": 2, "processes": processes,
                                                     "memory_limit": "1GB"}}}
    with dask_client(cfg, threads=2) as runner:
        assert runner.scheduler == "local"
        assert len(runner.client.scheduler_info()["workers"]) == 2
        _check_equal(runner, x, a)
        spec = runner.spec
        client, cluster = runner.client, runner.client.cluster
    assert json.loads(json.dumps(spec)) == spec  # JSON-able, for MLflow
    assert spec["n_workers"] == 2 and spec["threads_per_worker"] == 1
    assert spec["processes"] is processes
    assert client.status == "closed"
    assert cluster.status.name == "closed"


def test_local_cluster_closes_when_the_block_raises(uneven):
    _, a = uneven
    cfg = {"dask": {"scheduler": "local", "local": {"processes": False}}}
    with pytest.raises(ZeroDivisionError):
        with dask_client(cfg, threads=2) as runner:
            client = runner.client
            runner.compute(a.sum())
            raise ZeroDivisionError("stage failed")
    assert client.status == "closed"
    assert client.cluster.status.name == "closed"


def test_bad_dask_settings_name_the_key():
    with pytest.raises(ConfigError, match="dask.scheduler"):
        dask_settings({"dask": {"scheduler": "mpi"}})
    with pytest.raises(ConfigError, match="dask.slurm.minimum_jobs"):
        dask_settings({"dask": {"slurm": {"minimum_jobs": 5, "maximum_jobs": 2}}})


def test_slurm_job_script_rendered_from_config(tmp_path, monkeypatch):
    from dask_jobqueue import SLURMCluster

    monkeypatch.setenv("ASTROFLOW_SLURM_ACCOUNT", "envacct")
    monkeypatch.delenv("ASTROFLOW_SLURM_PARTITION", raising=False)
    settings = dask_settings({"dask": {"scheduler": "slurm", "slurm": {
        "cores": 6, "processes": 2, "memory": "12GB", "walltime": "00:45:00",
        "queue": "short", "job_extra_directives": ["--qos=normal"],
        "job_script_prologue": ["module load python/3.11"],
        "log_directory": str(tmp_path / "dask-logs"), "local_directory": "$TMPDIR",
        "scheduler_interface": "lo"}}})
    kwargs = slurm_cluster_kwargs(settings)
    assert kwargs["account"] == "envacct"  # the profile's variable, when the config says null
    cluster = SLURMCluster(**kwargs)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("#SBATCH -J astroflow-dask", "#SBATCH -A envacct", "#SBATCH -p short",
                      "#SBATCH -n 1", "#SBATCH --cpus-per-task=6", "#SBATCH -t 00:45:00",
                      "#SBATCH --qos=normal"):
        assert directive in lines, f"{directive!r} not in\n{script}"
    mem = [line for line in lines if line.startswith("#SBATCH --mem=")]
    assert mem == ["#SBATCH --mem=12G"], script
    assert "module load python/3.11" in lines
    worker = lines[-1]
    assert "distributed.cli.dask_worker tcp://127.0.0.1:" in worker  # scheduler on lo
    assert "--nworkers 2" in worker and "--nthreads 3" in worker
    assert "--local-directory $TMPDIR" in worker


@pytest.mark.slow
def test_slurm_cluster_runs_workers_as_slurm_jobs(uneven, fake_slurm, tmp_path, monkeypatch):
    """dask_client('slurm') on the fake scheduler: sbatch starts a real worker, the graph is
    computed there, and leaving the block cancels the worker job."""
    x, a = uneven
    monkeypatch.chdir(tmp_path)
    cfg = {"dask": {"scheduler": "slurm", "slurm": {
        "cores": 1, "processes": 1, "memory": "1GB", "walltime": "00:10:00", "jobs": 1,
        "account": "astro", "queue": "cpu", "scheduler_interface": "lo", "interface": "lo",
        "log_directory": str(tmp_path / "dask-logs")}}}
    with dask_client(cfg, threads=1) as runner:
        runner.client.wait_for_workers(1, timeout=120)
        _check_equal(runner, x, a)
        spec = runner.spec
    assert spec["scheduler"] == "slurm" and spec["jobs"] == 1
    assert "#SBATCH -A astro" in spec["job_script"]
    (submission,) = submissions_by_rule(fake_slurm)[""]
    assert submission["account"] == "astro" and submission["partition"] == "cpu"
    assert submission["cpus-per-task"] == "1" and submission["mem"] == "954M"
    deadline = time.time() + 30
    while time.time() < deadline and set(job_states(fake_slurm).values()) != {"CANCELLED"}:
        time.sleep(0.5)
    assert set(job_states(fake_slurm).values()) == {"CANCELLED"}
    assert not (fake_slurm / "srun.jsonl").exists()  # dask workers run without a job step
    assert read_jsonl(fake_slurm / "submissions.jsonl")[0]["argv"][0].endswith(".sh")
    assert os.listdir(tmp_path / "dask-logs")


@pytest.mark.parametrize("uri,executor,warns", [
    ("sqlite:///mlflow.db", "slurm", True),
    ("sqlite:////scratch/me/mlflow.db", "cluster-generic", True),
    ("http://10.1.2.3:5000", "slurm", False),
    ("sqlite:///mlflow.db", "local", False),
    ("sqlite:///mlflow.db", None, False),
    ("sqlite:///mlflow.db", "dryrun", False),
])
def test_tracking_check_warns_on_sqlite_with_a_cluster_executor(uri, executor, warns):
    message = check_tracking_for_executor(uri, executor)
    if not warns:
        assert message is None
    else:
        assert uri in message and executor in message
        assert "mlflow server" in message and "docs/cluster.md" in message
