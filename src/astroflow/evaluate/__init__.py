"""Evaluate: the trained model and catalog baselines on the same held-out objects.

Metrics of Kim & Brunner (2016) with bootstrap intervals, overall and per magnitude bin
(:mod:`~astroflow.evaluate.metrics`, :mod:`~astroflow.evaluate.bootstrap`,
:mod:`~astroflow.evaluate.summary`), paired deltas ``model - baseline`` with a verdict each
(:mod:`~astroflow.evaluate.paired_delta`), baselines (:mod:`~astroflow.evaluate.baselines`),
plots (:mod:`~astroflow.evaluate.plots`, :mod:`~astroflow.evaluate.verdict_table`) and the
stage entry point (:mod:`~astroflow.evaluate.stage`).
"""
