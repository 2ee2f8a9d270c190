"""The astroflow command lists every stage and rejects unknown commands."""

import subprocess
import sys

import pytest

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


def test_a_bad_input_is_one_line_and_the_traceback_needs_v(capsys, tmp_path):
    argv = ["train", "--config-json", '{"train": {"max_epochs": -1}}', "--model", "kim_brunner",
            "--index", str(tmp_path / "index.json"), "--out-dir", str(tmp_path / "out")]
    assert cli.main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("astroflow train: error: ") and "train.max_epochs" in line
    missing = ["train", "--config-json", "{}", "--model", "kim_brunner",
               "--index", str(tmp_path / "index.json"), "--out-dir", str(tmp_path / "out")]
    assert cli.main(missing) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(tmp_path / "index.json") in line
    with pytest.raises(ValueError, match="train.max_epochs"):
        cli.main([*argv, "-v"])
