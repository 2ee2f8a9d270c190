"""The raw-archive manifest: path, size and sha256 of every raw and calibration file reduced.

The reduce run records it (``lineage/raw_manifest.json``) so that a result can be traced to the
exact raw pixels, and ``astroflow reproduce`` checks the archive against it before rerunning.
It is gathered from what the reduce jobs already hashed (the provenance attrs of the field
stores, ``masters.json``) rather than by re-reading the archive, and adds the files the reduction
set aside (quarantined) because fixing one of those changes the result too.

Paths are kept as the jobs saw them (usually relative to the working directory, recorded as
``workdir``), so the same manifest checks an archive regenerated in another directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from astroflow.io.fits_read import sha256_file

log = logging.getLogger(__name__)

#: Version of the manifest layout, in the manifest itself.
MANIFEST_VERSION = 1


def manifest_digest(files: Iterable[Mapping]) -> str:
    """sha256 over ``archive_path size sha256`` lines: equal digests, equal archives.

    ``archive_path`` is the path inside the archive root (the file name for the labels
    catalog), so the same archive read from another directory keeps its digest.
    """
    lines = sorted(f"{f['archive_path']} {f['size_bytes']} {f['sha256']}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _role(path: str, labels: frozenset[str] = frozenset()) -> str:
    name = Path(path).name.lower()
    # the catalog the stores name (any format); an .ecsv in stores that predate that record
    if path in labels or (not labels and name.endswith(".ecsv")):
        return "labels"
    parts = Path(path).parts
    return "calib" if "calib" in parts or name.startswith(("bias", "dark", "flat")) else "science"


def _inside(path: str, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def build_manifest(
    inputs: Mapping[str, str],
    quarantined: Iterable[str] = (),
    exclude_under: Path | None = None,
    labels: Iterable[str] = (),
) -> dict:
    """The manifest from ``{path: sha256}`` of the inputs read and the quarantined paths.

    Parameters
    ----------
    inputs : mapping
        ``{path: sha256}`` as the reduce jobs recorded them.
    quarantined : iterable of str
        Raw files set aside; hashed here when they still exist.
    exclude_under : Path, optional
        Paths inside this folder (the reduce outputs: master calibrations) are not raw input.
    labels : iterable of str, optional
        The labels catalog(s) among the inputs (the stores' ``provenance.labels``), whatever
        their format; without them an ``.ecsv`` input is taken for the catalog.

    Returns
    -------
    dict
        ``{"version", "workdir", "root", "digest", "n_files", "files": [{"path",
        "archive_path", "role", "size_bytes", "sha256", "quarantined"}]}``; ``root`` is the
        folder holding every raw (non-label) file, the raw archive root.
    """
    entries: dict[str, dict] = {}
    labels = frozenset(labels)
    for path, sha in inputs.items():
        if exclude_under is not None and _inside(path, exclude_under):
            continue
        entries[path] = {"path": path, "role": _role(path, labels), "sha256": sha,
                         "quarantined": False}
    for path in quarantined:
        if path in entries or not os.path.isfile(path):
            continue
        entries[path] = {"path": path, "role": _role(path, labels),
                         "sha256": sha256_file(path), "quarantined": True}
    for path, entry in entries.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: raw input recorded by reduce no longer exists")
        entry["size_bytes"] = os.path.getsize(path)
    files = [entries[p] for p in sorted(entries)]
    raw = [os.path.abspath(f["path"]) for f in files if f["role"] != "labels"]
    root = os.path.commonpath(raw) if raw else None
    for entry in files:
        if entry["role"] == "labels" or root is None:
            entry["archive_path"] = os.path.basename(entry["path"])
        else:
            entry["archive_path"] = os.path.relpath(os.path.abspath(entry["path"]), root)
    return {
        "version": MANIFEST_VERSION,
        "workdir": os.getcwd(),
        "root": root,
        "digest": manifest_digest(files),
        "n_files": len(files),
        "files": files,
    }


def manifest_for_index(index: Mapping, out_dir: str | Path) -> dict:
    """The manifest of a dataset index: every field store's inputs plus the quarantined files.

    Parameters
    ----------
    index : mapping
        ``index.json`` content (field entries with store paths relative to ``out_dir``).
    out_dir : str or Path
        The reduce output folder; files under it (master calibrations) are not raw input.
    """
    import zarr

    out_dir = Path(out_dir)
    inputs: dict[str, str] = {}
    quarantined: list[str] = []
    labels: set[str] = set()
    calib_dirs: set[Path] = set()
    for field, entry in sorted(index["fields"].items()):
        store = out_dir / entry["store"]
        attrs = zarr.open_group(str(store), mode="r").attrs
        try:
            recorded = attrs["provenance"]["inputs"]
        except KeyError as exc:
            raise ValueError(f"{store}: attrs lack provenance.inputs ({exc}); field {field} "
                             "was reduced by an older astroflow") from exc
        inputs.update(recorded)
        if attrs["provenance"].get("labels"):
            labels.add(attrs["provenance"]["labels"])
        calib_dirs.update(Path(p).parent for p in recorded if _inside(p, out_dir))
    qfile = out_dir / "quarantine.json"
    if qfile.exists():
        quarantined += [q["path"] for q in json.loads(qfile.read_text())]
    for calib_dir in sorted(calib_dirs):
        masters = calib_dir / "masters.json"
        if masters.exists():
            record = json.loads(masters.read_text())
            quarantined += [q["path"] for q in record.get("quarantine", [])]
    manifest = build_manifest(inputs, quarantined, exclude_under=out_dir, labels=labels)
    log.info("raw manifest %s: %d files", manifest["digest"][:12], manifest["n_files"])
    return manifest


@dataclass(frozen=True)
class Mismatch:
    """One file that differs from the manifest: its recorded path, where it was looked for, why."""

    path: str
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path} ({self.where}): {self.problem}"


def resolve(path: str, workdir: str | Path) -> Path:
    """A manifest path as a file on this machine: relative paths are taken from ``workdir``."""
    return Path(path) if os.path.isabs(path) else Path(workdir) / path


def check_files(
    manifest: Mapping, workdir: str | Path, roles: Iterable[str] | None = None
) -> list[Mismatch]:
    """Every manifest file that is missing or differs in size or sha256 under ``workdir``.

    Parameters
    ----------
    manifest : mapping
        A manifest from :func:`build_manifest`.
    workdir : str or Path
        Where relative manifest paths are resolved (the recorded run's working directory, or
        the directory where the simulator regenerated the archive).
    roles : iterable of str, optional
        Only check these roles (``calib``, ``science``, ``labels``); default all.
    """
    wanted = set(roles) if roles is not None else None
    problems = []
    for entry in manifest["files"]:
        if wanted is not None and entry["role"] not in wanted:
            continue
        where = resolve(entry["path"], workdir)
        if not where.is_file():
            problems.append(Mismatch(entry["path"], str(where), "missing"))
            continue
        size = where.stat().st_size
        if size != entry["size_bytes"]:
            problems.append(Mismatch(entry["path"], str(where),
                                     f"size {size} bytes, manifest {entry['size_bytes']}"))
            continue
        sha = sha256_file(where)
        if sha != entry["sha256"]:
            problems.append(Mismatch(entry["path"], str(where),
                                     f"sha256 {sha[:16]}..., manifest {entry['sha256'][:16]}..."))
    return problems


def unlisted_files(manifest: Mapping, raw_root: str | Path, workdir: str | Path) -> list[str]:
    """FITS files under ``raw_root`` that the manifest does not list (new exposures since).

    A rerun over the archive would reduce them too and so could not reproduce the run. FITS
    is told by content, as the workflow's plan tells it; other files a rerun only names.
    """
    from astroflow.io.archive import walk_archive
    from astroflow.io.headers import read_file_headers

    listed = {resolve(f["path"], workdir).resolve() for f in manifest["files"]}
    found = (path for path, _, _ in walk_archive(raw_root)
             if Path(path).resolve() not in listed)
    return sorted(p for p in found if read_file_headers(p, primary_only=True).problem is None)
