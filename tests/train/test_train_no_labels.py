"""``astroflow train`` on a dataset without one labelled object stops in one line that says so,
naming the labels catalog (or ``data.labels: null``), not with advice about the split."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import zarr

from astroflow.cli import main as cli_main

from .conftest import write_reduce_outputs


def _unlabelled(root, labels: str | None):
    """A fixture dataset whose objects are all unlabelled, its stores recording ``labels`` as
    the catalog they were matched to (None: reduced with ``data.labels: null``)."""
    index_path = write_reduce_outputs(root, n_per_field=40)
    for entry in json.loads(index_path.read_text())["fields"].values():
        objects = root / entry["objects"]
        pd.read_parquet(objects).assign(label=-1).astype({"label": "int8"}).to_parquet(objects)
        group = zarr.open_group(root / entry["store"], mode="r+")
        group.attrs["provenance"] = {**group.attrs["provenance"], "labels": labels}
    return index_path


@pytest.mark.parametrize(
    ("labels", "task", "says"),
    [
        (None, "classification", "reduced without a labels catalog (data.labels: null)"),
        (None, "morphology", "reduced without a labels catalog (data.labels: null)"),
        ("/data/mycam/spec.csv", "classification",
         "matched a star or galaxy of the labels catalog /data/mycam/spec.csv (data.labels)"),
    ],
)
def test_train_without_labels_says_so_in_one_line(
    tmp_path, monkeypatch, capsys, train_cfg, labels, task, says
):
    monkeypatch.chdir(tmp_path)
    index_path = _unlabelled(tmp_path / "reduce", labels)
    argv = ["train", "--config-json", json.dumps(train_cfg), "--model", "kim_brunner",
            "--task", task, "--index", str(index_path), "--out-dir", str(tmp_path / "out")]
    assert cli_main(argv) == 1

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"astroflow train: error: {index_path}: no labels: "), err
    assert says in err and "80 objects" in err
    assert "cell_arcsec" not in err and "add fields" not in err
    if labels:
        assert "data.labels_columns" in err
    else:
        assert "astroflow predict" in err
    assert not (tmp_path / "mlflow.db").exists()  # stopped before any MLflow run
    assert not (tmp_path / "out" / "split.parquet").exists()
