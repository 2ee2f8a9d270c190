"""Instrument profiles: how one camera's raw files say what they are.

A profile (``config/instruments/<name>.yaml``, chosen by ``instrument.profile``) names the
header keywords that hold filter, exposure time, image type, date, gain, read noise,
saturation and field; the image-type values (or file-name patterns) of bias, dark, flat and
science frames; and where the amplifier sections come from when a header lacks
``DATASEC``/``DETSEC``/``BIASSEC``. A profile may also carry the camera's photometric
description (:data:`CONFIG_KEYS`: ``bands``, ``pixel_scale_arcsec``, ``zeropoint_mag`` and the
amplifier geometry ``n_amps``, ``amp_shape``, ``overscan_cols``), so a
user need not repeat them in the config; ``astroflow.config.apply_instrument_profile`` copies
them into the config's ``instrument`` section unless the user's config writes them itself.
Zero points are not read from headers: the profile or the config must give one per band.
The demo camera is the ``afcam`` profile, whose values are also the built-in defaults (it
carries none of these config entries, which come from the config schema), so a config
without a profile behaves exactly as before profiles existed.
"""

from __future__ import annotations

import copy
import datetime
import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

#: Folder of the shipped profiles (``config/instruments`` of the repository).
PROFILE_DIR = Path(__file__).resolve().parents[3] / "config" / "instruments"
#: Keys a profile may carry for the config's ``instrument`` section (the user's config wins).
CONFIG_KEYS = (
    "bands", "pixel_scale_arcsec", "zeropoint_mag", "n_amps", "amp_shape", "overscan_cols",
)
#: Frame types every profile must be able to recognise.
FRAME_TYPES = ("object", "bias", "dark", "flat")

#: The demo camera's conventions; every profile starts from these and overrides what it names.
DEFAULTS: dict = {
    "name": "afcam",
    "description": "built-in defaults (the simulated demo camera)",
    "keywords": {
        "imagetyp": "IMAGETYP",
        "filter": "FILTER",
        "exptime": "EXPTIME",
        "date": "DATE-OBS",
        "mjd": "MJD-OBS",
        "object": "OBJECT",
        "expnum": "EXPNUM",
        "gain": "GAIN",
        "rdnoise": "RDNOISE",
        "saturate": "SATURATE",
    },
    "imagetyp_values": {
        "object": ["object", "science", "light"],
        "bias": ["bias", "zero"],
        "dark": ["dark"],
        "flat": ["*flat*"],
    },
    "filename_patterns": {"object": [], "bias": [], "dark": [], "flat": []},
    "classify_by": ["header"],
    "pixels": {"primary_hdu": False, "bitpix": [16, 32, 64, -32, -64]},
    "sections": {
        "required": True, "datasec": None, "biassec": None, "detsec": None,
        "overscan_side": "right",
    },
    "values": {"gain": None, "rdnoise": 0.0, "saturate": None},
    "band_map": {},
    "exptime_unit": "s",
}

#: Seconds per unit of ``exptime_unit``.
EXPTIME_UNITS = {"s": 1.0, "ms": 1e-3, "min": 60.0}
#: The old FITS date form ``dd/mm/yy`` (years 1900-1999, as the standard defined it).
_OLD_DATE = re.compile(r"^\s*(\d{2})/(\d{2})/(\d{2})\s*$")
_MJD_EPOCH = datetime.datetime(1858, 11, 17)

_TYPE_LISTS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {t: {"type": "array", "items": {"type": "string"}} for t in FRAME_TYPES},
}
_SECTION = {
    "type": ["string", "null"],
    "pattern": r"^\s*\[\s*\d+\s*:\s*\d+\s*,\s*\d+\s*:\s*\d+\s*\]\s*$",
}
SCHEMA: dict = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "description": "Profile name."},
        "description": {"type": "string"},
        "keywords": {
            "type": "object",
            "description": "Header keyword that holds each quantity (null: not in headers).",
            "additionalProperties": False,
            "properties": {k: {"type": ["string", "null"]} for k in DEFAULTS["keywords"]},
        },
        "imagetyp_values": {
            **_TYPE_LISTS,
            "description": "Image-type keyword values per frame type (case-insensitive globs).",
        },
        "filename_patterns": {
            **_TYPE_LISTS,
            "description": "File-name globs per frame type (case-insensitive).",
        },
        "classify_by": {
            "type": "array",
            "description": "Ways to classify a frame, tried in order: header, filename.",
            "items": {"enum": ["header", "filename"]},
            "minItems": 1,
            "uniqueItems": True,
        },
        "pixels": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "primary_hdu": {
                    "type": "boolean",
                    "description": "Pixels may sit in the primary HDU (no image extension).",
                },
                "bitpix": {
                    "type": "array",
                    "description": "BITPIX values the camera writes (16: 16-bit integer ADU, "
                    "-32: float); other pixel types are quarantined. Default: any integer of "
                    "16 bits or more, or float (8-bit pixels cannot hold a CCD's ADU range).",
                    "items": {"enum": [8, 16, 32, 64, -32, -64]},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
        },
        "sections": {
            "type": "object",
            "description": "Amplifier sections used when a header lacks them (a header's "
            "own DATASEC/TRIMSEC, BIASSEC and DETSEC always win).",
            "additionalProperties": False,
            "properties": {
                "required": {
                    "type": "boolean",
                    "description": "true: a header without DATASEC/TRIMSEC or DETSEC (and no "
                    "fixed section here) is unusable; false: the defaults below apply.",
                },
                "datasec": _SECTION,
                "biassec": _SECTION,
                "detsec": _SECTION,
                "overscan_side": {
                    "enum": ["right", "left"],
                    "description": "Where the instrument.overscan_cols overscan columns sit in "
                    "a raw amplifier array, for the default sections: right (data first) or "
                    "left (overscan first).",
                },
            },
        },
        "bands": {
            "type": "array",
            "description": "Ordered band names (instrument.bands unless the config gives them).",
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"},
            "minItems": 1,
            "uniqueItems": True,
        },
        "pixel_scale_arcsec": {
            "type": "number",
            "description": "Pixel scale [arcsec/pixel] (instrument.pixel_scale_arcsec).",
            "exclusiveMinimum": 0,
            "maximum": 10,
        },
        "zeropoint_mag": {
            "type": "object",
            "description": "Per band, AB magnitude giving 1 e-/s (instrument.zeropoint_mag); "
            "not read from headers, so every band needs one here or in the config.",
            "additionalProperties": {"type": "number", "minimum": 10, "maximum": 40},
        },
        "n_amps": {
            "type": "integer",
            "description": "Amplifiers (image extensions) per exposure (instrument.n_amps).",
            "minimum": 1,
            "maximum": 16,
        },
        "amp_shape": {
            "type": "array",
            "description": "Light-sensitive pixels per amplifier [ny, nx] (instrument.amp_shape).",
            "items": {"type": "integer", "minimum": 64, "maximum": 8192},
            "minItems": 2,
            "maxItems": 2,
        },
        "overscan_cols": {
            "type": "integer",
            "description": "Overscan columns per amplifier (instrument.overscan_cols).",
            "minimum": 0,
            "maximum": 256,
        },
        "band_map": {
            "type": "object",
            "description": "Header filter values (exact, or case-sensitive globs such as "
            "'g*SDSS*') mapped to band names, tried in order; a value no entry matches is "
            "used as it is and must then be one of instrument.bands.",
            "additionalProperties": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"},
        },
        "exptime_unit": {
            "enum": list(EXPTIME_UNITS),
            "description": "Unit of the exposure-time keyword's value: s, ms or min.",
        },
        "values": {
            "type": "object",
            "description": "Value used when the header lacks the keyword (null: required).",
            "additionalProperties": False,
            "properties": {
                k: {"type": ["number", "null"]} for k in ("gain", "rdnoise", "saturate")
            },
        },
    },
}


@dataclass(frozen=True)
class Classification:
    """How a profile classified one file: frame type (or None) and how it decided."""

    frame_type: str | None
    how: str


class InstrumentProfile:
    """A validated instrument profile (see module docstring).

    Parameters
    ----------
    spec : dict
        The profile's YAML content; missing entries take :data:`DEFAULTS`.
    source : str
        Where it came from, for error messages.
    """

    def __init__(self, spec: dict, source: str = "<built-in>"):
        exc = jsonschema.exceptions.best_match(_validator().iter_errors(spec))
        if exc is not None:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
            raise ValueError(
                f"{source}: invalid instrument profile at {where}: {exc.message}"
            ) from exc
        merged = copy.deepcopy(DEFAULTS)
        for key, value in spec.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        self.spec = merged
        self.source = source
        self.name: str = merged["name"]
        self.keywords: dict[str, str | None] = merged["keywords"]
        self.sections: dict = merged["sections"]
        self.values: dict = merged["values"]
        self.primary_pixels: bool = bool(merged["pixels"]["primary_hdu"])
        self.bitpix: tuple[int, ...] = tuple(int(b) for b in merged["pixels"]["bitpix"])

    def config_values(self) -> dict:
        """The ``instrument`` config entries this profile gives (a subset of CONFIG_KEYS)."""
        return {k: copy.deepcopy(self.spec[k]) for k in CONFIG_KEYS if k in self.spec}

    def key(self, quantity: str) -> str | None:
        """Header keyword of ``quantity`` (``filter``, ``exptime``, ...), None if not kept."""
        return self.keywords.get(quantity)

    def get(self, header, quantity: str):
        """The header value of ``quantity``, or None when absent or blank.

        Read as the profile says: a ``filter`` value through ``band_map`` (the band name it
        maps to), a numeric ``exptime`` in seconds (``exptime_unit``).
        """
        key = self.key(quantity)
        if key is None or key not in header:
            return None
        value = header[key]
        if isinstance(value, str) and not value.strip():
            return None
        if quantity == "filter":
            return self.band_of(value)
        if quantity == "exptime" and isinstance(value, int | float) and not isinstance(
            value, bool
        ):
            return float(value) * EXPTIME_UNITS[self.spec["exptime_unit"]]
        return value

    def band_of(self, value: object) -> str:
        """The band name of a header filter value by ``band_map`` (the value itself if none
        maps it)."""
        text = str(value).strip()
        for pattern, band in self.spec["band_map"].items():
            if text == pattern or fnmatch.fnmatchcase(text, pattern):
                return band
        return text

    def mjd(self, header) -> float:
        """Modified Julian Date of the exposure start, from ``mjd`` or else ``date``.

        Dates are ISO 8601 (``2026-03-01T03:00:00.5``, ``2026-03-01``) or the old FITS form
        ``dd/mm/yy`` (19yy). Raises ValueError naming the keyword and value otherwise.
        """
        value = self.get(header, "mjd")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        value = self.get(header, "date")
        key = self.key("date") or "date"
        if value is None:
            raise ValueError(f"missing header keyword {key}")
        text = str(value).strip()
        old = _OLD_DATE.match(text)
        try:
            if old:
                day, month, year = (int(g) for g in old.groups())
                when = datetime.datetime(1900 + year, month, day)
            else:
                when = datetime.datetime.fromisoformat(text.rstrip("Z"))
        except ValueError:
            raise ValueError(
                f"{key} {text!r} is not a date (ISO 8601 or dd/mm/yy)"
            ) from None
        return (when.replace(tzinfo=None) - _MJD_EPOCH).total_seconds() / 86400.0

    def imagetyp_of(self, value: object) -> str | None:
        """Map an image-type keyword value to ``object|bias|dark|flat`` (None if unknown)."""
        text = str(value).strip().lower()
        if not text:
            return None
        for frame_type in FRAME_TYPES:
            for pattern in self.spec["imagetyp_values"].get(frame_type, []):
                if fnmatch.fnmatchcase(text, pattern.lower()):
                    return frame_type
        return None

    def filename_type(self, path: str | Path) -> str | None:
        """Frame type from the file name's patterns (None when none matches)."""
        name = Path(path).name.lower()
        for frame_type in FRAME_TYPES:
            for pattern in self.spec["filename_patterns"].get(frame_type, []):
                if fnmatch.fnmatchcase(name, pattern.lower()):
                    return frame_type
        return None

    def classify(self, header, path: str | Path) -> Classification:
        """Frame type of a file by the profile's ``classify_by`` order."""
        for way in self.spec["classify_by"]:
            if way == "header":
                key = self.key("imagetyp")
                found = self.imagetyp_of(header.get(key, "")) if key else None
                if found:
                    return Classification(found, f"{key}={header.get(key)!r}")
            else:
                found = self.filename_type(path)
                if found:
                    return Classification(found, "file name")
        return Classification(None, self.unknown_reason(header))

    def unknown_reason(self, header) -> str:
        """Why a file could not be classified, in the words of the profile."""
        key = self.key("imagetyp")
        parts = []
        if "header" in self.spec["classify_by"] and key:
            parts.append(f"unknown or missing {key} {header.get(key)!r}")
        if "filename" in self.spec["classify_by"]:
            parts.append("file name matches no filename_patterns")
        return " and ".join(parts) + f" (instrument profile {self.name!r})"


def find_profile(name_or_path: str) -> Path:
    """Path of a profile given by name (``config/instruments/<name>.yaml``) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.exists():
            raise FileNotFoundError(f"instrument profile {candidate} does not exist")
        return candidate
    for folder in (Path.cwd() / "config" / "instruments", PROFILE_DIR):
        path = folder / f"{name_or_path}.yaml"
        if path.exists():
            return path
    known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    raise FileNotFoundError(
        f"instrument profile {name_or_path!r} not found in config/instruments/ (known: {known})"
    )


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    """The validator of :data:`SCHEMA`, made once: ``jsonschema.validate`` checks the schema
    itself against its meta-schema on every call (~20 ms, most of a profile's load; the
    schema is checked once, in the tests)."""
    return jsonschema.validators.validator_for(SCHEMA)(SCHEMA)


@lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int) -> InstrumentProfile:
    with open(path) as fh:
        spec = yaml.safe_load(fh)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: an instrument profile must be a YAML mapping")
    return InstrumentProfile(spec, source=path)


def load_profile(name_or_path: str | None = None) -> InstrumentProfile:
    """Load a profile by name or path; None gives the built-in demo-camera defaults."""
    if not name_or_path:
        return InstrumentProfile({"name": DEFAULTS["name"]})
    path = find_profile(name_or_path)
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


def profile_from_config(cfg: dict | None) -> InstrumentProfile:
    """The profile a resolved config selects (``instrument.profile``)."""
    inst = (cfg or {}).get("instrument", {}) or {}
    return load_profile(inst.get("profile"))
