"""profiles/slurm resolves every job of the real workflow with the intended resources."""

from __future__ import annotations

import yaml

from .conftest import REPO, SLURM_PROFILE, TINY, clean_env, dry_run_jobs, snakemake

# rule: (threads, mem_mb, runtime [min]) at attempt 1, as profiles/slurm means them.
EXPECTED = {
    "simulate_calib": (1, 2000, 30),
    "simulate_field": (1, 2000, 30),
    "simulate_catalogs": (1, 4000, 60),
    "tracking_init": (1, 4000, 60),
    "reduce_calib": (4, 8000, 60),
    "reduce_field": (8, 16000, 120),
    "reduce_index": (1, 4000, 60),
    "train": (8, 32000, 720),
    "evaluate": (4, 16000, 120),
}


def _dry_run(tmp_path, **env):
    # A dry run caps threads at --cores (1 by default); the SLURM executor does not cap them,
    # so allow plenty to see the threads each job gets on the cluster.
    proc = snakemake(["-n", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "work"),
                      "--workflow-profile", str(REPO / "profiles" / "slurm"),
                      "--configfile", str(TINY), "--cores", "256"],
                     env=clean_env(**env), cwd=tmp_path)
    return dry_run_jobs(proc.stdout)


def test_profile_is_the_slurm_executor():
    text = SLURM_PROFILE.read_text()
    assert text.splitlines()[0].startswith("#")
    profile = yaml.safe_load(text)
    assert profile["executor"] == "slurm"
    assert 1 <= profile["jobs"] <= 500
    assert profile["retries"] >= 1
    # the pitfall documented in the profile: tasks/tasks_per_gpu would split the GPUs up
    assert not {"tasks", "tasks_per_gpu"} & set(profile["set-resources"]["train"])


def test_dry_run_resolves_every_job_with_the_intended_resources(tmp_path):
    jobs = _dry_run(tmp_path, ASTROFLOW_SLURM_ACCOUNT="astro", ASTROFLOW_SLURM_PARTITION="cpu",
                    ASTROFLOW_SLURM_GPU_PARTITION="gpu")
    missing = set(EXPECTED) - set(jobs)
    assert not missing, f"rules missing from the dry run: {missing}"
    for rule, (threads, mem_mb, runtime) in EXPECTED.items():
        for job in jobs[rule]:
            res = job["resources"]
            assert job["threads"] == threads, (rule, job)
            assert res["mem_mb"] == mem_mb, (rule, res)
            assert res["runtime"] == runtime, (rule, res)
            # one task with as many CPUs as the rule's threads
            assert res["cpus_per_task"] == threads, (rule, res)
            assert res["slurm_account"] == "astro", (rule, res)
            assert res["slurm_partition"] == ("gpu" if rule == "train" else "cpu"), (rule, res)
            assert "tasks" not in res and "tasks_per_gpu" not in res, (rule, res)
            if rule == "train":
                assert res["gpu"] == 1
            else:
                assert "gpu" not in res or res["gpu"] == 0, (rule, res)
    assert len(jobs["reduce_field"]) == 2  # one per field of the tiny survey


def test_unset_account_and_partition_are_left_to_slurm(tmp_path):
    jobs = _dry_run(tmp_path)
    for rule in EXPECTED:
        for job in jobs[rule]:
            assert "slurm_account" not in job["resources"], (rule, job)
            assert "slurm_partition" not in job["resources"], (rule, job)


def test_gpu_partition_defaults_to_the_cpu_partition(tmp_path):
    jobs = _dry_run(tmp_path, ASTROFLOW_SLURM_PARTITION="batch")
    assert jobs["train"][0]["resources"]["slurm_partition"] == "batch"
    assert jobs["reduce_field"][0]["resources"]["slurm_partition"] == "batch"
