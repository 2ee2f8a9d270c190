"""The catalog board: exposure tasks started before detection take the catalog from it once
it is posted, and learn that none will come when the field job closes it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from astroflow.reduce.board import BoardClosed, CatalogBoard, take_catalog
from astroflow.reduce.detect import Catalog


def _catalog(n: int) -> Catalog:
    values = np.arange(n, dtype=float)
    return Catalog(*(values + k for k in range(9)))


def test_a_task_waits_for_the_catalog_and_takes_it_whole(tmp_path):
    posted = _catalog(5)
    with CatalogBoard(tmp_path, "F00") as board:
        assert take_catalog(board.path, wait=False) is None
        timer = threading.Timer(0.05, board.post, args=(posted,))
        timer.start()
        taken = take_catalog(board.path)  # waits for the timer's post
        timer.join()
        for name in Catalog.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(taken, name), getattr(posted, name))
        assert take_catalog(board.path, wait=False) is taken  # read once per process
    assert not list(tmp_path.iterdir())  # the board leaves nothing behind


def test_closing_the_board_unblocks_waiting_tasks(tmp_path):
    errors = []

    def task(path):
        try:
            take_catalog(path)
        except BoardClosed as exc:
            errors.append(exc)

    with CatalogBoard(tmp_path, "F00") as board:
        waiter = threading.Thread(target=task, args=(board.path,))
        waiter.start()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and len(errors) == 1
    with pytest.raises(BoardClosed, match="closed the board before posting"):
        take_catalog(board.path)


def test_a_board_left_by_a_killed_job_is_removed_by_the_next_job_of_its_field(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # a process that has exited
    left = tmp_path / f".F00.catalog-board-{pid}-x1y2"
    other_field = tmp_path / f".F01.catalog-board-{pid}-x1y2"
    for path in (left, other_field):
        path.mkdir()
        (path / "catalog").write_bytes(b"partial")
    with CatalogBoard(tmp_path, "F00") as board:
        assert not left.exists() and other_field.exists()  # another field's job may be alive
        assert Path(board.path).parent.name.startswith(f".F00.catalog-board-{os.getpid()}-")
