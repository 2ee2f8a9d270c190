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


rule all:
    input:
        expand("results/evaluate/{model}/metrics.json", model=config["train"]["models"]),
    default_target: True
