# Create the MLflow store once, before stage jobs open runs in parallel.


rule tracking_init:
    output:
        "results/tracking/store.json",
    params:
        cfg=stage_config("tracking"),
    log:
        "logs/tracking/init.log",
    conda:
        "../../envs/tracking.yaml"
    shell:
        "astroflow tracking init --config-json {params.cfg:q} --out {output:q} > {log:q} 2>&1"
