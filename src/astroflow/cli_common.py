"""Command-line plumbing shared by every stage entry point.

Rules pass the resolved config as JSON (``--config-json``, shell-quoted by Snakemake); people
pass YAML files (``--config config/config.yaml [config/tiny.yaml]``). Both end in the same
validated dict.
"""

from __future__ import annotations

import argparse
import logging
import sys

from astroflow import config as config_mod


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE...`` / ``--config-json JSON`` to a stage parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config",
        nargs="+",
        metavar="YAML",
        default=None,
        help="config file(s); later files override earlier ones (default: config/config.yaml)",
    )
    group.add_argument("--config-json", default=None, help="resolved config as JSON (rules)")


def resolve_config(args: argparse.Namespace) -> dict:
    """The validated config from whichever of ``--config`` / ``--config-json`` was given."""
    if args.config_json is not None:
        return config_mod.from_json(args.config_json)
    return config_mod.load_config(*(args.config or ["config/config.yaml"]))


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr with timestamps: the rule's ``{log}`` captures it."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
