# astroflow: raw telescope exposures -> calibrated Zarr cutouts -> trained, evaluated classifier.
# Run `snakemake -c2` for the demo survey; `--configfile config/tiny.yaml` for the tiny one.
import os

from snakemake.utils import min_version

min_version("9.0")


# The default config lives next to this Snakefile, so `snakemake -d WORKDIR` still finds it;
# `--configfile` files merge on top of it.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/reduce.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/predict.smk"


# data.labels: null (an archive without labels) stops after reduce; predict.model adds the
# model's p_galaxy for every object of the reduced archive.
rule all:
    input:
        (
            expand("results/evaluate/{model}/metrics.json", model=config["train"]["models"])
            if LABELS
            else [
                "results/reduce/index.json",
                "results/reduce/objects.parquet",
                "results/reduce/quarantine.json",
            ]
        ),
        PREDICT,
    default_target: True
