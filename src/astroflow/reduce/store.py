"""Write and read a field's Zarr v3 cutout store, atomically and deterministically.

The store is built in a temporary sibling directory and renamed into place, so a reader (or a
rerun after a crash) never mistakes a partial store for a finished one. Chunks are whole
objects along N and compressed with Blosc/lz4 + bitshuffle (noisy float32 cutouts hardly
compress: zstd level 3 gave 1.08x at 0.36 GB/s, lz4 1.10x at 1.8 GB/s, and lz4 decodes ~2x
faster for the training loader); nothing time-dependent is written,
so the same inputs give byte-identical chunks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from astroflow.processes import pid_alive

log = logging.getLogger(__name__)


def _compressors() -> list:
    return [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle)]


def field_digest(images: np.ndarray, objects: pd.DataFrame) -> str:
    """sha256 over the images' bytes and the object table's content (not file metadata):
    each column's name, dtype and little-endian values (text columns as their strings)."""
    digest = hashlib.sha256()
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images, dtype="<f4").data)
    for name in objects.columns:
        values = objects[name].to_numpy()
        digest.update(f"\n{name}:{values.dtype.str}:".encode())
        if values.dtype.kind == "O":
            digest.update("\x1f".join(map(str, values)).encode())
        else:
            digest.update(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).data)
    return digest.hexdigest()


def _remove_stale_temporaries(final: Path) -> None:
    """Remove temporary/old siblings of ``final`` left by killed jobs (and our own pid's).

    A job killed mid-write leaves ``.<name>.tmp-<pid>`` (a partial store as large as the
    field's) that no later job would ever reuse. Siblings of a live other process are kept:
    that job may still be writing.
    """
    for kind in ("tmp", "old"):
        for path in final.parent.glob(f".{final.name}.{kind}-*"):
            pid_text = path.name.rsplit("-", 1)[-1]
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid != os.getpid() and pid_alive(pid):
                continue
            log.info("removing %s left by an interrupted job (pid %d)", path, pid)
            shutil.rmtree(path, ignore_errors=True)


def write_field_store(
    path: str | Path,
    planes: dict[str, np.ndarray],
    attrs: dict | Callable[[], dict],
    chunk_objects: int,
) -> None:
    """Write ``planes`` (``images`` and optional ``variance``/``mask``) as a Zarr v3 group.

    Parameters
    ----------
    path : str or Path
        Final ``<field>.zarr`` directory; replaced if it exists.
    planes : dict of str to ndarray (N, n_bands, S, S)
    attrs : dict, or a function returning it
        JSON-serialisable group attributes (bands, provenance, ...). A function is called once
        the arrays are written, so the caller can work out some (the digest) meanwhile.
    chunk_objects : int
        Objects per chunk along N.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove_stale_temporaries(final)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    arrays = {
        name: group.create_array(
            name,
            shape=data.shape,
            chunks=(max(1, chunk_objects), *data.shape[1:]),
            dtype=data.dtype,
            compressors=_compressors(),
            fill_value=0,
            # every chunk is written: skips zarr's per-chunk "all fill value?" scan
            config={"write_empty_chunks": True},
        )
        for name, data in planes.items()
    }
    if any(data.shape[0] for data in planes.values()):
        # the planes side by side: compression and file writes release the GIL
        with ThreadPoolExecutor(max_workers=len(planes)) as pool:
            for done in [
                pool.submit(arrays[name].__setitem__, Ellipsis, data)
                for name, data in planes.items()
            ]:
                done.result()
    group.attrs.update(attrs() if callable(attrs) else attrs)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def write_parquet(path: str | Path, table: pd.DataFrame) -> None:
    """Write a parquet file atomically (temporary sibling, then rename)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, final)


def write_text(path: str | Path, text: str) -> None:
    """Write a small text file atomically."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, final)


def open_field_store(path: str | Path) -> zarr.Group:
    """Open a finished field store read-only."""
    return zarr.open_group(str(path), mode="r", zarr_format=3)
