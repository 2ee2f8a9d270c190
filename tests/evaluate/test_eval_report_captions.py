"""Report captions render (Jinja2 as Snakemake sets it up, then reStructuredText) without
errors, and every plot the stage writes has its own caption."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from docutils.core import publish_parts
from jinja2 import Environment

from astroflow.config import validate
from astroflow.evaluate.stage import OPTIONAL_PLOT_NAMES, PLOT_NAMES

REPORT_DIR = Path(__file__).resolve().parents[2] / "workflow" / "report"


def _render(caption: str, **wildcards) -> str:
    env = Environment(trim_blocks=True, lstrip_blocks=True)  # as snakemake.report does
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), config=validate({}))
    rst = env.from_string((REPORT_DIR / caption).read_text()).render(snakemake=snakemake)
    # halt_level 2: any reStructuredText warning is an error.
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2})["body"]


def test_metrics_caption():
    html = _render("metrics.rst", model="kim_brunner")
    assert "kim_brunner" in html and "0.6 arcsec" in html and "200" in html


@pytest.mark.parametrize("name", PLOT_NAMES + OPTIONAL_PLOT_NAMES)
def test_every_plot_has_a_caption(name):
    html = _render("plots.rst", model="kim_brunner", name=name)
    assert "kim_brunner" in html
    assert "Evaluation plot" not in html  # not the fallback caption
