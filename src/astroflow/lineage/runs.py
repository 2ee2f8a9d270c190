"""``astroflow runs``: recent stage runs as a table, and ``runs compare A B``: what differs.

The table answers "which data, which code, what came out" for each run at a glance (pipeline
id, stage, dataset digest, raw-manifest digest, commit, headline metrics); ``compare`` lists the
config keys, lineage tags and metrics that differ between two runs, side by side, so a change
after a data update can be pinned on data, config or code. The evaluate stage's paired deltas
``model - baseline`` (``delta_vs_*`` and ``morphology_delta_vs_*``, each logged as the value,
``_lo``, ``_hi`` and ``_verdict``) are shown as one line each, ``+0.021 [+0.004, +0.037]
better``, in a block of their own. Both read only the tracking store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Mapping

from mlflow.entities import Run

from astroflow.lineage import records

#: Headline metrics shown in the table, per stage, in this order.
KEY_METRICS = {
    "reduce": ("n_objects", "n_quarantined"),
    "train": ("best/val_auc", "epochs_trained"),
    "evaluate": ("model_auc", "baseline_concentration_auc", "n_test"),
}
#: Lineage tags compared by ``runs compare`` (other tags are run bookkeeping).
LINEAGE_TAGS = (
    "stage", "model", "pipeline_id", "dataset_digest", "raw_manifest_digest", "git_commit",
    "git_dirty", "code_digest", "config_hash", "upstream.reduce", "upstream.train",
)
SHORT = 12
#: Suffix of the verdict metric of a paired delta (1 better, 0 undecided, -1 worse; see
#: ``astroflow.evaluate.paired_delta.VERDICT_CODE``); the value, ``_lo`` and ``_hi`` share its
#: stem.
VERDICT_SUFFIX = "_verdict"
VERDICT_WORD = {1.0: "better", 0.0: "undecided", -1.0: "worse"}


def _short(value: str | None, n: int = SHORT) -> str:
    return "-" if not value else value[:n]


def _commit(tags: Mapping[str, str]) -> str:
    commit = tags.get("git_commit")
    if not commit or commit == "unknown":
        return "unknown"
    return commit[:8] + ("+dirty" if tags.get("git_dirty") == "true" else "")


def _metric_text(run: Run) -> str:
    names = KEY_METRICS.get(run.data.tags.get("stage", ""), ())
    parts = []
    for name in names:
        if name in run.data.metrics:
            value = run.data.metrics[name]
            text = f"{value:.0f}" if float(value).is_integer() else f"{value:.4f}"
            parts.append(f"{name}={text}")
    return " ".join(parts) or "-"


def table_rows(runs: list[Run]) -> list[dict[str, str]]:
    """One row of strings per run: the columns of the ``runs`` table."""
    rows = []
    for run in runs:
        tags = run.data.tags
        start = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.UTC)
        stage = tags.get("stage", "?")
        if tags.get("model"):
            stage += f"/{tags['model']}"
        rows.append({
            "run": run.info.run_id[:SHORT],
            "started (UTC)": start.strftime("%Y-%m-%d %H:%M:%S"),
            "status": run.info.status,
            "pipeline": _short(tags.get("pipeline_id")),
            "stage": stage,
            "data digest": _short(tags.get("dataset_digest")),
            "raw manifest": _short(tags.get("raw_manifest_digest")),
            "commit": _commit(tags),
            "metrics": _metric_text(run),
        })
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """Fixed-width text table (last column unpadded)."""
    if not rows:
        return "no runs"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def delta_stems(metrics: Mapping[str, float]) -> list[str]:
    """Stems of the paired deltas among ``metrics``: the names with a ``_verdict`` metric."""
    return sorted(k[: -len(VERDICT_SUFFIX)] for k in metrics if k.endswith(VERDICT_SUFFIX))


def delta_text(metrics: Mapping[str, float], stem: str) -> str | None:
    """``"+0.021 [+0.004, +0.037] better"`` of the delta ``stem``; None when it is absent."""
    if stem + VERDICT_SUFFIX not in metrics:
        return None

    def num(key: str) -> str:
        return f"{metrics[key]:+.4f}" if key in metrics else "n/a"

    word = VERDICT_WORD.get(metrics[stem + VERDICT_SUFFIX], "?")
    return f"{num(stem)} [{num(stem + '_lo')}, {num(stem + '_hi')}] {word}"



def compare_runs(a: Run, b: Run) -> dict[str, dict[str, tuple[str | None, str | None]]]:
    """What differs between two runs: ``{"config"|"lineage"|"metrics"|"deltas": {key: (a, b)}}``.

    ``config`` holds the params (flattened config keys) that differ or exist in one run only,
    ``lineage`` the lineage tags that differ, ``deltas`` every paired delta of either run as
    text with its interval and verdict (:func:`delta_text`), ``metrics`` every other metric of
    either run with both values (side by side, equal or not). A missing value is None.
    """

    def differing(x: Mapping, y: Mapping, keys) -> dict:
        return {k: (x.get(k), y.get(k)) for k in sorted(keys) if x.get(k) != y.get(k)}

    pa, pb = a.data.params, b.data.params
    ta, tb = a.data.tags, b.data.tags
    ma, mb = a.data.metrics, b.data.metrics
    stems = sorted(set(delta_stems(ma)) | set(delta_stems(mb)))
    in_deltas = {s + suffix for s in stems for suffix in ("", "_lo", "_hi", VERDICT_SUFFIX)}
    return {
        "config": differing(pa, pb, set(pa) | set(pb)),
        "lineage": differing(ta, tb, LINEAGE_TAGS),
        "metrics": {k: (ma.get(k), mb.get(k)) for k in sorted((set(ma) | set(mb)) - in_deltas)},
        "deltas": {s: (delta_text(ma, s), delta_text(mb, s)) for s in stems},
        "same_lineage": {k: ta.get(k) for k in LINEAGE_TAGS if k in ta and ta.get(k) == tb.get(k)},
    }


def format_compare(a: Run, b: Run, diff: Mapping) -> str:
    """The ``runs compare`` report."""

    def fmt(value) -> str:
        if value is None:
            return "(absent)"
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    def block(title: str, items: Mapping, mark_equal: bool = False, align: str = ">") -> list[str]:
        lines = [title]
        if not items:
            return lines + ["  (none)"]
        width = max(len(k) for k in items)
        column = max(24, *(len(fmt(v)) for pair in items.values() for v in pair))
        for key, (va, vb) in items.items():
            flag = "" if not mark_equal else ("  " if va == vb else " *")
            lines.append(f" {flag} {key.ljust(width)}  {fmt(va):{align}{column}}  "
                         f"{fmt(vb):{align}{column}}".rstrip())
        return lines

    head = [
        f"A: {a.info.run_id}  {a.data.tags.get('stage')}  {a.info.status}",
        f"B: {b.info.run_id}  {b.data.tags.get('stage')}  {b.info.status}",
        "",
    ]
    same = diff["same_lineage"]
    shared = [f"  {k} = {v}" for k, v in same.items() if k not in {"stage", "model"}]
    out = head + block("lineage that differs (A, B):", diff["lineage"])
    out += ["", "lineage shared:"] + (shared or ["  (none)"])
    out += [""] + block("config keys that differ (A, B):", diff["config"])
    out += [""] + block("metrics (A, B; * = differ):", diff["metrics"], mark_equal=True)
    if diff["deltas"]:
        out += [""] + block("paired deltas model - baseline, 95 % interval, verdict "
                            "(A, B; * = differ):", diff["deltas"], mark_equal=True, align="<")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astroflow runs",
        description="List recent stage runs (`astroflow runs`) or compare two "
        "(`astroflow runs compare A B`).",
    )
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default=records.DEFAULT_EXPERIMENT)
    parser.add_argument("-n", "--limit", type=int, default=20, help="runs to list (newest first)")
    parser.add_argument("--stage", default=None, help="only runs of this stage")
    parser.add_argument("--pipeline", default=None, help="only runs of this pipeline id")
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astroflow runs compare",
                                     description="What differs between two runs.")
    parser.add_argument("run_a", help="run id (or unambiguous prefix)")
    parser.add_argument("run_b", help="run id (or unambiguous prefix)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default=records.DEFAULT_EXPERIMENT)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``astroflow runs`` and ``astroflow runs compare``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "compare":
            args = build_compare_parser().parse_args(argv[1:])
            mlclient = records.client(args.tracking_uri)
            a = records.find_run(mlclient, args.run_a, args.experiment)
            b = records.find_run(mlclient, args.run_b, args.experiment)
            print(format_compare(a, b, compare_runs(a, b)))
            return 0
        args = build_parser().parse_args(argv)
        mlclient = records.client(args.tracking_uri)
        filters = []
        if args.stage:
            filters.append(f"tags.stage = '{args.stage}'")
        if args.pipeline:
            filters.append(f"tags.pipeline_id = '{args.pipeline}'")
        runs = records.search(mlclient, args.experiment, " and ".join(filters), args.limit)
        print(format_table(table_rows(runs)))
        return 0
    except records.LineageError as exc:
        print(f"astroflow runs: {exc}", file=sys.stderr)
        return 1
