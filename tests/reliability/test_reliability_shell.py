"""Config values cannot inject shell commands into rules; bad values stop before any job.

`snakemake -n -p` prints every job's shell command without running it. A path value holding
``; touch /tmp/pwned`` must reach the command only inside one quoted word (rules quote with
``{x:q}``); values with a closed set (models) are rejected by the schema, naming the key.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EVIL = "; touch /tmp/pwned"


def _dry_run(workdir: Path, overrides: dict) -> subprocess.CompletedProcess:
    configfile = workdir / "evil.yaml"
    configfile.write_text(yaml.safe_dump(overrides))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "-n", "-p", "-c1", "--configfile", str(REPO / "config" / "tiny.yaml"), str(configfile)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_path_values_are_quoted_in_every_shell_command(tmp_path):
    overrides = {"data": {"raw_dir": f"raw{EVIL}", "labels": f"cat/labels{EVIL}.ecsv",
                          "truth": f"cat/truth{EVIL}.ecsv"}}
    proc = _dry_run(tmp_path, overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prefix = "Shell command: "
    commands = [
        line.split(prefix, 1)[1]
        for line in (proc.stdout + proc.stderr).splitlines()
        if "pwned" in line and prefix in line
    ]
    assert len(commands) >= 4, "the evil values reach too few commands to test anything"
    for line in commands:
        words = shlex.split(line)
        assert "touch" not in words, line  # `;` would have split the command here
        assert all("touch /tmp/pwned" in w for w in words if "pwned" in w), line
    assert not Path("/tmp/pwned").exists()


def test_model_names_outside_the_schema_are_rejected(tmp_path):
    proc = _dry_run(tmp_path, {"train": {"models": [f"kim_brunner{EVIL}"]}})
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "train.models.0" in text and "is not one of" in text


def test_out_of_range_value_stops_snakemake_naming_the_key(tmp_path):
    proc = _dry_run(tmp_path, {"reduce": {"cutout_size": 4}})
    assert proc.returncode != 0
    assert "reduce.cutout_size: 4 is less than the minimum of 8" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()
