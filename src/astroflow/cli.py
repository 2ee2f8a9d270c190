"""The ``astroflow`` command: one sub-command per pipeline stage, plus run tools.

Each sub-command hands the rest of the command line to the stage's own ``main(argv)``, which
tests call in-process. Stage modules are imported lazily so ``astroflow --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "simulate": (
        "astroflow.simulate.stage",
        "make the demo survey: raw FITS exposures, calibration frames, catalogs",
    ),
    "inspect": (
        "astroflow.io.inspect",
        "show how the instrument profile classifies a raw archive, before any reduction",
    ),
    "reduce": (
        "astroflow.reduce.stage",
        "calibrate raw exposures, detect objects, write Zarr cutout stores",
    ),
    "train": (
        "astroflow.train.stage",
        "train a classifier on the cutout stores (Lightning, tracked in MLflow)",
    ),
    "evaluate": (
        "astroflow.evaluate.stage",
        "score the model and baselines on the held-out region",
    ),
    "tracking": (
        "astroflow.tracking",
        "MLflow store tools: `init` creates the database before parallel jobs",
    ),
    "runs": (
        "astroflow.lineage.runs",
        "table of recent stage runs; `runs compare A B` shows what differs",
    ),
    "reproduce": (
        "astroflow.lineage.reproduce",
        "rerun a train/evaluate run from its raw pixels and compare the metrics",
    ),
    "predict": (
        "astroflow.lineage.predict",
        "p_galaxy for every object of a cutout store with a registered or saved model",
    ),
}

#: Errors about the user's input (config values, files, headers): reported in one line.
#: Anything else is a bug in astroflow and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError)

USAGE = "usage: astroflow <command> [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()
) + "\n\nRun `astroflow <command> --help` for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0
    if argv[0] == "--version":
        from astroflow import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"astroflow: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except USER_ERRORS as exc:
        # a problem with what the user gave (a file, a value): one line, no traceback
        if {"-v", "--verbose"} & set(rest):
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        message = " ".join(lines) or type(exc).__name__
        print(f"astroflow {name}: error: {message} (add -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
