# Raw exposures -> master calibrations -> per-field Zarr cutout stores -> dataset index + digest.
# Fields are reduced independently, so new exposures re-reduce only the fields they touch.


rule reduce_calib:
    input:
        frames=PLAN.calib,
        plan=f"{PLAN_DIR}/calib.txt",
    output:
        manifest="results/reduce/calib/masters.json",
    params:
        cfg=stage_config("reduce"),
        code=code_version("reduce"),
        profile=PROFILE_SPEC,
        out=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        "logs/reduce/calib.log",
    benchmark:
        "results/benchmarks/reduce_calib.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/reduce.yaml"
    shell:
        "astroflow reduce calib --config-json {params.cfg:q} --frames-from {input.plan:q}"
        " --out {params.out:q} > {log:q} 2>&1"


rule reduce_field:
    input:
        exposures=lambda wildcards: SCIENCE[wildcards.field],
        plan=f"{PLAN_DIR}/fields/{{field}}.txt",
        calib="results/reduce/calib/masters.json",
        # data.labels: null: no labels catalog; "--labels" then gets no value (all labels -1)
        labels=[LABELS] if LABELS else [],
    output:
        store=directory("results/reduce/fields/{field}.zarr"),
        objects="results/reduce/fields/{field}.objects.parquet",
        quarantine="results/reduce/fields/{field}.quarantine.json",
    params:
        cfg=stage_config("reduce"),
        code=code_version("reduce"),
        profile=PROFILE_SPEC,
        calib=lambda wildcards, input: os.path.dirname(input.calib),
    log:
        "logs/reduce/field_{field}.log",
    benchmark:
        "results/benchmarks/reduce_field_{field}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/reduce.yaml"
    shell:
        "astroflow reduce field --config-json {params.cfg:q} --field {wildcards.field:q}"
        " --exposures-from {input.plan:q} --calib {params.calib:q} --labels {input.labels:q}"
        " --out-store {output.store:q} --out-objects {output.objects:q}"
        " --out-quarantine {output.quarantine:q} --threads {threads} > {log:q} 2>&1"


rule reduce_index:
    input:
        stores=expand("results/reduce/fields/{field}.zarr", field=FIELDS),
        objects=expand("results/reduce/fields/{field}.objects.parquet", field=FIELDS),
        quarantine=expand("results/reduce/fields/{field}.quarantine.json", field=FIELDS),
        fields=f"{PLAN_DIR}/fields.txt",
        unusable=f"{PLAN_DIR}/unusable.json",
        masters="results/reduce/calib/masters.json",
        store="results/tracking/store.json",
    output:
        index="results/reduce/index.json",
        objects="results/reduce/objects.parquet",
        quarantine="results/reduce/quarantine.json",
    params:
        cfg=stage_config("reduce", tracked=True),
        code=code_version("reduce"),
        profile=PROFILE_SPEC,
    log:
        "logs/reduce/index.log",
    conda:
        "../../envs/reduce.yaml"
    shell:
        "ASTROFLOW_RULE=reduce_index astroflow reduce index --config-json {params.cfg:q}"
        " --field-dir results/reduce/fields --fields-from {input.fields:q}"
        " --unusable {input.unusable:q} --masters {input.masters:q}"
        " --out-dir results/reduce > {log:q} 2>&1"
