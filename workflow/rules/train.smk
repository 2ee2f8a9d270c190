# Lightning training from the cutout stores; one MLflow run and one registered model per model
# and task (train.tasks: the classifier always, the morphology regressor when asked for).


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


rule train_morphology:
    input:
        index="results/reduce/index.json",
        objects="results/reduce/objects.parquet",
        stores=expand("results/reduce/fields/{field}.zarr", field=FIELDS),
        store="results/tracking/store.json",
    output:
        checkpoint="results/train/{model}/morphology/best.ckpt",
        model=directory("results/train/{model}/morphology/model"),
        split="results/train/{model}/morphology/split.parquet",
        run="results/train/{model}/morphology/run.json",
    params:
        cfg=stage_config("train", tracked=True),
        code=code_version("train"),
        out=lambda wildcards, output: os.path.dirname(output.run),
    log:
        "logs/train/{model}_morphology.log",
    benchmark:
        "results/benchmarks/train_{model}_morphology.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../../envs/train.yaml"
    shell:
        "ASTROFLOW_RULE=train_morphology astroflow train --config-json {params.cfg:q}"
        " --model {wildcards.model:q} --task morphology --index {input.index:q}"
        " --out-dir {params.out:q} --threads {threads} > {log:q} 2>&1"
