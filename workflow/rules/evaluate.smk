# Score the model and the classical baselines on the same held-out sky region.


rule evaluate:
    input:
        index="results/reduce/index.json",
        objects="results/reduce/objects.parquet",
        stores=expand("results/reduce/fields/{field}.zarr", field=FIELDS),
        model="results/train/{model}/model",
        split="results/train/{model}/split.parquet",
        run="results/train/{model}/run.json",
        truth=[TRUTH] if TRUTH else [],
        # the list of raw detection frames (and the masters) for the SExtractor CLASS_STAR and
        # SPREAD_MODEL baselines; the frames themselves are not inputs: an edited frame reruns
        # its field's reduction, whose store is, and listing 10^5 paths here would cost every
        # job's parse of the workflow seconds
        science=f"{PLAN_DIR}/science.txt",
        calib="results/reduce/calib/masters.json",
        # the morphology regressor, scored into metrics.json's "morphology" key
        morphology=(
            [
                "results/train/{model}/morphology/model",
                "results/train/{model}/morphology/split.parquet",
                "results/train/{model}/morphology/run.json",
            ]
            if MORPHOLOGY
            else []
        ),
    output:
        metrics=report(
            "results/evaluate/{model}/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{model}",
        ),
        predictions="results/evaluate/{model}/predictions.parquet",
        plots=report(
            directory("results/evaluate/{model}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Evaluation",
            subcategory="{model}",
        ),
        run="results/evaluate/{model}/run.json",
    params:
        cfg=stage_config("evaluate", tracked=True),
        code=code_version("evaluate"),
        profile=PROFILE_SPEC,
        train_dir=lambda wildcards, input: os.path.dirname(input.run),
        out=lambda wildcards, output: os.path.dirname(output.run),
        calib=lambda wildcards, input: os.path.dirname(input.calib),
        morphology=lambda wildcards, input: (
            os.path.dirname(input.morphology[-1]) if input.morphology else ""
        ),
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "results/benchmarks/evaluate_{model}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "ASTROFLOW_RULE=evaluate astroflow evaluate --config-json {params.cfg:q}"
        " --model {wildcards.model:q} --index {input.index:q} --train-dir {params.train_dir:q}"
        " --truth {input.truth:q} --exposures-from {input.science:q} --calib {params.calib:q}"
        " --morphology-dir {params.morphology:q}"
        " --out-dir {params.out:q} --threads {threads} > {log:q} 2>&1"
