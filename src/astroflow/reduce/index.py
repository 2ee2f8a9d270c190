"""Gather all reduced fields into the dataset index, object table and quarantine list.

The dataset digest is the sha256 over the sorted field digests (each covering a field's image
bytes and object table), so an unchanged archive keeps its digest and any change anywhere
gives a new one. One MLflow run records the reduce stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd

from astroflow.reduce.store import open_field_store, write_parquet, write_text

log = logging.getLogger(__name__)


def dataset_digest(field_digests: dict[str, str]) -> str:
    """sha256 over ``field:digest`` lines in field order."""
    blob = "\n".join(f"{f}:{d}" for f, d in sorted(field_digests.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def build_index(
    cfg: dict,
    field_dir: str | Path,
    fields: list[str],
    out_dir: str | Path,
    track: bool = True,
    unusable: list[dict] | None = None,
) -> dict:
    """Write ``index.json``, ``objects.parquet`` and ``quarantine.json`` under ``out_dir``.

    Parameters
    ----------
    cfg : dict
        Resolved config.
    field_dir : str or Path
        Directory holding ``<field>.zarr``, ``<field>.objects.parquet``,
        ``<field>.quarantine.json``.
    fields : list of str
        Fields to gather (in this order in the object table).
    out_dir : str or Path
        Destination (``results/reduce``).
    track : bool
        Log one MLflow run for the reduce stage.
    unusable : list of dict, optional
        Quarantine entries of the raw files set aside before the field jobs (by the plan,
        :mod:`astroflow.io.plan`, and by the calibration); they head ``quarantine.json``, so
        no file goes unnamed.

    Returns
    -------
    dict
        The index.
    """
    field_dir, out_dir = Path(field_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, tables, quarantine = {}, [], list(unusable or [])
    dask_specs: dict[str, dict] = {}
    for field in fields:
        store = field_dir / f"{field}.zarr"
        objects = field_dir / f"{field}.objects.parquet"
        qfile = field_dir / f"{field}.quarantine.json"
        for path in (store, objects, qfile):
            if not path.exists():
                raise FileNotFoundError(f"{path} missing: field {field} has not been reduced")
        attrs = dict(open_field_store(store).attrs)
        table = pd.read_parquet(objects)
        if len(table) != attrs["n_objects"]:
            raise ValueError(
                f"{objects}: {len(table)} rows but {store} holds {attrs['n_objects']} objects"
            )
        entries[field] = {
            "digest": attrs["digest"],
            "n_objects": int(attrs["n_objects"]),
            "store": os.path.relpath(store, out_dir),
            "objects": os.path.relpath(objects, out_dir),
        }
        tables.append(table)
        if attrs.get("dask"):
            dask_specs[field] = attrs["dask"]
        quarantine.extend(json.loads(qfile.read_text()))
    digest = dataset_digest({f: e["digest"] for f, e in entries.items()})
    index = {
        "fields": entries,
        "digest": digest,
        "n_objects": sum(e["n_objects"] for e in entries.values()),
        "n_quarantined": len(quarantine),
        "bands": list(cfg["instrument"]["bands"]),
    }
    all_objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    write_parquet(out_dir / "objects.parquet", all_objects)
    write_text(out_dir / "quarantine.json", json.dumps(quarantine, indent=2) + "\n")
    write_text(out_dir / "index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    log.info(
        "dataset %s: %d objects in %d fields, %d file(s) quarantined",
        digest[:12],
        index["n_objects"],
        len(entries),
        len(quarantine),
    )
    if track:
        _track(cfg, index, out_dir, dask_specs)
    return index


def _track(cfg: dict, index: dict, out_dir: Path, dask_specs: dict | None = None) -> None:
    import mlflow

    from astroflow import tracking
    from astroflow.lineage.manifest import manifest_for_index

    with tracking.stage_run(
        cfg, stage="reduce", run_name="reduce", dataset_digest=index["digest"], upstream_run_ids={},
        dataset_source=out_dir / "index.json", raw_manifest=manifest_for_index(index, out_dir),
    ) as run:
        mlflow.log_metric("n_objects", index["n_objects"])
        mlflow.log_metric("n_quarantined", index["n_quarantined"])
        mlflow.log_metric("n_fields", len(index["fields"]))
        if dask_specs:
            # where the fields were reduced (threads / LocalCluster / SLURM), from the stores
            schedulers = sorted({spec.get("scheduler", "?") for spec in dask_specs.values()})
            mlflow.log_param("dask_scheduler", ",".join(schedulers))
            mlflow.log_dict(dask_specs, "dask_spec.json")
        mlflow.log_artifact(str(out_dir / "quarantine.json"))
        mlflow.log_artifact(str(out_dir / "index.json"))
        log.info("MLflow run %s", run.info.run_id)
