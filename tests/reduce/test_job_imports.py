"""A field job imports only what it uses.

Every ``reduce_field`` job is a fresh Python process (one per field, thousands in a survey), so
its imports are paid per field: a module imported at the top of a shared module but used only
by other stages or schedulers costs every job. Each entry below cost a field job 0.1-3 s.
"""

import json
import subprocess
import sys

#: Modules a forked-worker field job never uses, and who does.
NOT_FOR_FIELD_JOBS = {
    "dask.array": "the masters' combine (`reduce calib`)",
    "distributed": "the LocalCluster and SLURM schedulers, imported when chosen",
    "scipy.optimize": "nothing in reduce: the Moffat beta is found by bisection",
    "torch": "training and evaluation",
    "lightning": "training",
    "mlflow": "the reduce index job's tracking",
    "matplotlib": "reports and plots",
    "photutils": "the benchmark's naive reference",
}


def test_field_job_imports_nothing_it_does_not_use():
    code = (
        "import json, sys\n"
        "import astroflow.cli, astroflow.reduce.stage, astroflow.reduce.field\n"
        f"print(json.dumps(sorted(m for m in {sorted(NOT_FOR_FIELD_JOBS)!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], {name: NOT_FOR_FIELD_JOBS[name] for name in loaded}
