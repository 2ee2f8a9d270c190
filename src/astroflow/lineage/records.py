"""Fetch stage runs, their upstream chain and the files they recorded from an MLflow store.

Every command of :mod:`astroflow.lineage` starts here: which store (``--tracking-uri``,
``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the current directory, where the workflow puts
it), which run (a full id or an unambiguous prefix of one, as the ``runs`` table prints them),
and what the run's lineage says (tags, the upstream reduce/train runs, JSON artifacts).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from astroflow import tracking

# Artifact downloads here are a few small JSON files: no progress bars on stderr.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "astroflow"
#: Most runs searched when resolving an id prefix or listing runs.
MAX_RUNS = 1000


class LineageError(RuntimeError):
    """A run, store or record that the lineage commands need is missing or inconsistent."""


def store_uri(uri: str | None = None) -> str:
    """The tracking URI to read: the argument, ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` here.

    Raises
    ------
    LineageError
        For the default sqlite file when it does not exist (rather than creating an empty one).
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            raise LineageError(
                f"{path}: no MLflow store here; run in the pipeline's working directory or "
                "pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
            )
    return uri


def client(uri: str | None = None) -> mlflow.MlflowClient:
    """An MLflow client on :func:`store_uri`."""
    return mlflow.MlflowClient(tracking_uri=store_uri(uri))


def experiment_ids(mlclient: mlflow.MlflowClient, experiment: str) -> list[str]:
    """The id of the named experiment, as the list ``search_runs`` wants."""
    exp = mlclient.get_experiment_by_name(experiment)
    if exp is None:
        raise LineageError(f"experiment {experiment!r} not found in {mlclient.tracking_uri}")
    return [exp.experiment_id]


def search(
    mlclient: mlflow.MlflowClient,
    experiment: str = DEFAULT_EXPERIMENT,
    filter_string: str = "",
    max_results: int = MAX_RUNS,
) -> list[Run]:
    """Runs of the experiment, newest first."""
    return list(mlclient.search_runs(
        experiment_ids(mlclient, experiment),
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    ))


def find_run(mlclient: mlflow.MlflowClient, ref: str, experiment: str = DEFAULT_EXPERIMENT) -> Run:
    """The run with id ``ref``, or the one run of the experiment whose id starts with it."""
    if len(ref) == 32:
        try:
            return mlclient.get_run(ref)
        except MlflowException as exc:
            raise LineageError(f"run {ref} not found in {mlclient.tracking_uri}") from exc
    matches = [r for r in search(mlclient, experiment) if r.info.run_id.startswith(ref)]
    if len(matches) != 1:
        how = "no run" if not matches else f"{len(matches)} runs"
        raise LineageError(f"{how} of experiment {experiment!r} in {mlclient.tracking_uri} "
                           f"with an id starting {ref!r}")
    return matches[0]


def upstream_chain(mlclient: mlflow.MlflowClient, run: Run) -> dict[str, Run]:
    """``{stage: run}`` for the run and every upstream run its ``upstream.*`` tags name."""
    chain = {run.data.tags.get("stage", "unknown"): run}
    todo = [run]
    while todo:
        current = todo.pop()
        for key, run_id in current.data.tags.items():
            stage = key.removeprefix("upstream.")
            if key.startswith("upstream.") and stage not in chain:
                try:
                    chain[stage] = mlclient.get_run(run_id)
                except MlflowException as exc:
                    raise LineageError(f"run {current.info.run_id} names upstream {stage} run "
                                       f"{run_id}, which {mlclient.tracking_uri} lacks") from exc
                todo.append(chain[stage])
    return chain


def json_artifact(mlclient: mlflow.MlflowClient, run: Run, artifact: str) -> dict | None:
    """A JSON artifact of the run as a dict, or None when the run did not record it."""
    folder = str(Path(artifact).parent)
    listed = {a.path for a in mlclient.list_artifacts(run.info.run_id, folder)}
    if artifact not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlclient.download_artifacts(run.info.run_id, artifact, tmp)
        return json.loads(Path(local).read_text())


def stage_config(mlclient: mlflow.MlflowClient, run: Run) -> dict:
    """The config the run's job received (``config/stage.json``)."""
    cfg = json_artifact(mlclient, run, tracking.STAGE_CONFIG_ARTIFACT)
    if cfg is None:
        raise LineageError(f"run {run.info.run_id} ({run.data.tags.get('stage')}) has no "
                           f"{tracking.STAGE_CONFIG_ARTIFACT} artifact: recorded by an older "
                           "astroflow, it cannot be reproduced automatically")
    return cfg
