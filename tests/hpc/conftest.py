"""Helpers for the HPC tests: the fake SLURM commands on PATH, profile rendering, dry-run parsing.

No cluster is reachable from CI, so tests put tests/hpc/fake_slurm/ (a real, if single-machine,
sbatch/squeue/sacct/srun that runs each job in the background and records its options) first
on PATH and drive the real snakemake-executor-plugin-slurm and dask-jobqueue with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "tiny.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"
# Variables that would leak the caller's cluster or tracking setup into a test.
_SCRUB = ("MLFLOW_TRACKING_URI", "ASTROFLOW_SLURM_ACCOUNT", "ASTROFLOW_SLURM_PARTITION",
          "ASTROFLOW_SLURM_GPU_PARTITION", "FAKE_SLURM_OOM_ONCE")


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUB and not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(extra)
    return env


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Put the fake SLURM commands first on PATH (in this process too); return the state dir.

    Jobs still running at teardown (a failed test) are cancelled, so none outlive the test.
    """
    state = tmp_path / "slurm_state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    monkeypatch.setenv("FAKE_SLURM_PYTHON", sys.executable)
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)
    yield state
    running = [json.loads(p.read_text())["id"] for p in (state / "jobs").glob("*.json")
               if json.loads(p.read_text())["state"] in ("PENDING", "RUNNING")]
    if running:
        subprocess.run([str(FAKE_SLURM / "scancel"), *running], check=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_states(state: Path) -> dict[str, str]:
    return {p.stem: json.loads(p.read_text())["state"] for p in (state / "jobs").glob("*.json")}


def submissions_by_rule(state: Path) -> dict[str, list[dict]]:
    """sbatch option dicts per rule name (from the plugin's ``--comment rule_<name>...``)."""
    out: dict[str, list[dict]] = {}
    for record in read_jsonl(state / "submissions.jsonl"):
        comment = record["options"].get("comment", "")
        rule = re.sub(r"_wildcards_.*$", "", comment).removeprefix("rule_")
        out.setdefault(rule, []).append({**record["options"], "job_id": record["job_id"]})
    return out


def render_slurm_profile(dest: Path, env: dict, edit=None) -> Path:
    """Render profiles/slurm (a YTE template) as Snakemake would, optionally edit it, save it.

    Tests use the rendered copy to change only what they must (a GPU-less machine, short status
    polling) while every other setting stays the shipped profile's.
    """
    import yte

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with open(SLURM_PROFILE) as fh:
            profile = yte.process_yaml(fh, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if edit is not None:
        edit(profile)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def snakemake(args: list[str], env: dict, cwd: Path, timeout: int = 900,
              check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode})\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def dry_run_jobs(output: str) -> dict[str, list[dict]]:
    """Per rule, each job's threads and resources from `snakemake -n` output."""
    jobs: dict[str, list[dict]] = {}
    current = None
    for line in output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if match:
            current = {"threads": 1, "resources": {}}
            jobs.setdefault(match.group(1), []).append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("threads:"):
            current["threads"] = int(stripped.split(":", 1)[1])
        elif stripped.startswith("resources:"):
            for item in stripped.split(":", 1)[1].split(", "):
                key, _, value = item.strip().partition("=")
                current["resources"][key] = int(value) if value.isdigit() else value
    return jobs
