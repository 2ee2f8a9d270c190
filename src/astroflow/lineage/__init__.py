"""Lineage: read the MLflow record of stage runs back and act on it.

- :mod:`~astroflow.lineage.manifest`: the raw-archive manifest the reduce run records.
- :mod:`~astroflow.lineage.records`: fetch runs, their upstream chain and recorded files.
- :mod:`~astroflow.lineage.runs`: ``astroflow runs`` (table) and ``astroflow runs compare``.
- :mod:`~astroflow.lineage.reproduce`: ``astroflow reproduce RUN_ID``.
- :mod:`~astroflow.lineage.predict`: ``astroflow predict --model M INPUT``.
"""
