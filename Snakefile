# astroflow: raw telescope exposures -> calibrated Zarr cutouts -> trained, evaluated classifier.
# Run `snakemake -c2` for the demo survey; `--configfile config/tiny.yaml` for the tiny one.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


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
