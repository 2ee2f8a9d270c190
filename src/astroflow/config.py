"""Load, merge and validate the astroflow configuration.

The same JSON schema (``workflow/schemas/config.schema.yaml``) is used by Snakemake before any
job runs and by every stage entry point, so a bad value is rejected with the offending key named
whichever way a stage is started. Defaults live in the schema, so a partial config (a stage's
params, a test's dict) resolves to the same values as the full file.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


def load_schema() -> dict:
    """The config JSON schema as a dict (a fresh copy: callers may change theirs)."""
    return copy.deepcopy(_parsed_schema(SCHEMA_PATH.stat().st_mtime_ns))


@functools.lru_cache(maxsize=1)
def _parsed_schema(mtime_ns: int) -> dict:
    """Parsed once per process (and schema edit): every stage validates its config, some more
    than once, and the pure-Python YAML parser took ~60 ms per parse of the schema."""
    with open(SCHEMA_PATH) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Recursively merge ``override`` onto ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _fill_defaults(schema: dict, instance: Any) -> Any:
    """Return ``instance`` with schema defaults filled in for absent object properties."""
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return instance
    out = dict(instance)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _fill_defaults(sub, out[key])
    return out


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate(cfg: Mapping, source: str = "config", written: Mapping | None = None) -> dict:
    """Validate ``cfg`` and return a copy with the profile's values and defaults filled in.

    ``written`` is what the user wrote, when ``cfg`` already holds a base file merged under it
    (Snakemake merges ``config/config.yaml`` first); see :func:`apply_instrument_profile`.

    Raises
    ------
    ConfigError
        Naming the dotted key and the problem, e.g. ``train.max_epochs: -1 is less than the
        minimum of 1``.
    """
    schema = load_schema()
    resolved = _fill_defaults(schema, apply_instrument_profile(cfg, source, written))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors]
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines))
    _check_cross_keys(resolved, source, check_simulate="simulate" in cfg)
    return resolved


def apply_instrument_profile(
    cfg: Mapping, source: str = "config", written: Mapping | None = None
) -> dict:
    """Copy the profile's bands, pixel scale and zero points into the raw user config.

    Why before defaults: once the schema's defaults are filled in, a default cannot be told
    from a value the user wrote, yet the rule is *user config > profile > schema default*. So
    this runs on the config as written; keys the user's ``instrument`` section names are kept,
    the others (of ``astroflow.io.profile.CONFIG_KEYS``) come from the profile when it gives
    them. A resolved config (every key present) passes through without loading the profile.

    Parameters
    ----------
    cfg : Mapping
        The config to resolve; its ``instrument.profile`` selects the profile.
    source : str
        Where the config came from, for error messages.
    written : Mapping, optional
        What the user wrote when ``cfg`` also holds a base file (Snakemake's default
        ``config/config.yaml`` under the ``--configfile`` files): only keys named here beat the
        profile, so the base file's demo-camera bands act as defaults. None: ``cfg`` itself.

    Raises
    ------
    ConfigError
        When ``instrument.profile`` names a profile that cannot be found or read.
    """
    from astroflow.io.profile import CONFIG_KEYS, load_profile

    out = dict(cfg)
    inst = out.get("instrument")
    user = (cfg if written is None else written).get("instrument")
    user = user if isinstance(user, Mapping) else {}
    if not isinstance(inst, Mapping) or not isinstance(inst.get("profile"), str):
        return out
    if all(key in user for key in CONFIG_KEYS) or not inst["profile"]:
        return out
    try:
        given = load_profile(inst["profile"]).config_values()
    except (OSError, ValueError, yaml.YAMLError) as exc:
        problem = f"invalid configuration in {source}:\n  instrument.profile: {exc}"
        raise ConfigError(problem) from exc
    out["instrument"] = {**inst, **{k: v for k, v in given.items() if k not in user}}
    return out


def _check_cross_keys(cfg: dict, source: str, check_simulate: bool) -> None:
    """Checks that span several keys, which JSON schema cannot express simply."""
    bands = cfg["instrument"]["bands"]
    problems = []
    missing_zp = [b for b in bands if b not in cfg["instrument"]["zeropoint_mag"]]
    if missing_zp:
        problems.append(f"instrument.zeropoint_mag: no zero point for band(s) {missing_zp}")
    if cfg["reduce"]["detection_band"] not in bands:
        problems.append(
            f"reduce.detection_band: {cfg['reduce']['detection_band']!r} is not one of "
            f"instrument.bands {bands}"
        )
    if check_simulate and cfg["simulate"]["enabled"]:
        missing_sky = [b for b in bands if b not in cfg["simulate"]["sky_mag_arcsec2"]]
        if missing_sky:
            problems.append(
                f"simulate.sky_mag_arcsec2: no sky brightness for band(s) {missing_sky}"
            )
        if cfg["simulate"]["mag_bright"] >= cfg["simulate"]["mag_faint"]:
            problems.append(
                "simulate.mag_bright: must be brighter (smaller) than simulate.mag_faint"
            )
    if cfg["train"]["crop_size"] > cfg["reduce"]["cutout_size"]:
        problems.append("train.crop_size: larger than reduce.cutout_size")
    split = cfg["train"]["split"]
    if split["val_fraction"] + split["test_fraction"] >= 1:
        problems.append("train.split: val_fraction + test_fraction must leave cells for training")
    edges = cfg["evaluate"]["mag_bins"]
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        problems.append("evaluate.mag_bins: edges must increase")
    if problems:
        raise ConfigError(f"invalid configuration in {source}:\n  " + "\n  ".join(problems))


def load_config(*paths: str | Path) -> dict:
    """Load one or more YAML files (later ones override earlier ones) and validate them."""
    merged: dict = {}
    for path in paths:
        with open(path) as fh:
            merged = deep_merge(merged, yaml.safe_load(fh) or {})
    return validate(merged, source=", ".join(str(p) for p in paths))


def from_json(text: str) -> dict:
    """Resolve a config passed on a command line as JSON (how Snakemake rules pass it)."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config-json is not valid JSON: {exc}") from exc
    return validate(cfg, source="--config-json")


def config_hash(cfg: Mapping) -> str:
    """Stable short sha256 of a config mapping (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
