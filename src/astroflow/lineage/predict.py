"""``astroflow predict --model M INPUT``: p_galaxy for every object of a cutout store.

The model is named as a user knows it: a registered name (``astroflow-kim_brunner``, latest
version) or ``name/version``, an MLflow URI (``runs:/<id>/model``, ``models:/name/3``) or a
model directory (``results/train/<model>/model``). The model carries its own crop and
normalisation, so the cutouts go in as stored (nJy) and are never rescaled here.

The input is one field store (``<field>.zarr``, with ``<field>.objects.parquet`` beside it
when present for object ids and positions) or a dataset index (``index.json``: every field).
No labels are needed: an archive reduced with ``data.labels: null`` is scored like any other.
The output is parquet or CSV by extension: ``object_id``, ``field``, ``row``, ``ra``, ``dec``,
``p_galaxy``.

Unless ``--no-tracking`` is given, the job is one MLflow run (stage ``predict``, through
:func:`astroflow.tracking.stage_run`, so it carries the lineage tags of every stage run):
``upstream.train`` names the run that trained the model, ``upstream.reduce`` the reduce run
that made the dataset (found by its digest when the store has it), ``dataset_digest`` and a
``cutouts-<digest>`` dataset input the cutouts scored; ``model.ref``, ``model.uri``,
``model.name`` and ``model.version`` say which model, pinned to the version that was loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy, pandas and MLflow are imported where used: the workflow's parse
    import numpy as np  # imports output_name and must stay fast
    import pandas as pd

log = logging.getLogger(__name__)

#: Columns copied from the object table next to p_galaxy when present.
ID_COLUMNS = ("object_id", "field", "row", "ra", "dec")
#: The stage word: MLflow ``stage`` tag, config section, ``results/predict/``, ``logs/predict/``.
STAGE = "predict"


def output_name(ref: str) -> str:
    """The file stem of the workflow's ``results/predict/<stem>.parquet`` for a model reference:
    ``ref`` with every run of characters other than letters, digits and ``_.+-`` as ``_``
    (``astroflow-kim_brunner/3`` -> ``astroflow-kim_brunner_3``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", ref).strip("._") or "model"


def trained_by_workflow(ref: str, models: list[str], prefix: str) -> str | None:
    """The ``train.models`` entry that ``ref`` names when the workflow itself trains that
    model: its registered name ``<prefix>-<model>`` (latest version) or its directory
    ``results/train/<model>/model``. The predict job then waits for the train job; None
    for any other model (a pinned version, another name, a URI, a directory elsewhere)."""
    ref = ref.rstrip("/")
    for model in models:
        name = f"{prefix}-{model}"
        trained = (name, f"{name}/latest", f"models:/{name}/latest", f"results/train/{model}/model")
        if ref in trained:
            return model
    return None


@dataclass(frozen=True)
class ModelRef:
    """A model reference resolved once, so that what is loaded is what the run records.

    ``uri`` is a model directory or an MLflow URI, pinned to a version where the reference
    named a registered model's latest version or an alias; ``run_id`` is the run that logged
    (trained) it, None where nothing says (a copied directory without ``run.json``).
    """

    ref: str
    uri: str | Path
    run_id: str | None = None
    name: str | None = None
    version: str | None = None


def model_uri(ref: str) -> str | Path:
    """A model directory as a Path, anything else as an MLflow model URI.

    ``name`` -> ``models:/name/latest``; ``name/3`` -> ``models:/name/3``; ``runs:/...``,
    ``models:/...`` and other URIs are kept.
    """
    if Path(ref, "MLmodel").exists():
        return Path(ref)
    if ":/" in ref:
        return ref
    name, _, version = ref.partition("/")
    return f"models:/{name}/{version or 'latest'}"


def _directory_run_id(model_dir: Path) -> str | None:
    """The run that made a model directory: its MLmodel's ``run_id`` (a downloaded logged
    model), else ``run.json`` beside it (``results/train/<model>/model``: the train job's)."""
    import yaml

    try:
        run_id = (yaml.safe_load((model_dir / "MLmodel").read_text()) or {}).get("run_id")
    except (OSError, yaml.YAMLError):
        run_id = None
    run_json = model_dir.parent / "run.json"
    if not run_id and run_json.is_file():
        try:
            run_id = json.loads(run_json.read_text()).get("run_id")
        except (json.JSONDecodeError, AttributeError):
            run_id = None
    return run_id or None


def resolve_model(ref: str, tracking_uri: str | None = None) -> ModelRef:
    """Which model ``ref`` names, and the run that trained it.

    A registered model's ``latest`` version or an alias is pinned to its version number here,
    so a version registered while this job runs cannot change what the run records.

    Raises
    ------
    FileNotFoundError
        When the store does not know the registered model, version, alias or logged model.
    """
    uri = model_uri(ref)
    if isinstance(uri, Path):
        return ModelRef(ref, uri, _directory_run_id(uri))
    if uri.startswith("runs:/"):
        return ModelRef(ref, uri, uri.removeprefix("runs:/").split("/", 1)[0] or None)
    if not uri.startswith("models:/"):
        return ModelRef(ref, uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    from astroflow import tracking
    from astroflow.lineage import records

    store = records.store_uri(tracking_uri)
    client = mlflow.MlflowClient(store, registry_uri=store)
    rest = uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            found = client.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            if version == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise FileNotFoundError(
                        f"model {ref!r}: no registered model {name!r} in "
                        f"{tracking.redact_uri(client.tracking_uri)}")
                found = max(versions, key=lambda v: int(v.version))
            else:
                found = client.get_model_version(name, version)
        else:  # models:/m-<id>: a logged model, not a registered one
            logged = client.get_logged_model(rest)
            return ModelRef(ref, uri, logged.source_run_id)
    except MlflowException as exc:
        raise FileNotFoundError(f"model {ref!r} ({uri}) not found in "
                                f"{tracking.redact_uri(client.tracking_uri)}: {exc.message}"
                                ) from exc
    return ModelRef(ref, f"models:/{found.name}/{found.version}", found.run_id or None,
                    found.name, str(found.version))


def _artifact_location(model: ModelRef, store: str) -> str:
    """Where a model URI's files lie (a path or an artifact-store URI), asked of ``store``.

    MLflow's own ``models:/`` download resolves the registry through the process-wide URI
    in places, whatever URI it is passed (in the full test suite it looked in another
    test's store: "Registered Model ... not found"), so the location is resolved here, with
    a client made for ``store``, and only plain files are downloaded.
    """
    import mlflow

    client = mlflow.MlflowClient(store, registry_uri=store)
    uri = str(model.uri)
    if model.name and model.version:
        return client.get_model_version_download_uri(model.name, model.version)
    if uri.startswith("models:/"):  # a logged model, models:/m-<id>
        return client.get_logged_model(uri.removeprefix("models:/")).artifact_location
    if uri.startswith("runs:/"):  # a run's logged model by name, or an artifact folder
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        run = client.get_run(run_id)
        logged = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{path}'")
        if logged:
            return logged[0].artifact_location
        return f"{run.info.artifact_uri.rstrip('/')}/{path}"
    return uri


def load_model(model: ModelRef | str, tracking_uri: str | None = None):
    """The ``GalaxyClassifier`` for a model reference (downloaded first when it is a URI)."""
    import mlflow

    from astroflow.lineage import records
    from astroflow.train.inference import load_classifier

    if isinstance(model, str):
        model = resolve_model(model, tracking_uri)
    if isinstance(model.uri, Path):
        return load_classifier(model.uri)
    store = records.store_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=_artifact_location(model, store), dst_path=tmp)
        except mlflow.exceptions.MlflowException as exc:
            raise FileNotFoundError(
                f"model {model.ref!r} ({model.uri}) not found: {exc.message}") from exc
        # The exported program is read into memory here; the download can then go.
        return load_classifier(local)


def dataset_digest(source: Path) -> str | None:
    """The digest of what ``source`` holds: an index's dataset digest (what the reduce run is
    tagged with), a field store's own digest; None where it records none."""
    if source.suffix == ".json":
        return json.loads(source.read_text()).get("digest")
    import zarr

    return zarr.open_group(str(source), mode="r").attrs.get("digest")


def find_reduce_run(store: str, experiment: str, digest: str) -> str | None:
    """The newest finished reduce run of ``experiment`` in ``store`` that made the dataset
    with ``digest``, if any (``index.json`` does not record the reduce run id)."""
    import mlflow

    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(f"tags.stage = 'reduce' and tags.dataset_digest = '{digest}' "
                       "and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def field_sources(path: Path) -> list[tuple[str, Path, Path | None]]:
    """``(field, store, objects table or None)`` for a store or every field of an index."""
    if path.suffix == ".json":
        try:
            index = json.loads(path.read_text())
            entries = index["fields"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}: not a dataset index.json ({exc})") from exc
        return [(f, path.parent / e["store"], path.parent / e["objects"])
                for f, e in sorted(entries.items())]
    if path.suffix == ".zarr" and path.is_dir():
        objects = path.with_name(path.name.removesuffix(".zarr") + ".objects.parquet")
        return [(path.name.removesuffix(".zarr"), path, objects if objects.exists() else None)]
    raise ValueError(f"{path}: expected a cutout store (<field>.zarr) or a dataset index.json")


def batches(store: Path, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, images)`` slices of a store's ``images`` array, in row order."""
    import numpy as np
    import zarr

    try:
        images = zarr.open_group(str(store), mode="r")["images"]
    except (KeyError, FileNotFoundError) as exc:
        raise ValueError(f"{store}: no 'images' array ({exc})") from exc
    for start in range(0, images.shape[0], batch_size):
        yield start, np.asarray(images[start : start + batch_size])


def predict(
    classifier, source: Path, batch_size: int = 1024, tta: bool = False
) -> pd.DataFrame:
    """p_galaxy of every object of the store(s) at ``source``, with ids where known."""
    import numpy as np
    import pandas as pd

    frames = []
    for field, store, objects in field_sources(Path(source)):
        parts, done = [], 0
        for start, images in batches(store, batch_size):
            parts.append(classifier.predict_proba(images, tta=tta))
            done = start + len(images)
            log.info("%s: scored %d objects", field, done)
        p = np.concatenate(parts) if parts else np.zeros(0)
        if objects is not None:
            table = pd.read_parquet(objects, columns=None)
            if len(table) != len(p):
                raise ValueError(f"{objects}: {len(table)} rows but {store} holds {len(p)} cutouts")
            out = table[[c for c in ID_COLUMNS if c in table.columns]].copy()
        else:
            out = pd.DataFrame({"field": field, "row": np.arange(len(p))})
        out["p_galaxy"] = p
        frames.append(out)
    return pd.concat(frames, ignore_index=True)


def write_table(table: pd.DataFrame, out: Path) -> None:
    """Parquet for ``.parquet``, CSV for ``.csv``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        table.to_csv(out, index=False)
    else:
        raise ValueError(f"{out}: output must end in .parquet or .csv")


def build_parser() -> argparse.ArgumentParser:
    from astroflow.cli_common import add_config_args

    parser = argparse.ArgumentParser(prog="astroflow predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="registered name[/version], runs:/ or models:/ URI, or model dir")
    parser.add_argument("input", type=Path, help="<field>.zarr cutout store or index.json")
    parser.add_argument("-o", "--out", type=Path, default=Path("predictions.parquet"),
                        help="output table (.parquet or .csv)")
    add_config_args(parser)  # optional here: the tracking section (store, experiment)
    parser.add_argument("--tracking-uri", default=None,
                        help="store holding the registered models and the predict run (default: "
                        "MLFLOW_TRACKING_URI, else the config's tracking.uri, else "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--no-tracking", action="store_true",
                        help="do not open an MLflow run for this prediction")
    parser.add_argument("--tta", action="store_true", help="average over 8 rotations/flips")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _config(args: argparse.Namespace) -> dict:
    """The config of the run: ``--config``/``--config-json`` or the defaults, with the
    ``predict`` section set to what this command does and ``--tracking-uri`` applied."""
    from astroflow import config as config_mod
    from astroflow.cli_common import resolve_config

    given = args.config is not None or args.config_json is not None
    cfg = resolve_config(args) if given else config_mod.validate({}, source="astroflow predict")
    cfg["predict"] = {"model": args.model, "tta": args.tta, "batch_size": args.batch_size}
    if args.tracking_uri:
        cfg["tracking"] = {**cfg["tracking"], "uri": args.tracking_uri}
    return cfg


@contextlib.contextmanager
def _tracking_uri_env(uri: str | None) -> Iterator[None]:
    """``MLFLOW_TRACKING_URI`` set to an explicit ``--tracking-uri`` for the block: it wins over
    the environment's, which :func:`astroflow.tracking.tracking_uri` would prefer otherwise."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def run(cfg: dict, source: Path, out: Path, track: bool = True) -> pd.DataFrame:
    """Score every object of ``source`` with ``cfg["predict"]``'s model and write ``out``.

    With ``track``, the work is one MLflow run of stage ``predict`` linked to the model's run
    and to the dataset (see the module docstring); its metrics are ``n_objects`` and
    ``galaxy_fraction`` (p_galaxy > 0.5).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from astroflow import tracking
    from astroflow.lineage import records

    settings = cfg["predict"]
    source = Path(source)
    field_sources(source)  # a store or an index, else a ValueError naming it
    store = tracking.tracking_uri(cfg)
    if track:
        try:  # never create an empty store where the default one is absent
            records.store_uri(store)
        except records.LineageError as exc:
            raise records.LineageError(
                f"{exc}; or --no-tracking to predict without an MLflow run") from exc
    model = resolve_model(settings["model"], store)
    classifier = load_model(model, store)
    if not track:
        table = predict(classifier, source, settings["batch_size"], settings["tta"])
        write_table(table, out)
        return table
    digest = dataset_digest(source)
    reduce_run = find_reduce_run(store, cfg["tracking"]["experiment"], digest) if digest else None
    tags = {
        "model.ref": model.ref,
        "model.uri": os.path.abspath(model.uri) if isinstance(model.uri, Path) else model.uri,
        "output_path": os.path.abspath(out),
    }
    tags.update({f"model.{k}": v for k, v in (("name", model.name), ("version", model.version))
                 if v})
    if model.run_id:
        # upstream.train as a plain tag: stage_run copies tags from its upstream runs, and the
        # train run's raw_manifest_digest names the archive the model was trained on, which
        # need not be the one scored here; the reduce run's (passed on below) is.
        tags["upstream.train"] = model.run_id
        try:
            train_tags = mlflow.MlflowClient(store).get_run(model.run_id).data.tags
        except MlflowException:  # a run of another store: nothing more to say about it
            train_tags = {}
        tags.update({k: train_tags[k] for k in ("model", "task") if k in train_tags})
        if "dataset_digest" in train_tags:
            tags["model.dataset_digest"] = train_tags["dataset_digest"]
    with tracking.stage_run(
        cfg,
        stage=STAGE,
        run_name=f"{STAGE}-{output_name(model.ref)}",
        dataset_digest=digest,
        upstream_run_ids={"reduce": reduce_run} if reduce_run else {},
        tags=tags,
        dataset_source=source,
    ):
        table = predict(classifier, source, settings["batch_size"], settings["tta"])
        write_table(table, out)
        p = table["p_galaxy"].to_numpy()
        mlflow.log_metrics({"n_objects": float(len(table)),
                            "galaxy_fraction": float((p > 0.5).mean()) if len(p) else 0.0})
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``astroflow predict``."""
    from astroflow.cli_common import setup_logging
    from astroflow.config import ConfigError
    from astroflow.lineage.records import LineageError

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.out.suffix not in {".parquet", ".csv"}:
        print(f"astroflow predict: {args.out}: output must end in .parquet or .csv",
              file=sys.stderr)
        return 2
    try:
        cfg = _config(args)
        with _tracking_uri_env(args.tracking_uri):
            table = run(cfg, args.input, args.out, track=not args.no_tracking)
    except (FileNotFoundError, ValueError, LineageError, ConfigError) as exc:
        if args.verbose:
            raise
        print(f"astroflow predict: {exc}", file=sys.stderr)
        return 1
    log.info("wrote p_galaxy of %d objects to %s", len(table), args.out)
    return 0
