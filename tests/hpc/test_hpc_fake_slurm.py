"""Real Snakemake + snakemake-executor-plugin-slurm runs against the fake SLURM commands.

First a trivial Snakefile (the fake itself, the plugin's GPU/task semantics, retries), then the
whole tiny astroflow pipeline through profiles/slurm.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from .conftest import (
    REPO,
    TINY,
    job_states,
    read_jsonl,
    render_slurm_profile,
    snakemake,
    submissions_by_rule,
)

pytestmark = pytest.mark.slow

TRIVIAL = textwrap.dedent('''
    rule all:
        input: "b.txt", "one_task.txt", "per_gpu.txt"

    rule a:
        output: "a.txt"
        threads: 2
        resources: mem_mb=lambda wc, attempt: 1000 * attempt, runtime=5
        shell: "echo $SLURM_JOB_ID > {output}"

    rule b:
        input: "a.txt"
        output: "b.txt"
        shell: "cat {input} > {output}"

    rule one_task:
        output: "one_task.txt"
        threads: 2
        resources: gpu=2, runtime=5
        shell: "echo $CUDA_VISIBLE_DEVICES > {output}"

    rule per_gpu:
        output: "per_gpu.txt"
        resources: gpu=2, tasks=1, runtime=5
        shell: "echo $CUDA_VISIBLE_DEVICES > {output}"
''')


def _profile(path, **extra):
    path.mkdir(parents=True, exist_ok=True)
    lines = ["executor: slurm", "jobs: 4", "retries: 1",
             "slurm-init-seconds-before-status-checks: 1", "default-resources:",
             "  slurm_account: astro", "  slurm_partition: cpu", "  mem_mb: 500"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    (path / "config.yaml").write_text("\n".join(lines) + "\n")
    return path


def test_trivial_workflow_through_the_fake_scheduler(fake_slurm, tmp_path):
    (tmp_path / "Snakefile").write_text(TRIVIAL)
    profile = _profile(tmp_path / "profile")
    env = dict(os.environ, FAKE_SLURM_OOM_ONCE="a")
    snakemake(["-s", "Snakefile", "-d", "work", "--workflow-profile", str(profile)],
              env=env, cwd=tmp_path, timeout=300)
    work = tmp_path / "work"
    subs = submissions_by_rule(fake_slurm)

    # rule a: killed OUT_OF_MEMORY once, resubmitted by `retries` with attempt-scaled memory
    first, second = subs["a"]
    assert (first["mem"], second["mem"]) == ("1000", "2000")
    assert job_states(fake_slurm)[first["job_id"]] == "OUT_OF_MEMORY"
    assert job_states(fake_slurm)[second["job_id"]] == "COMPLETED"
    assert (work / "a.txt").read_text().strip() == second["job_id"]
    for opts in (first, second):
        assert opts["account"] == "astro" and opts["partition"] == "cpu"
        assert opts["time"] == "5" and opts["cpus-per-task"] == "2" and opts["ntasks"] == "1"

    # gpu=N alone: ONE task holding N GPUs, and the job step (srun -n1) sees all of them
    (one_task,) = subs["one_task"]
    assert one_task["gpus"] == "2" and "ntasks-per-gpu" not in one_task
    assert "ntasks" not in one_task
    assert (work / "one_task.txt").read_text().strip() == "0,1"
    # gpu=N with tasks: the plugin asks for one task per GPU (--ntasks-per-gpu), i.e. N tasks
    # of one GPU each, although the rule still runs once: the reason profiles/slurm sets no
    # `tasks` for train
    (per_gpu,) = subs["per_gpu"]
    assert per_gpu["gpus"] == "2" and per_gpu["ntasks-per-gpu"] == "1"

    steps = {rec["job_id"]: rec["options"] for rec in read_jsonl(fake_slurm / "srun.jsonl")}
    assert steps[one_task["job_id"]]["gpus"] == "2"
    assert steps[one_task["job_id"]]["n"] == "1"
    assert steps[second["job_id"]]["cpus-per-task"] == "2"
    assert "gpus" not in steps[second["job_id"]]
    assert set(job_states(fake_slurm).values()) <= {"COMPLETED", "OUT_OF_MEMORY"}


def test_unknown_account_is_refused_before_submission(fake_slurm, tmp_path):
    (tmp_path / "Snakefile").write_text(TRIVIAL)
    profile = _profile(tmp_path / "profile")
    env = dict(os.environ, FAKE_SLURM_ACCOUNTS="otherproject")
    proc = snakemake(["-s", "Snakefile", "-d", "work", "--workflow-profile", str(profile),
                      "b.txt"], env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode != 0
    assert "astro appears to be invalid" in proc.stdout + proc.stderr
    assert not (fake_slurm / "submissions.jsonl").exists()


def _tiny_profile(profile: dict) -> None:
    """The shipped profile, changed only where this 2-core GPU-less machine needs it."""
    profile["set-resources"]["train"]["gpu"] = 0
    profile["jobs"] = 2
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["slurm-keep-successful-logs"] = True


def test_tiny_pipeline_through_profiles_slurm(fake_slurm, tmp_path):
    env = dict(os.environ, ASTROFLOW_SLURM_ACCOUNT="astro", ASTROFLOW_SLURM_PARTITION="cpu",
               ASTROFLOW_SLURM_GPU_PARTITION="gpu", FAKE_SLURM_OOM_ONCE="reduce_field")
    profile = render_slurm_profile(tmp_path / "profile", env, edit=_tiny_profile)
    work = tmp_path / "work"
    snakemake(["-s", str(REPO / "Snakefile"), "-d", str(work), "--workflow-profile",
               str(profile), "--configfile", str(TINY)], env=env, cwd=tmp_path, timeout=1500)

    metrics = json.loads((work / "results/evaluate/kim_brunner/metrics.json").read_text())
    assert metrics["n_test"] > 0
    subs = submissions_by_rule(fake_slurm)
    # tracking_init is a localrule: it creates the store on the submit host, never a job
    assert "tracking_init" not in subs
    assert (work / "results/tracking/store.json").exists()
    for rule in ("simulate_calib", "simulate_field", "simulate_catalogs",
                 "reduce_calib", "reduce_field", "reduce_index", "train", "evaluate"):
        assert rule in subs, f"{rule} never submitted"
        for opts in subs[rule]:
            assert opts["account"] == "astro", (rule, opts)
            assert opts["partition"] == ("gpu" if rule == "train" else "cpu"), (rule, opts)
            assert opts["requeue"] is True
            assert opts["job-name"].startswith("astroflow_")

    # every reduce_field job was killed OUT_OF_MEMORY once and came back with twice the memory
    reduce_mem = sorted(int(o["mem"]) for o in subs["reduce_field"])
    assert reduce_mem == [16000, 16000, 32000, 32000]
    assert {(o["cpus-per-task"], o["ntasks"]) for o in subs["reduce_field"]} == {("8", "1")}
    assert {o["time"] for o in subs["reduce_field"]} == {"120", "240"}  # runtime * attempt

    (train,) = subs["train"]
    assert (train["mem"], train["time"], train["cpus-per-task"]) == ("32000", "720", "8")
    assert "gpus" not in train and "ntasks-per-gpu" not in train  # gpu=0 here
    (evaluate,) = subs["evaluate"]
    assert (evaluate["mem"], evaluate["time"], evaluate["cpus-per-task"]) == ("16000", "120", "4")
    (calib,) = subs["reduce_calib"]
    assert (calib["mem"], calib["cpus-per-task"]) == ("8000", "4")

    # each job ran its rule once, in a one-task job step with the job's CPUs (inside the job
    # Snakemake caps threads at the CPUs it can see: the job's on a cluster node, 2 here)
    states = job_states(fake_slurm)
    assert sorted(states.values()).count("OUT_OF_MEMORY") == 2
    assert set(states.values()) == {"COMPLETED", "OUT_OF_MEMORY"}
    steps = read_jsonl(fake_slurm / "srun.jsonl")
    assert {s["job_id"] for s in steps} == {k for k, v in states.items() if v == "COMPLETED"}
    options = {o["job_id"]: o for opts in subs.values() for o in opts}
    for step in steps:
        assert step["options"]["n"] == "1"
        job_cpus = int(options[step["job_id"]]["cpus-per-task"])
        visible = len(os.sched_getaffinity(0))
        assert int(step["options"]["cpus-per-task"]) == min(job_cpus, visible), step
    assert list((work / "logs" / "slurm").rglob("*.log")), "SLURM logs not under logs/slurm"
