"""Where reduction's tasks run: local processes or threads, a LocalCluster, or SLURM worker jobs.

The reduce stage asks this module for something to run its per-exposure tasks on
(:meth:`DaskRunner.executor`, a ``concurrent.futures`` executor) or to compute Dask graphs on
(:meth:`DaskRunner.compute`), so the same code reduces a demo survey on a laptop (the rule's
threads as worker processes) and a survey archive on a cluster (dask-jobqueue
``SLURMCluster``, workers as separate SLURM jobs), chosen by ``cfg["dask"]["scheduler"]``. The
object handed back also describes the cluster as a JSON-able ``spec``, so the MLflow run
records on what the data were reduced.

Why processes by default: sep's C functions and numpy's small-array calls hold the GIL, so two
threads reduce a field only ~1.25x faster than one; forked worker processes share the parent's
imports and master calibrations (copy-on-write) and start in milliseconds.

It also holds the check that warns when a sqlite tracking URI meets a cluster executor: sqlite
over a network filesystem (NFS, Lustre, GPFS) corrupts or locks when jobs on several nodes write
to it, so a cluster run wants an MLflow tracking server.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import dask

log = logging.getLogger(__name__)

SCHEDULERS = ("processes", "threads", "local", "slurm")
# Environment variables shared with profiles/slurm, so the account/partition are set once.
ACCOUNT_ENV = "ASTROFLOW_SLURM_ACCOUNT"
PARTITION_ENV = "ASTROFLOW_SLURM_PARTITION"
# Snakemake executors that run every job in the submitting machine's filesystem and process
# tree; any other executor (slurm, cluster-generic, kubernetes, ...) puts jobs on other nodes.
LOCAL_EXECUTORS = {None, "", "local", "dryrun", "touch"}


class DaskRunner:
    """Computes Dask collections on the configured scheduler.

    Attributes
    ----------
    scheduler : str
        ``processes``, ``threads``, ``local`` or ``slurm``.
    spec : dict
        JSON-able description of the cluster (kind, workers, cores, memory, ...), for MLflow.
    client : distributed.Client or None
        The distributed client (None for processes and threads); use it for
        ``client.submit``/``client.map`` or ``distributed.progress`` when needed.
    parallelism : int
        How many tasks can run at once (worker threads in total), so callers can size the
        batches they submit and keep memory bounded.
    """

    def __init__(self, scheduler: str, spec: dict, parallelism: int, client: Any = None):
        self.scheduler = scheduler
        self.spec = spec
        self.parallelism = max(1, int(parallelism))
        self.client = client
        self._stopping: list[threading.Thread] = []

    @property
    def out_of_process(self) -> bool:
        """Whether :meth:`executor` runs tasks in other processes (arguments and results are
        pickled and copied)."""
        if self.client is not None:  # a LocalCluster may have thread workers
            return bool(self.spec.get("processes", True))
        return self.scheduler == "processes" and self.parallelism > 1

    @property
    def forks_workers(self) -> bool:
        """Whether :meth:`executor`'s workers are forked from this process (and so share what
        it loaded before their first task)."""
        return (
            self.scheduler == "processes"
            and self.parallelism > 1
            and _worker_context().get_start_method() == "fork"
        )

    def compute(self, *collections: Any, **kwargs: Any) -> tuple:
        """``dask.compute(*collections)`` on this runner's scheduler; returns a tuple.

        ``processes`` computes graphs on the threaded scheduler: a graph's tasks pass arrays
        to each other, which threads share and processes would have to copy."""
        if self.client is None:
            return dask.compute(
                *collections, scheduler="threads", num_workers=self.parallelism, **kwargs
            )
        return dask.compute(*collections, scheduler=self.client, **kwargs)

    @contextlib.contextmanager
    def executor(self) -> Iterator[Executor]:
        """A ``concurrent.futures`` executor for independent tasks, shut down on exit.

        One worker: a :class:`LazyExecutor` (tasks run in this thread when their result is
        asked for). Otherwise ``processes``: a process pool of ``parallelism`` workers, forked
        where the platform can (they inherit what this process loaded); ``threads``: a thread
        pool; ``local``/``slurm``: the distributed client's executor. Tasks and their
        arguments must pickle for processes and clusters.

        On exit, tasks not started are cancelled and the caller goes on while the pool's
        workers leave (joining two processes took ~20 ms of a field job's serial tail);
        :meth:`close` (run by :func:`dask_client`) waits for them.
        """
        if self.client is not None:
            pool: Executor = self.client.get_executor(pure=False)
        elif self.parallelism == 1:
            pool = LazyExecutor()
        elif self.scheduler == "threads":
            pool = ThreadPoolExecutor(self.parallelism)
        else:
            pool = ProcessPoolExecutor(self.parallelism, mp_context=_worker_context())
        try:
            yield pool
        finally:
            if self.client is not None:
                pool.shutdown(wait=False)  # cancels what is left; the cluster closes next
            else:  # a thread of its own joins it (after shutdown(wait=False) nothing could)
                stopping = threading.Thread(
                    target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True}
                )
                stopping.start()
                self._stopping.append(stopping)

    def close(self) -> None:
        """Wait until the workers of every pool :meth:`executor` made have left."""
        while self._stopping:
            self._stopping.pop().join()

    def __repr__(self) -> str:
        return f"DaskRunner({self.scheduler!r}, parallelism={self.parallelism})"


class _LazyFuture(Future):
    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        super().__init__()
        self._call = (fn, args, kwargs)

    def _run(self) -> None:
        if self._call is None or not self.set_running_or_notify_cancel():
            return
        fn, args, kwargs = self._call
        self._call = None
        try:
            self.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # stored, raised by result() like any executor's future
            self.set_exception(exc)

    def result(self, timeout: float | None = None) -> Any:
        self._run()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._run()
        return super().exception(timeout)


class LazyExecutor(Executor):
    """One worker and no pool: a task runs in the calling thread when its result is first
    asked for. So tasks submitted ahead hold no memory until they are needed, and a task may
    use what the caller does between submitting it and asking for it, as with a real pool."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        return _LazyFuture(fn, args, kwargs)


def _worker_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux: workers start in milliseconds with this process's imports and loaded
    data. Elsewhere the platform's default (``spawn``: macOS system libraries are not safe to
    fork), whose workers import afresh and load the masters once each."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def dask_settings(cfg: dict) -> dict:
    """The resolved ``dask`` section (schema defaults filled in), whatever ``cfg`` holds."""
    from astroflow import config as astroflow_config

    section = cfg.get("dask") or {}
    resolved = astroflow_config.validate({"dask": section}, source="dask section")["dask"]
    slurm = resolved["slurm"]
    if slurm["minimum_jobs"] > slurm["maximum_jobs"]:
        raise astroflow_config.ConfigError(
            "invalid configuration in dask section:\n  dask.slurm.minimum_jobs: "
            f"{slurm['minimum_jobs']} is more than dask.slurm.maximum_jobs "
            f"{slurm['maximum_jobs']}"
        )
    return resolved


@contextlib.contextmanager
def dask_client(cfg: dict, threads: int) -> Iterator[DaskRunner]:
    """Yield a :class:`DaskRunner` for ``cfg["dask"]["scheduler"]`` and close it on exit.

    Parameters
    ----------
    cfg : dict
        Configuration with a ``dask`` section (absent keys take the schema defaults).
    threads : int
        The rule's ``{threads}``: worker processes or threads of ``processes``/``threads``, and
        the default worker threads of a LocalCluster (the CPUs SLURM gave this job).

    Notes
    -----
    ``processes`` runs tasks on ``threads`` worker processes and graphs on the threaded
    scheduler; ``threads`` runs both on ``threads`` threads inside this process;
    ``local`` starts a ``distributed.LocalCluster`` on this node; ``slurm`` starts a
    dask-jobqueue ``SLURMCluster`` whose workers are SLURM jobs, scaled to a fixed number of
    jobs or adaptively. The cluster and client are closed when the block ends, also when it
    raises, so no worker job outlives the stage; ``processes``/``threads`` wait there for the
    workers of the runner's pools (:meth:`DaskRunner.close`).
    """
    settings = dask_settings(cfg)
    scheduler = settings["scheduler"]
    threads = max(1, int(threads))
    if scheduler in ("processes", "threads"):
        spec = {"scheduler": scheduler, "num_workers": threads}
        if scheduler == "processes" and threads > 1:
            spec["start_method"] = _worker_context().get_start_method()
        runner = DaskRunner(scheduler, spec, threads)
        try:
            yield runner
        finally:
            runner.close()
        return
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            cluster, spec, parallelism = _start_local(settings, threads)
        else:
            cluster, spec, parallelism = _start_slurm(settings)
        stack.callback(_close, cluster, "cluster")
        from distributed import Client

        client = Client(cluster)
        stack.callback(_close, client, "client")
        spec["dashboard_link"] = client.dashboard_link if spec.get("dashboard") else None
        log.info("dask %s cluster up: %s", scheduler, spec)
        yield DaskRunner(scheduler, spec, parallelism, client)


def _close(obj: Any, what: str) -> None:
    try:
        obj.close()
    except Exception as err:  # closing must not hide the error that ended the block
        log.warning("closing the dask %s failed: %s", what, err)


def _start_local(settings: dict, threads: int):
    from distributed import LocalCluster

    local = settings["local"]
    n_workers = int(local["n_workers"])
    threads_per_worker = int(local["threads_per_worker"] or max(1, threads // n_workers))
    dashboard = settings["dashboard_address"]
    processes = bool(local["processes"])
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        # A thread worker shares this process, whose memory it would measure as its own: with a
        # limit it pauses (and the computation hangs) once the host process is large.
        memory_limit=local["memory_limit"] if processes else 0,
        # Worker processes talk over TCP on loopback only; thread workers use in-process comms.
        host="127.0.0.1" if processes else None,
        dashboard_address=dashboard,
    )
    spec = {
        "scheduler": "local",
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": processes,
        "memory_limit": local["memory_limit"] if processes else None,
        "dashboard": dashboard is not None,
    }
    return cluster, spec, n_workers * threads_per_worker


def slurm_cluster_kwargs(settings: dict) -> dict:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from the resolved ``dask`` section.

    The account and partition fall back to ``ASTROFLOW_SLURM_ACCOUNT`` /
    ``ASTROFLOW_SLURM_PARTITION``, the variables profiles/slurm reads, so a user sets them once.
    """
    slurm = settings["slurm"]
    account = slurm["account"] or os.environ.get(ACCOUNT_ENV) or None
    queue = slurm["queue"] or os.environ.get(PARTITION_ENV) or None
    kwargs: dict[str, Any] = {
        "cores": int(slurm["cores"]),
        "processes": int(slurm["processes"]),
        "memory": str(slurm["memory"]),
        "walltime": str(slurm["walltime"]),
        "account": account,
        "queue": queue,
        "job_name": slurm["job_name"],
        "job_extra_directives": list(slurm["job_extra_directives"]),
        "job_script_prologue": list(slurm["job_script_prologue"]),
        "log_directory": slurm["log_directory"],
        "local_directory": slurm["local_directory"],
        "interface": slurm["interface"],
        "dashboard_address": settings["dashboard_address"],
    }
    if slurm["scheduler_interface"]:
        kwargs["scheduler_options"] = {"interface": slurm["scheduler_interface"]}
    return kwargs


def _start_slurm(settings: dict):
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as err:  # the optional extra is missing
        raise RuntimeError(
            "dask.scheduler is 'slurm' but dask-jobqueue is not installed: "
            "pip install -e '.[slurm]'"
        ) from err
    slurm = settings["slurm"]
    kwargs = slurm_cluster_kwargs(settings)
    if kwargs["log_directory"]:
        os.makedirs(kwargs["log_directory"], exist_ok=True)
    cluster = SLURMCluster(**kwargs)
    try:
        if slurm["adaptive"]:
            cluster.adapt(minimum_jobs=int(slurm["minimum_jobs"]),
                          maximum_jobs=int(slurm["maximum_jobs"]))
            n_jobs = int(slurm["maximum_jobs"])
            scaling = {"adaptive": True, "minimum_jobs": int(slurm["minimum_jobs"]),
                       "maximum_jobs": n_jobs}
        else:
            n_jobs = int(slurm["jobs"])
            cluster.scale(jobs=n_jobs)
            scaling = {"adaptive": False, "jobs": n_jobs}
        script = cluster.job_script()
    except Exception:
        cluster.close()
        raise
    spec = {
        "scheduler": "slurm",
        **{k: kwargs[k] for k in ("cores", "processes", "memory", "walltime", "account",
                                  "queue", "job_name")},
        **scaling,
        "job_script": script,
        "dashboard": kwargs["dashboard_address"] is not None,
    }
    return cluster, spec, int(slurm["cores"]) * n_jobs


def check_tracking_for_executor(uri: str | None, executor: str | None) -> str | None:
    """A warning when a sqlite MLflow store is used with a cluster executor, else None.

    Parameters
    ----------
    uri : str or None
        The tracking URI in effect (``MLFLOW_TRACKING_URI`` or ``tracking.uri``).
    executor : str or None
        Snakemake's executor name (``workflow.executor_plugin.name`` or the ``--executor``
        value); None or ``local`` for a local run.

    Returns
    -------
    str or None
        The text to print (it names the URI, the executor, and the fix), or None when the
        combination is safe.

    Notes
    -----
    Jobs on different nodes would all open the one sqlite file over the shared filesystem,
    whose locking is unreliable: runs are lost or the database is corrupted. A tracking server
    (``mlflow server`` on a login or service node) serialises the writes.
    """
    executor_name = (executor or "").strip().lower()
    if executor_name in LOCAL_EXECUTORS:
        return None
    if not uri or not str(uri).strip().lower().startswith("sqlite:"):
        return None
    return (
        f"tracking.uri is {uri!r} (a sqlite file) but jobs run through the {executor_name!r} "
        "executor on other nodes: concurrent writes to sqlite over a shared filesystem lose "
        "runs or corrupt the database. Start a tracking server on a login/service node that "
        "the compute nodes can reach (mlflow server --host <that node's cluster-internal "
        "address> --port 5000 --backend-store-uri sqlite:///$PWD/mlflow.db "
        "--artifacts-destination $PWD/mlartifacts) and set tracking.uri or MLFLOW_TRACKING_URI "
        "to http://<address>:5000; see docs/cluster.md."
    )
