"""``astroflow reproduce RUN_ID``: rebuild a train or evaluate run from raw pixels and check it.

Steps, each of which refuses (exit code 2, naming the problem) rather than paper over a
difference:

1. Walk the run's lineage: evaluate -> train -> reduce, and read the reduce run's raw
   manifest and the config each job received (``config/stage.json``; or the whole pipeline
   config, ``config/pipeline.json``, when the workflow exported it).
2. Code: the recorded git commit must exist in this repository, and the code here must be
   the recorded code (equal ``code_digest``); otherwise check out the commit first, or pass
   ``--allow-code-change`` to rerun anyway with the difference stated in the verdict.
3. Raw data: every file of the manifest must be present with its recorded size and sha256,
   and no unlisted exposure may sit in the archive (a rerun would reduce it too). The
   truth catalog an evaluate run scored against is checked by its recorded sha256.
4. Materialise the recorded config into ``<workdir>/reproduce/config.yaml`` and run the
   repository's Snakefile in ``<workdir>``. With only stage configs recorded (no simulate
   section), the pipeline reads the verified raw archive where it lies (``simulate.enabled:
   false``); with the whole pipeline config of a simulated survey, the simulator regenerates
   the archive in ``<workdir>`` and its sha256s are checked against the manifest before
   reduction (the simulator is byte-deterministic).
5. Verdict: every metric of the recorded run next to the new one, the dataset and manifest
   digests. IDENTICAL (equal to float64 rounding, relative 1e-12) is expected on CPU with the
   same seed; WITHIN TOLERANCE allows
   ``|new - old| <= rtol * |old|`` (default 2 %) for other hardware, ``|new - old| <= rtol``
   for the paired deltas (``delta_vs_...``, near 0), whose ``_verdict`` codes are shown but
   not compared; else DIFFERENT (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mlflow.entities import Run

from astroflow import config as config_mod
from astroflow import tracking
from astroflow.lineage import manifest as manifest_mod
from astroflow.lineage import records
from astroflow.lineage.records import LineageError

log = logging.getLogger(__name__)

REPO = tracking.REPO_ROOT
DEFAULT_RTOL = 0.02
#: "Identical" allows float64 rounding only: threaded sums (the forest baseline) may add in
#: another order from run to run and differ in the last bit.
IDENTICAL_RTOL = 1e-12
#: Environment variables of the recorded pipeline that must not leak into the rerun.
ISOLATED_ENV = ("MLFLOW_TRACKING_URI", tracking.PIPELINE_ID_ENV, tracking.PIPELINE_CONFIG_ENV,
                tracking.RULE_ENV)
#: Simulate rules that regenerate the raw archive (run first, then checked).
SIMULATE_TARGETS = ("simulate_calib", "simulate_catalogs")

EXIT_OK, EXIT_DIFFERENT, EXIT_REFUSED = 0, 1, 2


class Refused(LineageError):
    """The run cannot be reproduced faithfully here; the message says why."""


@dataclass
class Plan:
    """What to rerun and from what (built by :func:`make_plan`, checked by :func:`check`)."""

    run: Run
    chain: dict[str, Run]
    model: str
    manifest: dict
    config: dict
    regenerate: bool
    target: str
    notes: list[str] = field(default_factory=list)


# --- 1. lineage -------------------------------------------------------------------------------


def _recorded_config(mlclient, chain: dict[str, Run]) -> tuple[dict, bool]:
    """The config to rerun with, and whether it is the whole pipeline config.

    The whole pipeline config (``config/pipeline.json``) wins when recorded. Otherwise it is
    assembled from the sections each job received: ``seed``, ``instrument``, ``reduce`` from
    the reduce run, ``train`` from the train run, ``evaluate`` from the evaluate run.
    """
    for stage in ("evaluate", "train", "reduce"):
        if stage in chain:
            whole = records.json_artifact(mlclient, chain[stage], tracking.PIPELINE_CONFIG_ARTIFACT)
            if whole is not None:
                return whole, True
    cfg = config_mod.validate({})
    owners = {"reduce": ("seed", "instrument", "reduce"), "train": ("train",),
              "evaluate": ("evaluate",)}
    received = {}
    for stage, sections in owners.items():
        if stage not in chain:
            continue
        received[stage] = records.stage_config(mlclient, chain[stage])
        for section in sections:
            cfg[section] = received[stage][section]
    for stage, got in received.items():
        for section in ("seed", "instrument"):
            if got[section] != cfg[section]:
                raise Refused(f"{stage} run {chain[stage].info.run_id} used another {section} "
                              "than its reduce run: the recorded lineage is inconsistent")
    return cfg, False


def make_plan(mlclient, run: Run) -> Plan:
    """Gather the lineage of a train or evaluate run into a :class:`Plan`."""
    stage = run.data.tags.get("stage")
    if stage not in {"train", "evaluate"}:
        raise Refused(f"run {run.info.run_id} is a {stage!r} run; reproduce takes a train or "
                      "evaluate run")
    chain = records.upstream_chain(mlclient, run)
    for needed in ("train", "reduce"):
        if needed not in chain:
            raise Refused(f"run {run.info.run_id} has no upstream {needed} run recorded "
                          f"(tag upstream.{needed}); its data cannot be traced")
    model = chain["train"].data.tags.get("model")
    if not model:
        raise Refused(f"train run {chain['train'].info.run_id} has no 'model' tag")
    manifest = records.json_artifact(mlclient, chain["reduce"], tracking.RAW_MANIFEST_ARTIFACT)
    if manifest is None:
        raise Refused(f"reduce run {chain['reduce'].info.run_id} has no raw manifest "
                      f"({tracking.RAW_MANIFEST_ARTIFACT}): the raw pixels cannot be checked")
    cfg, whole = _recorded_config(mlclient, chain)
    cfg["train"]["models"] = [model]
    regenerate = whole and bool(cfg["simulate"]["enabled"])
    target = (f"results/evaluate/{model}/metrics.json" if stage == "evaluate"
              else f"results/train/{model}/run.json")
    plan = Plan(run, chain, model, manifest, cfg, regenerate, target)
    if not whole:
        plan.notes.append("config assembled from the reduce/train/evaluate runs' stage configs "
                          "(no whole pipeline config recorded); rerun from the recorded archive")
    return plan


# --- 2. code ----------------------------------------------------------------------------------


def commit_available(commit: str) -> bool:
    """Whether this repository holds the commit (read-only ``git cat-file``)."""
    if not commit or commit == "unknown":
        return False
    proc = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO,
                          capture_output=True, timeout=30)
    return proc.returncode == 0


def check_code(plan: Plan, allow_change: bool) -> None:
    """Refuse when the recorded commit is unknown here or the code differs from the record."""
    tags = plan.chain["train"].data.tags
    commit = tags.get("git_commit", "unknown")
    if not commit_available(commit):
        raise Refused(f"recorded commit {commit} is not in the repository at {REPO}: fetch it "
                      "(git fetch) before reproducing")
    recorded = {r.data.tags.get("code_digest") for r in plan.chain.values()} - {None}
    current = tracking.code_digest()
    here = tracking.git_state()
    if recorded and recorded != {current}:
        what = (f"code here (digest {current}, commit {here['git_commit'][:12]}, dirty "
                f"{here['git_dirty']}) differs from the recorded run's (digest "
                f"{', '.join(sorted(recorded))}, commit {commit[:12]}, dirty "
                f"{tags.get('git_dirty')})")
        if not allow_change:
            raise Refused(what + f"; check out {commit[:12]} first, or pass "
                          "--allow-code-change to rerun with this code anyway")
        plan.notes.append("CODE CHANGED: " + what)
    elif tags.get("git_dirty") == "true":
        plan.notes.append(f"recorded checkout was dirty at {commit[:12]}; the code digest "
                          "matches, so the code is the same")


# --- 3. raw data ------------------------------------------------------------------------------


def _refuse_mismatches(mismatches: list, where: str) -> None:
    if mismatches:
        listed = "\n  ".join(str(m) for m in mismatches)
        raise Refused(f"raw files {where} do not match the recorded manifest "
                      f"({len(mismatches)} file(s)):\n  {listed}")


def check_archive(plan: Plan) -> None:
    """The recorded archive (where it lies) against the manifest; then point the config at it."""
    manifest = plan.manifest
    workdir = manifest["workdir"]
    _refuse_mismatches(manifest_mod.check_files(manifest, workdir), "at the recorded location")
    root = manifest["root"]
    extra = manifest_mod.unlisted_files(manifest, root, workdir)
    if extra:
        raise Refused(f"{len(extra)} FITS file(s) under {root} are not in the recorded manifest "
                      "(a rerun would reduce them too): " + ", ".join(extra[:10]))
    labels = [f for f in manifest["files"] if f["role"] == "labels"]
    if len(labels) != 1:
        raise Refused(f"manifest lists {len(labels)} labels catalogs, expected 1")
    cfg = plan.config
    cfg["simulate"]["enabled"] = False
    cfg["data"]["raw_dir"] = str(root)
    cfg["data"]["labels"] = str(manifest_mod.resolve(labels[0]["path"], workdir))


def check_recorded_archive_if_present(plan: Plan) -> None:
    """A simulated archive is regenerated, but where the recorded one still lies it must be
    unchanged: a modified file there means the recorded results no longer describe it."""
    manifest = plan.manifest
    if manifest_mod.resolve(manifest["root"], manifest["workdir"]).is_dir():
        _refuse_mismatches(manifest_mod.check_files(manifest, manifest["workdir"]),
                           "at the recorded location")


def check_truth(plan: Plan) -> None:
    """The truth catalog of an evaluate run, by its recorded sha256."""
    if "evaluate" not in plan.chain:
        return
    tags = plan.chain["evaluate"].data.tags
    path, sha = tags.get("input_path.truth"), tags.get("input_sha256.truth")
    if not path:
        plan.config["data"]["truth"] = None
        return
    if plan.regenerate:
        return  # the simulator rewrites it in the workdir; checked after regeneration
    if not os.path.isfile(path):
        raise Refused(f"truth catalog {path} (recorded by evaluate) is missing")
    now = manifest_mod.sha256_file(path)
    if now != sha:
        raise Refused(f"truth catalog {path}: sha256 {now[:16]}..., recorded {sha[:16]}...")
    plan.config["data"]["truth"] = path


def check_regenerated(plan: Plan, workdir: Path) -> None:
    """After the simulate rules ran in ``workdir``: the archive must equal the manifest."""
    _refuse_mismatches(manifest_mod.check_files(plan.manifest, workdir),
                       f"regenerated by the simulator in {workdir}")
    tags = plan.chain.get("evaluate").data.tags if "evaluate" in plan.chain else {}
    if tags.get("input_sha256.truth"):
        truth = workdir / plan.config["data"]["truth"]
        now = manifest_mod.sha256_file(truth) if truth.is_file() else "missing"
        if now != tags["input_sha256.truth"]:
            raise Refused(f"regenerated truth catalog {truth}: sha256 {now[:16]} differs from "
                          "the recorded one")


# --- 4. rerun ---------------------------------------------------------------------------------


def materialise(plan: Plan, workdir: Path, tracking_uri: str | None) -> Path:
    """Write the config to rerun with (and where it came from) under ``<workdir>/reproduce``."""
    cfg = plan.config
    cfg["tracking"]["uri"] = tracking_uri or "sqlite:///mlflow.db"
    config_mod.validate(cfg, source="materialised config")
    out = workdir / "reproduce"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    header = (f"# Config of run {plan.run.info.run_id}, materialised by astroflow reproduce.\n"
              + "".join(f"# note: {n}\n" for n in plan.notes))
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, config_path: Path, cores: int, targets: list[str],
              extra: list[str], tracking_uri: str | None, log_path: Path) -> None:
    """Run the repository's Snakefile in ``workdir``; raise with the log's tail on failure."""
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_ENV}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config_path), "-c", str(cores), *extra, *targets]
    log.info("running %s (log: %s)", " ".join(cmd), log_path)
    t0 = time.perf_counter()
    with open(log_path, "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    log.info("snakemake finished in %.0f s with exit code %d", time.perf_counter() - t0,
             proc.returncode)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed ({proc.returncode}) in {workdir}; last lines of "
                           f"{log_path}:\n{log_path.read_text()[-3000:]}")


# --- 5. verdict -------------------------------------------------------------------------------


def new_runs(workdir: Path, model: str, uri: str) -> dict[str, Run]:
    """The rerun's stage runs, found through the run records it wrote."""
    mlclient = records.mlflow.MlflowClient(tracking_uri=uri)
    found = {}
    for stage in ("train", "evaluate"):
        record = workdir / "results" / stage / model / "run.json"
        if record.exists():
            found[stage] = mlclient.get_run(json.loads(record.read_text())["run_id"])
    if "train" in found:
        found.update({k: v for k, v in records.upstream_chain(mlclient, found["train"]).items()
                      if k not in found})
    return found


def _difference(name: str, recorded: float, rerun: float) -> float:
    """How far a rerun's metric is from the record: relative, but absolute for the paired
    deltas (``delta_vs_...``: differences of scores in [0, 1] that sit near 0, where a
    relative difference means nothing)."""
    if "delta_vs_" in name:
        return abs(rerun - recorded)
    if recorded:
        return abs(rerun - recorded) / abs(recorded)
    return 0.0 if rerun == recorded else float("inf")


def verdict(plan: Plan, new: dict[str, Run], rtol: float) -> dict:
    """Compare the rerun with the record: metrics side by side, digests, one word."""
    stage = plan.run.data.tags["stage"]
    old_run, new_run = plan.run, new[stage]
    old_m, new_m = old_run.data.metrics, new_run.data.metrics
    rows, worst = [], 0.0
    for name in sorted(set(old_m) | set(new_m)):
        a, b = old_m.get(name), new_m.get(name)
        rel = None
        if a is not None and b is not None:
            rel = _difference(name, a, b)
            if not name.endswith("_verdict"):  # a verdict follows its delta's interval
                worst = max(worst, rel)
        rows.append({"metric": name, "recorded": a, "rerun": b, "rel_diff": rel})
    missing = [r["metric"] for r in rows if r["recorded"] is None or r["rerun"] is None]
    digests = {}
    for tag in ("dataset_digest", "raw_manifest_digest"):
        digests[tag] = {"recorded": old_run.data.tags.get(tag), "rerun": new_run.data.tags.get(tag)}
    same_data = all(d["recorded"] == d["rerun"] for d in digests.values())
    identical = same_data and not missing and worst <= IDENTICAL_RTOL
    if identical:
        word = "IDENTICAL"
    elif same_data and not missing and worst <= rtol:
        word = "WITHIN TOLERANCE"
    else:
        word = "DIFFERENT"
    return {"verdict": word, "rtol": rtol, "max_rel_diff": worst,
            "recorded_run": old_run.info.run_id, "rerun_run": new_run.info.run_id,
            "digests": digests, "metrics": rows,
            "missing_metrics": missing, "notes": plan.notes}


def format_verdict(v: dict) -> str:
    """The verdict as the command prints it."""
    lines = [f"recorded run {v['recorded_run']}  ->  rerun {v['rerun_run']}"]
    for tag, d in v["digests"].items():
        same = "same" if d["recorded"] == d["rerun"] else "DIFFERENT"
        lines.append(f"  {tag}: {str(d['recorded'])[:16]} vs {str(d['rerun'])[:16]} ({same})")
    width = max((len(r["metric"]) for r in v["metrics"]), default=6)
    lines.append(f"  {'metric'.ljust(width)}  {'recorded':>12}  {'rerun':>12}  rel. diff")
    for r in v["metrics"]:
        fmt = (lambda x: "absent" if x is None else f"{x:.6g}")  # noqa: E731
        rel = "-" if r["rel_diff"] is None else f"{r['rel_diff']:.2e}"
        lines.append(f"  {r['metric'].ljust(width)}  {fmt(r['recorded']):>12}  "
                     f"{fmt(r['rerun']):>12}  {rel}")
    lines += [f"  note: {n}" for n in v["notes"]]
    lines.append(f"verdict: {v['verdict']} (identical = rel. diff <= {IDENTICAL_RTOL:g}, expected "
                 f"on CPU with the same seed; within tolerance = rel. diff <= {v['rtol']:g}; "
                 f"max here {v['max_rel_diff']:.2e})")
    return "\n".join(lines)


def reproduce(
    run_ref: str,
    workdir: Path,
    tracking_uri: str | None = None,
    new_tracking_uri: str | None = None,
    cores: int = 2,
    rtol: float = DEFAULT_RTOL,
    allow_code_change: bool = False,
    experiment: str = records.DEFAULT_EXPERIMENT,
) -> dict:
    """Check, rerun and judge one run; returns the verdict dict (also written to the workdir).

    Raises
    ------
    Refused
        When code or raw data do not match the record (nothing is rerun).
    """
    mlclient = records.client(tracking_uri)
    run = records.find_run(mlclient, run_ref, experiment)
    plan = make_plan(mlclient, run)
    check_code(plan, allow_code_change)
    if plan.regenerate:
        check_recorded_archive_if_present(plan)
    else:
        check_archive(plan)
    check_truth(plan)
    workdir = Path(workdir).resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise Refused(f"{workdir} is not empty: reproduce needs a fresh directory")
    config_path = materialise(plan, workdir, new_tracking_uri)
    log_path = workdir / "reproduce" / "snakemake.log"
    if plan.regenerate:
        # Rules without wildcards as targets: simulate_catalogs pulls in every simulate_field job.
        snakemake(workdir, config_path, cores, list(SIMULATE_TARGETS), [], new_tracking_uri,
                  log_path)
        check_regenerated(plan, workdir)
    snakemake(workdir, config_path, cores, [plan.target], [], new_tracking_uri, log_path)
    uri = new_tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    result = verdict(plan, new_runs(workdir, plan.model, uri), rtol)
    (workdir / "reproduce" / "verdict.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astroflow reproduce",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("run_id", help="train or evaluate run id (or unambiguous prefix)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="fresh directory to rerun in (default: ./reproduce-<run id>)")
    parser.add_argument("--tracking-uri", default=None,
                        help="store holding the run (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--new-tracking-uri", default=None,
                        help="store for the rerun's runs (default: mlflow.db in the workdir)")
    parser.add_argument("--experiment", default=records.DEFAULT_EXPERIMENT)
    parser.add_argument("-c", "--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative tolerance on metrics when not identical")
    parser.add_argument("--allow-code-change", action="store_true",
                        help="rerun even though the code differs from the recorded run's")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``astroflow reproduce``: 0 reproduced, 1 different, 2 refused."""
    from astroflow.cli_common import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    workdir = args.workdir or Path(f"reproduce-{args.run_id[:12]}")
    try:
        result = reproduce(args.run_id, workdir, args.tracking_uri, args.new_tracking_uri,
                           args.cores, args.rtol, args.allow_code_change, args.experiment)
    except LineageError as exc:
        print(f"astroflow reproduce: REFUSED: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(format_verdict(result))
    return EXIT_OK if result["verdict"] != "DIFFERENT" else EXIT_DIFFERENT
