# Shared helpers for the rules: config validation, stage params, code versions, file lists.
# Logic beyond this belongs in src/astroflow, where it is tested.
import hashlib
import json
import os
import uuid
from pathlib import Path

from astroflow import config as astroflow_config

# Validate against workflow/schemas/config.schema.yaml (defaults filled in) before any job runs;
# a bad value stops here with the dotted key named. The instrument profile's bands, pixel scale
# and zero points beat config/config.yaml's but not what the --configfile/--config files write.
try:
    _resolved = astroflow_config.validate(
        config, source="snakemake config", written=workflow.config_settings.overwrite_config
    )
except astroflow_config.ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_resolved)

# One pipeline id groups the MLflow runs of one `snakemake` invocation; jobs inherit it.
os.environ.setdefault("ASTROFLOW_PIPELINE_ID", uuid.uuid4().hex[:12])
# The whole resolved config, which every run records (config/pipeline.json), so that
# `astroflow reproduce` can rebuild a run from raw pixels, simulated survey included.
# Where reduction's exposure tasks run (worker processes, threads, LocalCluster, SLURM workers)
# goes the same way, outside the stage params: it changes how fast the outputs come, not what
# they are (the same bytes whatever the scheduler and workers: tested).
os.environ.update(
    ASTROFLOW_PIPELINE_CONFIG=json.dumps(config, sort_keys=True),
    ASTROFLOW_DASK_JSON=json.dumps(config["dask"], sort_keys=True),
)

SRC = Path(workflow.basedir) / "src" / "astroflow"
# Source files whose edits change each stage's outputs (Snakemake cannot see inside src/).
CODE_PATHS = {
    "simulate": ["simulate"],
    "reduce": ["reduce", "io"],
    "train": ["train", "split.py"],
    "evaluate": ["evaluate", "reduce", "io"],
    "predict": ["lineage/predict.py", "train"],
}
COMMON_CODE = ["config.py", "cli_common.py"]


def code_version(stage):
    """sha256 over the stage's source files, passed as a param so code edits rerun the stage."""
    digest = hashlib.sha256()
    for rel in COMMON_CODE + CODE_PATHS[stage]:
        path = SRC / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(SRC)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# Sections each stage's results depend on. A stage gets exactly these as its params, so a
# config change reruns exactly the stages that read the changed key.
STAGE_SECTIONS = {
    "simulate": ["seed", "instrument", "simulate"],
    "reduce": ["seed", "instrument", "reduce"],
    "train": ["seed", "instrument", "reduce", "train"],
    "evaluate": ["seed", "instrument", "reduce", "train", "evaluate"],
    "predict": ["predict"],
    "tracking": [],
}


# Keys that decide which jobs exist, not what any job computes: left out of every job's
# params, so adding the morphology task does not retrain or re-reduce anything it leaves alone.
DAG_ONLY_KEYS = {"train": {"tasks"}}
# Single keys of other sections that a stage reads: the labels catalog's column mapping
# (reduce matches the catalog to detections).
STAGE_KEYS = {"reduce": {"data": ["labels_columns"]}}


def stage_config(stage, tracked=False):
    """The config a stage's command receives as --config-json (shell-quoted with :q).

    ``tracked`` adds the tracking section, for jobs that open an MLflow run.
    """
    keys = STAGE_SECTIONS[stage] + (["tracking"] if tracked or stage == "tracking" else [])
    cfg = {key: config[key] for key in keys}
    for key, drop in DAG_ONLY_KEYS.items():
        if key in cfg:
            cfg[key] = {k: v for k, v in cfg[key].items() if k not in drop}
    for section, names in STAGE_KEYS.get(stage, {}).items():
        cfg[section] = {name: config[section][name] for name in names}
    return json.dumps(cfg, sort_keys=True)


# The instrument profile's contents (not just its name): editing the YAML reruns reduction.
from astroflow.io.profile import load_profile as _load_profile

PROFILE_SPEC = json.dumps(_load_profile(config["instrument"]["profile"]).spec, sort_keys=True)

RAW = config["data"]["raw_dir"]
LABELS = config["data"]["labels"]
TRUTH = config["data"]["truth"]
MODELS = config["train"]["models"]
MORPHOLOGY = "morphology" in config["train"]["tasks"]

# The plan: which raw files each reduce job takes (astroflow.io.plan). The main process makes
# it, for an own archive from the exposure sheet (headers of new or changed files only are
# read); jobs that reparse this file (cluster jobs) read the plan, never the archive. Rules
# pass its list files, so no command line grows with the survey.
from astroflow.io import plan as _plan

PLAN_DIR = "results/reduce/plan"
if not workflow.is_main_process:
    PLAN = _plan.load_plan(PLAN_DIR)
elif config["simulate"]["enabled"]:
    from astroflow.simulate import layout as _layout

    PLAN = _plan.Plan(
        calib=_layout.calib_files(config, RAW),
        science={f: _layout.science_files(config, RAW, f) for f in _layout.field_names(config)},
    )
else:
    from astroflow.io import archive as _archive

    PLAN = _plan.plan_archive(
        _archive.scan_archive(RAW, _load_profile(config["instrument"]["profile"]),
                              sheet=f"{PLAN_DIR}/sheet.parquet"),
        config["instrument"],
    )
if workflow.is_main_process:
    _plan.write_plan(PLAN, PLAN_DIR)
FIELDS = PLAN.fields
SCIENCE = PLAN.science


# A model name never holds a slash, so results/train/{model}/... cannot swallow the
# morphology task's results/train/{model}/morphology/... paths.
wildcard_constraints:
    field="[A-Za-z0-9_.+-]+",
    model="|".join(["kim_brunner", "resnet"]),

# Small bookkeeping jobs run on the submitting host, not as cluster jobs.
localrules:
    tracking_init,


onstart:
    # sqlite over a shared filesystem corrupts when jobs on several nodes write to it.
    from astroflow.dask_cluster import check_tracking_for_executor

    _warning = check_tracking_for_executor(
        os.environ.get("MLFLOW_TRACKING_URI") or config["tracking"]["uri"],
        workflow.executor_plugin.name if workflow.executor_plugin else None,
    )
    if _warning:
        logger.warning(_warning)
