"""``astroflow predict --model M INPUT``: p_galaxy for every object of a cutout store.

The model is named as a user knows it: a registered name (``astroflow-kim_brunner``, latest
version) or ``name/version``, an MLflow URI (``runs:/<id>/model``, ``models:/name/3``) or a
model directory (``results/train/<model>/model``). The model carries its own crop and
normalisation, so the cutouts go in as stored (nJy) and are never rescaled here.

The input is one field store (``<field>.zarr``, with ``<field>.objects.parquet`` beside it
when present for object ids and positions) or a dataset index (``index.json``: every field).
The output is parquet or CSV by extension: ``object_id``, ``field``, ``row``, ``ra``, ``dec``,
``p_galaxy``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Columns copied from the object table next to p_galaxy when present.
ID_COLUMNS = ("object_id", "field", "row", "ra", "dec")


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


def load_model(ref: str, tracking_uri: str | None = None):
    """The ``GalaxyClassifier`` for a model reference (downloaded first when it is a URI)."""
    import mlflow

    from astroflow.lineage import records
    from astroflow.train.inference import load_classifier

    uri = model_uri(ref)
    if isinstance(uri, Path):
        return load_classifier(uri)
    mlflow.set_tracking_uri(records.store_uri(tracking_uri))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except mlflow.exceptions.MlflowException as exc:
            raise FileNotFoundError(f"model {ref!r} ({uri}) not found: {exc.message}") from exc
        # The exported program is read into memory here; the download can then go.
        return load_classifier(local)


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
    parser = argparse.ArgumentParser(prog="astroflow predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="registered name[/version], runs:/ or models:/ URI, or model dir")
    parser.add_argument("input", type=Path, help="<field>.zarr cutout store or index.json")
    parser.add_argument("-o", "--out", type=Path, default=Path("predictions.parquet"),
                        help="output table (.parquet or .csv)")
    parser.add_argument("--tracking-uri", default=None,
                        help="store holding registered models (default: MLFLOW_TRACKING_URI, "
                        "else sqlite:///mlflow.db)")
    parser.add_argument("--tta", action="store_true", help="average over 8 rotations/flips")
    parser.add_argument("--batch-size", type=int, default=1024)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``astroflow predict``."""
    from astroflow.cli_common import setup_logging
    from astroflow.lineage.records import LineageError

    args = build_parser().parse_args(argv)
    setup_logging()
    if args.out.suffix not in {".parquet", ".csv"}:
        print(f"astroflow predict: {args.out}: output must end in .parquet or .csv",
              file=sys.stderr)
        return 2
    try:
        classifier = load_model(args.model, args.tracking_uri)
        table = predict(classifier, args.input, args.batch_size, args.tta)
    except (FileNotFoundError, ValueError, LineageError) as exc:
        print(f"astroflow predict: {exc}", file=sys.stderr)
        return 1
    write_table(table, args.out)
    log.info("wrote p_galaxy of %d objects to %s", len(table), args.out)
    return 0
