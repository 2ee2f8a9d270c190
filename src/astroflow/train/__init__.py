"""Train stage: Lightning training of star/galaxy classifiers from the Zarr cutout stores.

Modules: ``data`` (chunk-wise Zarr loading), ``normalize`` (per-band arcsinh scale),
``augment`` (crops and dihedral transforms), ``nets`` (architectures and the normalising
classifier), ``module`` (LightningModule), ``fit`` (Trainer and callbacks), ``mlflow_model``
(MLflow logging and model saving), ``inference`` (what evaluation loads), ``stage`` (CLI).
"""
