# A trained model applied to this workflow's reduced archive (no labels needed): p_galaxy per
# object in results/predict/<model>.parquet, one MLflow run linked to the model's run and to the
# dataset. Only when predict.model names a model (config/config.yaml).
from astroflow.lineage import predict as _predict

PREDICT_MODEL = config["predict"]["model"]
PREDICT = (
    [f"results/predict/{_predict.output_name(PREDICT_MODEL)}.parquet"] if PREDICT_MODEL else []
)
# A model this workflow trains (its registered name, latest, or its results/train directory):
# predict waits for its train job. Never without labels, where nothing is trained.
PREDICT_TRAINED = (
    _predict.trained_by_workflow(PREDICT_MODEL, MODELS, config["train"]["registered_model_prefix"])
    if PREDICT_MODEL and LABELS
    else None
)

if PREDICT:

    rule predict:
        input:
            index="results/reduce/index.json",
            objects=expand("results/reduce/fields/{field}.objects.parquet", field=FIELDS),
            stores=expand("results/reduce/fields/{field}.zarr", field=FIELDS),
            store="results/tracking/store.json",
            trained=[f"results/train/{PREDICT_TRAINED}/run.json"] if PREDICT_TRAINED else [],
        output:
            table=PREDICT[0],
        params:
            cfg=stage_config("predict", tracked=True),
            code=code_version("predict"),
            # a registered name without a version is resolved when the job runs: Snakemake
            # sees this value, not the registry (docs/own_data.md)
            model=PREDICT_MODEL,
            tta="--tta" if config["predict"]["tta"] else "",
            batch_size=config["predict"]["batch_size"],
        log:
            "logs/predict/predict.log",
        benchmark:
            "results/benchmarks/predict.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        conda:
            # what train needs (torch, MLflow, zarr): the same env
            "../../envs/train.yaml"
        shell:
            "ASTROFLOW_RULE=predict astroflow predict --config-json {params.cfg:q}"
            " --model {params.model:q} {input.index:q} -o {output.table:q} {params.tta}"
            " --batch-size {params.batch_size} > {log:q} 2>&1"
