# Lightning training from the cutout stores; one MLflow run and one registered model per model.


rule train:
    input:
        index="results/reduce/index.json",
        objects="results/reduce/objects.parquet",
        stores=expand("results/reduce/fields/{field}.zarr", field=FIELDS),
        store="results/tracking/store.json",
    output:
        checkpoint="results/train/{model}/best.ckpt",
        model=directory("results/train/{model}/model"),
        split="results/train/{model}/split.parquet",
        run="results/train/{model}/run.json",
    params:
        cfg=stage_config("train", tracked=True),
        code=code_version("train"),
        out=lambda wildcards, output: os.path.dirname(output.run),
    log:
        "logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train_{model}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../../envs/train.yaml"
    shell:
        "ASTROFLOW_RULE=train astroflow train --config-json {params.cfg:q}"
        " --model {wildcards.model:q} --index {input.index:q} --out-dir {params.out:q}"
        " --threads {threads} > {log:q} 2>&1"
