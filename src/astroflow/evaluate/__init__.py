"""Evaluate: the trained model and catalog baselines on the same held-out objects.

Metrics of Kim & Brunner (2016) with bootstrap intervals, overall and per magnitude bin
(:mod:`~astroflow.evaluate.metrics`, :mod:`~astroflow.evaluate.bootstrap`,
:mod:`~astroflow.evaluate.summary`), baselines (:mod:`~astroflow.evaluate.baselines`), plots
(:mod:`~astroflow.evaluate.plots`) and the stage entry point (:mod:`~astroflow.evaluate.stage`).
"""
