"""reduce: raw exposures -> calibrated multi-band cutouts in per-field Zarr v3 stores.

Modules, in pipeline order: :mod:`arrays` (numpy/dask twins of the pixel arithmetic),
:mod:`assemble` (overscan, trim, gain, amp placement), :mod:`masters` (bias/dark/flat),
:mod:`calibrate` (science exposures), :mod:`detect` (objects and photometry),
:mod:`cutouts` (resampled multi-band stamps), :mod:`labels`, :mod:`store` (Zarr + digest),
:mod:`field` (one field end to end, on Dask), :mod:`index` (all fields), :mod:`stage` (CLI).
"""
