"""MLflow tracking for stage jobs: one run per job, tagged so any result traces back to raw pixels.

Every stage wraps its work in :func:`stage_run`, which points MLflow at the configured store,
tags the run with the lineage (stage, rule, pipeline id, git commit and dirty flag, code digest,
config hash, working directory, dataset digest, raw-manifest digest, upstream run ids, package
versions), logs the config the job received (``config/stage.json``; ``config/pipeline.json`` too
when the workflow exports the whole config in ``ASTROFLOW_PIPELINE_CONFIG``), logs the data it
read as MLflow dataset inputs, and makes sure the run never stays RUNNING: an exception ends it
FAILED, SIGTERM/SIGINT end it KILLED. ``astroflow.lineage`` reads all of this back.

The sqlite store must exist before jobs run in parallel (concurrent creation of a new sqlite
database crashes), so the workflow runs ``astroflow tracking init`` once, first.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.exceptions import MlflowException

from astroflow import __version__
from astroflow.cli_common import add_config_args, resolve_config, setup_logging
from astroflow.config import config_hash
from astroflow.processes import pid_alive

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_ID_ENV = "ASTROFLOW_PIPELINE_ID"
RULE_ENV = "ASTROFLOW_RULE"
# The whole resolved pipeline config as JSON, exported by the workflow for its jobs (optional):
# a job only receives its own sections, but reproducing a run needs all of them.
PIPELINE_CONFIG_ENV = "ASTROFLOW_PIPELINE_CONFIG"
# Tags copied from upstream runs, so the evaluate run names its raw archive and reduce run too.
INHERITED_TAGS = ("raw_manifest_digest",)
# MLflow keeps dataset digests in a 36-character column; the full digest is in the run's tags.
MLFLOW_DIGEST_CHARS = 32
# Artifact paths that astroflow.lineage reads back.
STAGE_CONFIG_ARTIFACT = "config/stage.json"
PIPELINE_CONFIG_ARTIFACT = "config/pipeline.json"
RAW_MANIFEST_ARTIFACT = "lineage/raw_manifest.json"
TRACKED_PACKAGES = ("torch", "lightning", "dask", "zarr", "astropy", "mlflow", "galsim", "sep")
# Sections every stage's params include besides its own: what defines the data it sees.
SHARED_SECTIONS = ("seed", "instrument", "data")


def tracking_uri(cfg: Mapping) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``cfg["tracking"]["uri"]``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg["tracking"]["uri"]


def redact_uri(uri: str) -> str:
    """``uri`` with its ``user:password@`` part replaced by ``***@``, for logs and records.

    A tracking URI such as ``https://user:secret@mlflow.example.org`` must work as given but
    never be written to a log, a param, a tag or an artifact.
    """
    try:
        parts = urlsplit(str(uri))
    except ValueError:
        return "<unparsable URI redacted>"
    if "@" not in parts.netloc:
        return str(uri)
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def redact_config(cfg: Mapping) -> dict:
    """A copy of ``cfg`` whose ``tracking.uri`` carries no credentials."""
    out = dict(cfg)
    if isinstance(out.get("tracking"), Mapping) and "uri" in out["tracking"]:
        out["tracking"] = {**out["tracking"], "uri": redact_uri(out["tracking"]["uri"])}
    return out


@contextlib.contextmanager
def _using_store(cfg: Mapping) -> Iterator[str]:
    """Point MLflow at the configured store for the duration of the block.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; restoring it afterwards
    keeps a later stage in the same process (tests, notebooks) from mistaking it for a user
    override.
    """
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def init_store(cfg: Mapping) -> dict:
    """Create (or upgrade) the tracking store and the experiment; return what was set up.

    Run once before parallel jobs: creating the sqlite schema from two processes at once fails.
    """
    with _using_store(cfg) as uri:
        experiment = mlflow.set_experiment(cfg["tracking"]["experiment"])
    return {
        "uri": redact_uri(uri),
        "experiment": experiment.name,
        "experiment_id": experiment.experiment_id,
    }


def git_state() -> dict[str, str]:
    """The code version: git commit of the checkout and whether it has uncommitted changes."""

    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "src", "workflow",
                 "Snakefile", "config", "pyproject.toml")
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def code_digest() -> str:
    """sha256 over the workflow and library sources: equal digests mean the same code.

    Covers ``src/astroflow/**/*.py``, ``Snakefile`` and ``workflow/**`` by path and content
    (config is tracked on its own), so it says whether the code differs from a recorded run
    even when the recorded checkout was dirty (where the commit alone cannot).
    """
    digest = hashlib.sha256()
    files = [REPO_ROOT / "Snakefile"]
    for pattern, root in (("*.py", "src/astroflow"), ("*", "workflow")):
        files += sorted(p for p in (REPO_ROOT / root).rglob(pattern) if p.is_file())
    for path in files:
        if "__pycache__" in path.parts or not path.exists():
            continue
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of the packages that can change a result."""
    versions = {"astroflow": __version__}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten nested config into ``a.b.c`` keys with string values, as MLflow params want."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def stage_params(cfg: Mapping, stage: str) -> dict:
    """The part of the config a stage's results depend on: its section plus the shared ones."""
    return {key: cfg[key] for key in (*SHARED_SECTIONS, stage) if key in cfg}


def lineage_tags(
    cfg: Mapping,
    stage: str,
    dataset_digest: str | None = None,
    upstream_run_ids: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """All tags that tie a run to its code, config, data and upstream runs."""
    tags = {
        "stage": stage,
        "rule": os.environ.get(RULE_ENV, stage),
        "pipeline_id": os.environ.get(PIPELINE_ID_ENV, "standalone-" + uuid.uuid4().hex[:8]),
        "config_hash": config_hash(stage_params(cfg, stage)),
        "code_digest": code_digest(),
        "workdir": os.getcwd(),
        **process_tags(),
        **git_state(),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }
    if dataset_digest:
        tags["dataset_digest"] = dataset_digest
    for up_stage, run_id in (upstream_run_ids or {}).items():
        tags[f"upstream.{up_stage}"] = run_id
    tags.update(extra or {})
    return tags


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, Linux), or None if unknown.

    Together with the pid it identifies a process even after the pid has been reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Which process owns a run (host, pid, pid start): lets a later job see it is gone."""
    pid = os.getpid()
    return {
        "process.host": socket.gethostname(),
        "process.pid": str(pid),
        "process.start": _process_start(pid) or "unknown",
    }


def _process_gone(tags: Mapping[str, str]) -> bool:
    """True when the run's process surely no longer runs (same host, pid absent or reused).

    A run from another host, or without process tags, cannot be judged from here: False.
    """
    if tags.get("process.host") != socket.gethostname():
        return False
    try:
        pid = int(tags["process.pid"])
    except (KeyError, ValueError):
        return False
    if not pid_alive(pid):
        return True
    recorded = tags.get("process.start", "unknown")
    return recorded != "unknown" and _process_start(pid) not in (None, recorded)


def close_orphaned_runs(
    experiment_id: str, rule: str | None = None, run_name: str | None = None
) -> list[str]:
    """End as KILLED the RUNNING runs whose process is gone; returns their run ids.

    A job killed with SIGKILL (or by the OOM killer, or a node crash) cannot end its own run.
    :func:`stage_run` calls this for runs of its own rule and run name (the rule's wildcards),
    so the rerun of a killed job closes the run that the kill left behind;
    ``astroflow tracking close-orphans`` does it for every rule. Only runs started on this
    host are judged (see :func:`_process_gone`).
    """
    filters = ["attributes.status = 'RUNNING'"]
    if rule is not None:
        filters.append(f"tags.rule = '{rule}'")
    if run_name is not None:
        filters.append(f"attributes.run_name = '{run_name}'")
    client = mlflow.MlflowClient()
    closed = []
    for run in client.search_runs([experiment_id], " and ".join(filters), max_results=1000):
        if not _process_gone(run.data.tags):
            continue
        client.set_tag(
            run.info.run_id,
            "killed_reason",
            f"process {run.data.tags['process.pid']} on {run.data.tags['process.host']} "
            "ended without closing the run (SIGKILL, out of memory or crash)",
        )
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning(
            "MLflow run %s (%s) was left RUNNING by a process that is gone: ended as KILLED",
            run.info.run_id,
            run.info.run_name,
        )
        closed.append(run.info.run_id)
    return closed


class _Terminated(BaseException):
    """Raised from a SIGTERM handler so the run can be closed as KILLED."""


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise _Terminated(f"received signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stage_run(
    cfg: Mapping,
    stage: str,
    run_name: str | None = None,
    dataset_digest: str | None = None,
    upstream_run_ids: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    dataset_source: str | os.PathLike | None = None,
    raw_manifest: Mapping | None = None,
    input_files: Mapping[str, str | os.PathLike] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run of one stage job; it ends FINISHED, FAILED or KILLED, never RUNNING.

    Parameters
    ----------
    cfg : mapping
        The resolved config; its ``tracking`` section chooses the store, and the stage's
        section plus the shared sections are logged as params.
    stage : str
        Stage word (``reduce``, ``train``, ``evaluate``...), also the ``stage`` tag.
    run_name, dataset_digest, upstream_run_ids, tags
        Run name, the digest of the data read, ``{stage: run_id}`` of upstream runs, extra tags.
    dataset_source : path, optional
        Where the dataset with ``dataset_digest`` lives (``index.json``): logged as an MLflow
        dataset input, so the UI shows which data version the run used.
    raw_manifest : mapping, optional
        The raw-archive manifest (``astroflow.lineage.manifest``): logged as an artifact, a
        ``raw_manifest_digest`` tag and a dataset input.
    input_files : mapping, optional
        ``{name: path}`` of further files the results depend on (the truth catalog): their
        sha256 and path become ``input_sha256.<name>`` / ``input_path.<name>`` tags.
    """
    extra = {**_inherited_tags(cfg, upstream_run_ids), **(tags or {})}
    if raw_manifest is not None:
        extra["raw_manifest_digest"] = raw_manifest["digest"]
    for name, path in (input_files or {}).items():
        extra[f"input_sha256.{name}"] = _sha256(path)
        extra[f"input_path.{name}"] = os.path.abspath(path)
    all_tags = lineage_tags(cfg, stage, dataset_digest, upstream_run_ids, extra)
    with _using_store(cfg), _terminate_as_exception():
        experiment = mlflow.set_experiment(cfg["tracking"]["experiment"])
        close_orphaned_runs(experiment.experiment_id, all_tags["rule"], run_name or stage)
        run = mlflow.start_run(run_name=run_name or stage, tags=all_tags)
        try:
            params = flatten(stage_params(cfg, stage))
            # MLflow accepts at most 100 params per batch call.
            items = sorted(params.items())
            for start in range(0, len(items), 100):
                mlflow.log_params(dict(items[start : start + 100]))
            _log_lineage_records(cfg, stage, dataset_digest, dataset_source, raw_manifest)
            log.info(
                "MLflow run %s (%s) in %s", run.info.run_id, stage, redact_uri(tracking_uri(cfg))
            )
            yield run
        except (_Terminated, KeyboardInterrupt):
            mlflow.end_run(status="KILLED")
            raise
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        else:
            mlflow.end_run(status="FINISHED")


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inherited_tags(cfg: Mapping, upstream_run_ids: Mapping[str, str] | None) -> dict[str, str]:
    """Lineage tags of the upstream runs that this run carries on (raw manifest, reduce run).

    An evaluate run thus names the raw archive and the reduce run behind its train run without
    a reader having to walk the chain. An upstream run this store does not know is skipped.
    """
    if not upstream_run_ids:
        return {}
    inherited: dict[str, str] = {}
    with _using_store(cfg):
        client = mlflow.MlflowClient()
        for up_stage, run_id in upstream_run_ids.items():
            try:
                up_tags = client.get_run(run_id).data.tags
            except MlflowException:
                log.warning("upstream %s run %s is not in the tracking store", up_stage, run_id)
                continue
            for key, value in up_tags.items():
                explicit = key.removeprefix("upstream.") in upstream_run_ids
                if key in INHERITED_TAGS or (key.startswith("upstream.") and not explicit):
                    inherited.setdefault(key, value)
    return inherited


def _dataset_input(name: str, digest: str, source: str, context: str) -> None:
    """Log one MLflow dataset input (name, digest, source) for the UI's dataset column."""
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.meta_dataset import MetaDataset

    # The local-file source class is made at import time; resolving a path through the
    # registry would warn that two registered classes of that name both match.
    local = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    dataset = MetaDataset(local(str(source)), name=name, digest=digest[:MLFLOW_DIGEST_CHARS])
    mlflow.log_input(dataset, context=context, tags={"digest_sha256": digest})


def _log_lineage_records(
    cfg: Mapping,
    stage: str,
    dataset_digest: str | None,
    dataset_source: str | os.PathLike | None,
    raw_manifest: Mapping | None,
) -> None:
    """Log the config the job got, the whole pipeline config if exported, and the data inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        records = {STAGE_CONFIG_ARTIFACT: redact_config(cfg)}
        pipeline_json = os.environ.get(PIPELINE_CONFIG_ENV)
        if pipeline_json:
            records[PIPELINE_CONFIG_ARTIFACT] = redact_config(json.loads(pipeline_json))
        if raw_manifest is not None:
            records[RAW_MANIFEST_ARTIFACT] = dict(raw_manifest)
        for artifact, content in records.items():
            path = Path(tmp) / artifact
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n")
            mlflow.log_artifact(str(path), artifact_path=str(Path(artifact).parent))
    if raw_manifest is not None:
        _dataset_input(
            f"raw-{raw_manifest['digest'][:12]}",
            raw_manifest["digest"],
            raw_manifest.get("root") or os.getcwd(),
            context="raw",
        )
    if dataset_digest and dataset_source is not None:
        context = {"train": "training", "evaluate": "evaluation"}.get(stage, stage)
        _dataset_input(
            f"cutouts-{dataset_digest[:12]}",
            dataset_digest,
            os.path.abspath(dataset_source),
            context=context,
        )


def main(argv: list[str] | None = None) -> int:
    """``astroflow tracking init``: create the store once, before parallel jobs;
    ``astroflow tracking close-orphans``: end as KILLED the runs of killed jobs."""
    parser = argparse.ArgumentParser(prog="astroflow tracking", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create/upgrade the tracking store and experiment")
    add_config_args(init)
    init.add_argument("--out", required=True, help="JSON file recording the store that was set up")
    orphans = sub.add_parser(
        "close-orphans", help="end as KILLED the RUNNING runs whose process (on this host) is gone"
    )
    add_config_args(orphans)
    args = parser.parse_args(argv)
    setup_logging()
    cfg = resolve_config(args)
    if args.command == "close-orphans":
        with _using_store(cfg):
            experiment = mlflow.get_experiment_by_name(cfg["tracking"]["experiment"])
            closed = close_orphaned_runs(experiment.experiment_id) if experiment else []
        log.info("%d orphaned run(s) ended as KILLED", len(closed))
        return 0
    info = init_store(cfg)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    log.info("tracking store ready: %s (experiment %s)", info["uri"], info["experiment"])
    return 0
