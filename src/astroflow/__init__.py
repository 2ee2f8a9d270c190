"""astroflow: from raw telescope pixels to a trained, evaluated, reproducible model."""

__version__ = "0.1.0"
