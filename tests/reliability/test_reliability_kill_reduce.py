"""`kill -9` of `astroflow reduce field` while it writes its store, then a rerun.

The store is built in a temporary sibling (``.F00.zarr.tmp-<pid>``) and renamed into place, so
a job killed while writing leaves no ``F00.zarr`` that could be taken for a finished one, and
the rerun's outputs are byte-identical to those of a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_archive as ra
import zarr

from astroflow.reduce.stage import main as reduce_main

START_TIMEOUT_S = 240.0


def _tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (the store's exact bytes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _outputs(out: Path) -> dict:
    field = ra.FIELD
    return {
        "store": _tree_digests(out / f"{field}.zarr"),
        "objects": (out / f"{field}.objects.parquet").read_bytes(),
        "quarantine": (out / f"{field}.quarantine.json").read_bytes(),
        "digest": zarr.open_group(str(out / f"{field}.zarr"), mode="r").attrs["digest"],
    }


def _kill_while_writing(argv: list[str], out: Path, log_path: Path) -> Path:
    """Start the CLI, SIGKILL it as soon as its temporary store appears; return that path."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "astroflow.cli", "reduce", *argv], stdout=log, stderr=log
        )
    tmp = out / f".{ra.FIELD}.zarr.tmp-{proc.pid}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        # Spin without sleeping: the store of this small field is written in well under a
        # second, and the kill must land inside that window.
        while not tmp.exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"reduce field finished (rc {proc.returncode}) before its temporary store "
                    f"was seen; log:\n{log_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {tmp} after {START_TIMEOUT_S} s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return tmp


@pytest.fixture(scope="module")
def killed_and_rerun(archive, masters, tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_reduce")
    reference, out = root / "reference", root / "out"
    assert reduce_main(ra.field_argv(archive.cfg, archive.science, masters, archive.labels,
                                     reference)) == 0
    argv = ra.field_argv(archive.cfg, archive.science, masters, archive.labels, out)
    tmp = _kill_while_writing(argv, out, root / "killed.log")
    after_kill = {p.name for p in out.iterdir()}
    assert reduce_main(argv) == 0
    return {"reference": reference, "out": out, "tmp": tmp, "after_kill": after_kill}


def test_killed_job_leaves_no_finished_looking_store(killed_and_rerun):
    after_kill = killed_and_rerun["after_kill"]
    assert killed_and_rerun["tmp"].name in after_kill  # it was killed mid-write
    assert f"{ra.FIELD}.zarr" not in after_kill
    assert f"{ra.FIELD}.objects.parquet" not in after_kill


def test_rerun_after_kill_is_byte_identical(killed_and_rerun):
    assert _outputs(killed_and_rerun["out"]) == _outputs(killed_and_rerun["reference"])


def test_rerun_cleans_up_the_killed_jobs_partial_store(killed_and_rerun):
    assert not killed_and_rerun["tmp"].exists()
