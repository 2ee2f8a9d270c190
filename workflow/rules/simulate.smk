# The demo survey: raw exposures, calibration frames and catalogs made by the simulator.
# Skipped when simulate.enabled is false (a real archive under data.raw_dir).

if config["simulate"]["enabled"]:
    # One field's exposures with the field name as a wildcard (same for every field).
    SCIENCE_PATTERNS = [
        os.path.join(RAW, "science", "{field}", os.path.basename(path).replace(FIELDS[0], "{field}", 1))
        for path in SCIENCE[FIELDS[0]]
    ]

    rule simulate_calib:
        output:
            PLAN.calib,
        params:
            cfg=stage_config("simulate"),
            code=code_version("simulate"),
            # raw/calib/<frame> -> raw
            raw=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        log:
            "logs/simulate/calib.log",
        benchmark:
            "results/benchmarks/simulate_calib.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../../envs/simulate.yaml"
        shell:
            "astroflow simulate calib --config-json {params.cfg:q} --raw-dir {params.raw:q}"
            " > {log:q} 2>&1"

    rule simulate_field:
        output:
            exposures=SCIENCE_PATTERNS,
            truth="data/catalogs/fields/{field}.truth.ecsv",
        params:
            cfg=stage_config("simulate"),
            code=code_version("simulate"),
            # raw/science/<field>/<exposure> -> raw
            raw=lambda wildcards, output: os.path.dirname(
                os.path.dirname(os.path.dirname(output.exposures[0]))
            ),
        log:
            "logs/simulate/field_{field}.log",
        benchmark:
            "results/benchmarks/simulate_field_{field}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../../envs/simulate.yaml"
        shell:
            "astroflow simulate field --config-json {params.cfg:q} --field {wildcards.field:q}"
            " --raw-dir {params.raw:q} --truth-out {output.truth:q} > {log:q} 2>&1"

    rule simulate_catalogs:
        input:
            expand("data/catalogs/fields/{field}.truth.ecsv", field=FIELDS),
        output:
            truth=TRUTH,
            # data.labels: null (reduce only: nothing reads it) still names the demo's file
            labels=LABELS or "data/catalogs/labels.ecsv",
        params:
            cfg=stage_config("simulate"),
            code=code_version("simulate"),
        log:
            "logs/simulate/catalogs.log",
        conda:
            "../../envs/simulate.yaml"
        shell:
            "astroflow simulate catalogs --config-json {params.cfg:q} --truth-in {input:q}"
            " --truth-out {output.truth:q} --labels-out {output.labels:q} > {log:q} 2>&1"
