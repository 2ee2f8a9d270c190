"""The astroflow command lists every stage and rejects unknown commands."""

import subprocess
import sys

from astroflow import cli


def test_help_lists_stages(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in ("simulate", "reduce", "train", "evaluate", "tracking"):
        assert stage in out


def test_unknown_command(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_script_installed():
    out = subprocess.run(
        [sys.executable, "-m", "astroflow.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "evaluate" in out.stdout
