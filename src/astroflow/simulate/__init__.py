"""The demo survey simulator: a seeded GalSim sky seen through a misbehaving camera.

It writes a raw archive (calibration frames and science exposures, see
``docs/data_contracts.md``) that only a real reduction can calibrate, plus the truth and
labels catalogs. :mod:`~astroflow.simulate.layout` says which files that makes without
importing GalSim.
"""
