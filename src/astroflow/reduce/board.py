"""The detection catalog, posted by the field job for exposure tasks that started before it.

Every exposure's photometry and cutouts need the field's catalog, which exists only once the
detection exposure is calibrated and searched. Waiting for it before starting any other
exposure would leave all but one worker idle for that time, so the field job starts exposure
tasks first: each calibrates its exposures, then takes the catalog from this board. The
board is a file in a temporary directory beside the field's outputs (so workers on other
nodes of a shared filesystem see it too), written atomically once. Closing the board removes
the directory, which tells any task still waiting that no catalog will come (the job failed).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from astroflow.processes import pid_alive
from astroflow.reduce.cache import read_records, write_records
from astroflow.reduce.detect import Catalog

_N_COLUMNS = len(dataclasses.fields(Catalog))
#: How often a waiting task looks for the catalog [s].
POLL_S = 0.002


class BoardClosed(RuntimeError):
    """The field job closed the board without posting a catalog (it is failing)."""


class CatalogBoard:
    """Parent side: ``with CatalogBoard(directory, field) as board: ... board.post(catalog)``.

    The directory is ``.<field>.catalog-board-<pid>-<random>``. A job killed before closing
    its board (a SLURM time limit) leaves it behind; the next job of the field removes it.
    Only one job reduces a field at a time (Snakemake's rule), so the field in the name keeps
    other fields' live boards safe even on a filesystem shared by several nodes.
    """

    def __init__(self, directory: str | Path, field: str):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        prefix = f".{field}.catalog-board-"
        for left in directory.glob(f"{prefix}*"):
            pid = left.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)
        self._dir = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=directory))
        #: Where tasks look for the catalog (give it to them).
        self.path = str(self._dir / "catalog")

    def post(self, catalog: Catalog) -> None:
        post_catalog(self.path, catalog)

    def __enter__(self) -> CatalogBoard:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def post_catalog(path: str, catalog: Catalog) -> None:
    """Post ``catalog`` on the board at ``path`` (from the field job or a worker)."""
    write_records(Path(path), catalog.columns())


_TAKEN: dict[str, Catalog] = {}


def take_catalog(path: str, wait: bool = True) -> Catalog | None:
    """Worker side: the catalog posted at ``path`` (read once per process), waiting for it
    unless ``wait`` is false (then None while it is not posted).

    Raises
    ------
    BoardClosed
        When the board was closed without a catalog.
    """
    if path in _TAKEN:
        return _TAKEN[path]
    file = Path(path)
    while not file.is_file():
        if not file.parent.is_dir():
            raise BoardClosed(f"{path}: the field job closed the board before posting a catalog")
        if not wait:
            return None
        time.sleep(POLL_S)
    _TAKEN.clear()
    _TAKEN[path] = Catalog(*read_records(file, _N_COLUMNS))
    return _TAKEN[path]
