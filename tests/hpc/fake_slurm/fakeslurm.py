"""A single-machine stand-in for the SLURM commands that snakemake-executor-plugin-slurm calls.

Why: no SLURM cluster is reachable from CI, yet the workflow profile, the plugin's sbatch
command lines and the job step (`srun`) must be exercised for real. The wrappers next to this
file (`sbatch`, `squeue`, `sacct`, `srun`, ...) call ``fakeslurm.py <command> ARGS``. State lives
in ``$FAKE_SLURM_STATE`` (a directory the test creates):

- ``submissions.jsonl``: one JSON line per ``sbatch`` call: the job id, the raw argv and the
  parsed options (long names, e.g. ``{"mem": "4000", "gpus": "1", "cpus-per-task": "8"}``).
- ``srun.jsonl``: one JSON line per ``srun`` call inside a job.
- ``jobs/<id>.json``: the job record (name, state, exit code, runner pid); ``jobs/<id>.sh`` its
  script.

``sbatch`` rejects what a real sbatch rejects (unknown options, ``--cpus-per-task`` together
with ``--cpus-per-gpu``, a bad ``--mem``/``-t``), records the submission, starts the job in the
background (its own process session, output to ``--output`` with ``%j`` replaced, SLURM_*
variables set as SLURM sets them) and prints the job id. The job's state goes PENDING ->
RUNNING -> COMPLETED / FAILED (or TIMEOUT past ``-t``), reported by ``sacct``/``squeue`` in the
``--parsable2``/``--format`` layouts the plugin parses. ``srun`` refuses a step that asks for
more CPUs or GPUs than the job holds, then runs the command. Test hooks: a rule named in
``$FAKE_SLURM_OOM_ONCE`` (comma separated) ends OUT_OF_MEMORY on its first submission without
running, so that Snakemake's retries can be observed. Only the standard library is used.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
# sbatch options that take no value.
SBATCH_FLAGS = {"--parsable", "--requeue", "--no-requeue", "--exclusive", "--wait"}
# sbatch options that take a value (long names); anything else is rejected as sbatch does.
SBATCH_VALUED = {
    "--job-name", "--output", "--error", "--export", "--comment", "--account", "--partition",
    "--time", "--mem", "--mem-per-cpu", "--ntasks", "--ntasks-per-gpu", "--ntasks-per-node",
    "--cpus-per-task", "--cpus-per-gpu", "--gpus", "--gres", "--nodes", "--constraint", "--qos",
    "--reservation", "--exclude", "--clusters", "--chdir", "--wrap", "--array", "--signal",
}
SHORT = {"-A": "--account", "-p": "--partition", "-t": "--time", "-D": "--chdir",
         "-J": "--job-name", "-n": "--ntasks", "-c": "--cpus-per-task", "-C": "--constraint",
         "-N": "--nodes", "-o": "--output", "-e": "--error", "-M": "--clusters"}
# srun options that take a separate value when written without '='.
SRUN_VALUED = {"-n", "-c", "-N", "-J", "-p", "-A", "-t", "--jobid", "--ntasks", "--nodes",
               "--cpus-per-task", "--cpus-per-gpu", "--gpus", "--mem", "--mem-per-cpu",
               "--cpu-bind", "--job-name"}


class SlurmError(Exception):
    """A command-line error, printed as the real command prints it."""


def state_dir() -> Path:
    root = os.environ.get("FAKE_SLURM_STATE")
    if not root:
        raise SlurmError("FAKE_SLURM_STATE is not set: the test must create a state directory")
    path = Path(root)
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


class Locked:
    """An exclusive lock on the state directory (sbatch, runners and queries run concurrently)."""

    def __enter__(self):
        self.fh = open(state_dir() / "lock", "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def read_job(job_id: str) -> dict:
    return json.loads((state_dir() / "jobs" / f"{job_id}.json").read_text())


def write_job(job: dict) -> None:
    path = state_dir() / "jobs" / f"{job['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    tmp.replace(path)


def update_job(job_id: str, **changes) -> dict:
    with Locked():
        job = read_job(job_id)
        job.update(changes)
        write_job(job)
    return job


def append_record(name: str, record: dict) -> None:
    with Locked(), open(state_dir() / name, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def all_jobs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((state_dir() / "jobs").glob("*.json"))]


# --------------------------------------------------------------------------------------------
# sbatch


def parse_sbatch(argv: list[str]) -> tuple[dict, list[str]]:
    """Options by long name, and the positional arguments (script path and its arguments)."""
    options: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            return options, argv[i:]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in SBATCH_FLAGS and not eq:
                options[name[2:]] = True
                i += 1
                continue
            if name not in SBATCH_VALUED:
                raise SlurmError(f"sbatch: unrecognized option '{arg}'")
        else:
            name, value, eq = SHORT.get(arg[:2]), arg[2:], bool(arg[2:])
            if name is None:
                raise SlurmError(f"sbatch: invalid option -- '{arg[1:]}'")
        if not eq:
            if i + 1 >= len(argv):
                raise SlurmError(f"sbatch: option '{name}' requires an argument")
            value = argv[i + 1]
            i += 1
        options[name[2:]] = value
        i += 1
    return options, []


def script_directives(script: str) -> list[str]:
    """The arguments of the leading ``#SBATCH`` lines (sbatch stops at the first command)."""
    args: list[str] = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            args.extend(shlex.split(stripped[len("#SBATCH"):], comments=True))
        elif stripped and not stripped.startswith("#"):
            break
    return args


def time_limit_s(value: str) -> int:
    """SLURM time formats: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not match:
        raise SlurmError(f"sbatch: error: Invalid time limit specification: {value}")
    days, a, b, c = match.groups()
    if days is not None:
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if c is not None:
        return (int(a) * 60 + int(b)) * 60 + int(c)
    if b is not None:
        return int(a) * 60 + int(b)
    return int(a) * 60


def check_sbatch(options: dict) -> None:
    if "cpus-per-task" in options and "cpus-per-gpu" in options:
        raise SlurmError("sbatch: fatal: --cpus-per-gpu is mutually exclusive with "
                         "--cpus-per-task")
    for key in ("mem", "mem-per-cpu", "cpus-per-task", "cpus-per-gpu", "ntasks", "gpus",
                "ntasks-per-gpu"):
        if key in options and not re.fullmatch(r"\d+[KMGT]?", str(options[key])):
            raise SlurmError(f"sbatch: error: invalid --{key} specification: {options[key]}")
    if "time" in options:
        time_limit_s(options["time"])
    if "ntasks-per-gpu" in options and "gpus" not in options:
        raise SlurmError("sbatch: error: --ntasks-per-gpu needs --gpus")


def next_job_id() -> str:
    with Locked():
        counter = state_dir() / "next_id"
        job_id = int(counter.read_text()) if counter.exists() else 1001
        counter.write_text(str(job_id + 1))
    return str(job_id)


def sbatch(argv: list[str]) -> int:
    options, positional = parse_sbatch(argv)
    if "wrap" in options:
        script = "#!/bin/sh\n" + options["wrap"] + "\n"
    elif positional:
        source = positional[0]
        script = sys.stdin.read() if source in ("-", "/dev/stdin") else Path(source).read_text()
    else:
        script = sys.stdin.read()
    if not script.strip():
        raise SlurmError("sbatch: error: Batch script is empty!")
    # "#SBATCH" lines at the top of the script are options too; the command line wins.
    options = {**parse_sbatch(script_directives(script))[0], **options}
    check_sbatch(options)
    job_id = next_job_id()
    workdir = options.get("chdir") or os.getcwd()
    output = str(options.get("output", f"slurm-{job_id}.out"))
    output = output.replace("%j", job_id).replace("%J", job_id)
    append_record("submissions.jsonl", {"job_id": job_id, "argv": argv, "options": options})
    (state_dir() / "jobs" / f"{job_id}.sh").write_text(script)
    comment = str(options.get("comment", ""))
    oom_rules = [r for r in os.environ.get("FAKE_SLURM_OOM_ONCE", "").split(",") if r]
    fail_now = False
    with Locked():
        seen = {j.get("comment") for j in all_jobs()}
        for rule in oom_rules:
            if (comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_")) \
                    and comment not in seen:
                fail_now = True
        write_job({"id": job_id, "name": options.get("job-name", "sbatch"), "comment": comment,
                   "state": "PENDING", "exit_code": None, "pid": None, "workdir": workdir,
                   "output": output, "options": options})
    if fail_now:
        update_job(job_id, state="OUT_OF_MEMORY", exit_code=137)
    else:
        runner = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_run", job_id],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        update_job(job_id, pid=runner.pid)
    print(job_id if options.get("parsable") else f"Submitted batch job {job_id}")
    return 0


def job_environment(job: dict) -> dict:
    """The environment SLURM gives a batch script (with --export=ALL)."""
    options = job["options"]
    env = dict(os.environ)
    gpus = int(options.get("gpus", 0) or 0)
    per_gpu = options.get("ntasks-per-gpu")
    ntasks = int(per_gpu) * gpus if per_gpu and gpus else int(options.get("ntasks", 1))
    env.update({
        "SLURM_JOB_ID": job["id"], "SLURM_JOBID": job["id"], "SLURM_JOB_NAME": job["name"],
        "SLURM_NTASKS": str(ntasks), "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1",
        "SLURM_SUBMIT_DIR": job["workdir"], "SLURM_CLUSTER_NAME": "fake",
        "SLURMD_NODENAME": "fakenode1", "SLURM_JOB_NODELIST": "fakenode1",
    })
    if "cpus-per-task" in options:
        env["SLURM_CPUS_PER_TASK"] = str(options["cpus-per-task"])
    if "cpus-per-gpu" in options:
        env["SLURM_CPUS_PER_GPU"] = str(options["cpus-per-gpu"])
    if "mem" in options:
        env["SLURM_MEM_PER_NODE"] = str(options["mem"])
    if gpus:
        env["SLURM_GPUS"] = str(gpus)
    for key, var in (("account", "SLURM_JOB_ACCOUNT"), ("partition", "SLURM_JOB_PARTITION")):
        if key in options:
            env[var] = str(options[key])
    return env


def run_job(job_id: str) -> int:
    """The background runner: run the batch script and record how it ended."""
    job = update_job(job_id, state="RUNNING", pid=os.getpid())
    limit = time_limit_s(job["options"]["time"]) if "time" in job["options"] else None
    output = Path(job["workdir"], job["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as log:
        proc = subprocess.Popen(
            ["/bin/sh", str(state_dir() / "jobs" / f"{job_id}.sh")], cwd=job["workdir"],
            env=job_environment(job), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            code = proc.wait(timeout=limit)
            state = "COMPLETED" if code == 0 else "FAILED"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code, state = -9, "TIMEOUT"
    with Locked():
        job = read_job(job_id)
        if job["state"] != "CANCELLED":
            job.update(state=state, exit_code=code)
            write_job(job)
    return 0


# --------------------------------------------------------------------------------------------
# queries and the rest


def option_value(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
            if len(name) == 2 and arg.startswith(name) and len(arg) > 2 and not arg[2] == "-":
                return arg[2:]
    return None


def status_lines(argv: list[str]) -> list[str]:
    name = option_value(argv, "--name")
    return [f"{job['id']}|{job['state']}" for job in all_jobs()
            if name is None or job["name"] == name]


def sacct(argv: list[str]) -> int:
    fmt = (option_value(argv, "--format", "-o") or "").lower()
    if "account" in fmt:
        print(os.environ.get("FAKE_SLURM_ACCOUNTS", "astro").split(",")[0])
    elif "nodelist" in fmt:
        print("fakenode1")
    else:
        print("\n".join(status_lines(argv)))
    return 0


def squeue(argv: list[str]) -> int:
    print("\n".join(status_lines(argv)))
    return 0


def accounts(argv: list[str]) -> int:
    print("\n".join(os.environ.get("FAKE_SLURM_ACCOUNTS", "astro").split(",")))
    return 0


def sinfo(argv: list[str]) -> int:
    print("PARTITION\ncpu*\ngpu")
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:2] == ["show", "config"]:
        print("MinJobAge               = 300 sec\nMaxArraySize            = 1001")
        return 0
    raise SlurmError(f"scontrol: error: the fake supports only 'show config', not {argv}")


def scancel(argv: list[str]) -> int:
    for job_id in (a for a in argv if re.fullmatch(r"\d+", a)):
        job = update_job(job_id, state="CANCELLED")
        if job.get("pid"):
            try:
                os.killpg(job["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    return 0


def srun(argv: list[str]) -> int:
    """A job step: check it fits the job's allocation, record it, run the command."""
    options: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if not eq and name in SRUN_VALUED:
            value = argv[i + 1]
            i += 1
        elif not eq and not arg.startswith("--") and len(arg) > 2:
            name, value = arg[:2], arg[2:]
        elif not eq:
            value = True
        options[name.lstrip("-")] = value
        i += 1
    command = argv[i:]
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise SlurmError("srun: error: no allocation: the fake srun runs only inside a job")
    job = read_job(job_id)["options"]
    job_gpus = int(job.get("gpus", 0) or 0)
    step_gpus = int(options.get("gpus", 0) or 0)
    if step_gpus > job_gpus:
        raise SlurmError(f"srun: error: Unable to create step for job {job_id}: "
                         f"asked for {step_gpus} GPUs, the job holds {job_gpus}")
    job_cpus = int(job.get("cpus-per-task") or 0) or int(job.get("cpus-per-gpu", 1)) * job_gpus
    step_cpus = int(options.get("cpus-per-task") or options.get("c") or 1)
    if job_cpus and step_cpus > job_cpus:
        raise SlurmError(f"srun: error: Unable to create step for job {job_id}: More "
                         f"processors requested than permitted ({step_cpus} > {job_cpus})")
    append_record("srun.jsonl", {"job_id": job_id, "argv": argv, "options": options,
                                 "command": shlex.join(command)})
    if not command:
        raise SlurmError("srun: fatal: No command given to execute.")
    env = dict(os.environ, SLURM_STEP_ID="0", SLURM_NTASKS=str(options.get("n", 1)))
    if step_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(step_gpus))
    os.execvpe(command[0], command, env)
    return 1  # not reached


COMMANDS = {"sbatch": sbatch, "sacct": sacct, "squeue": squeue, "sacctmgr": accounts,
            "sshare": accounts, "sinfo": sinfo, "scontrol": scontrol, "scancel": scancel,
            "srun": srun, "_run": lambda argv: run_job(argv[0])}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    try:
        return COMMANDS[command](args)
    except SlurmError as err:
        print(str(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
