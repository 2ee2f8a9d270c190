"""The per-stage conda envs pin the same versions as pyproject.toml, so `--sdm conda` on a
cluster runs the code that the tests ran."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}
REQ = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)$")


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    pins = {}
    for req in reqs:
        name, spec = REQ.match(req).groups()
        pins[name.lower()] = spec.replace(" ", "")
    return pins


ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def test_every_stage_has_an_env():
    names = {path.stem for path in ENV_FILES}
    assert {"simulate", "reduce", "train", "evaluate", "tracking"} <= names


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.stem)
def test_env_pins_agree_with_pyproject(env_file):
    pins = _pyproject_pins()
    env = yaml.safe_load(env_file.read_text())
    for dep in env["dependencies"]:
        if not isinstance(dep, str) or dep.startswith(("python", "pip")):
            continue
        name, spec = REQ.match(dep).groups()
        pypi = CONDA_TO_PYPI.get(name.lower(), name.lower())
        assert pypi in pins, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert spec.replace(" ", "") == pins[pypi], (
            f"{env_file.name}: {name}{spec} disagrees with pyproject.toml {pypi}{pins[pypi]}"
        )


@pytest.mark.parametrize("rule_file", sorted((REPO / "workflow/rules").glob("*.smk")),
                         ids=lambda p: p.stem)
def test_rules_reference_existing_envs(rule_file):
    for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', rule_file.read_text()):
        assert (rule_file.parent / rel).resolve().exists(), f"{rule_file.name}: {rel} missing"
