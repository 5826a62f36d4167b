"""``aideploy monitor``: build a reference profile, report on a prediction log.

Notebook: ``notebooks/08_monitoring.ipynb``.

- ``aideploy monitor profile --repo REPO --name NAME [--version V]``: run the
  published version on the training data and save its reference profile beside
  it (``<repo>/<name>/<version>/reference.json``), which the server loads;
- ``aideploy monitor report --db PATH [--reference PATH] --out DIR``: summarise
  the log (windows, drift flags, accuracy, alerts), write the plots, and print
  the summary as JSON last.
"""

from __future__ import annotations

import argparse
from typing import Any

from aideploy import config


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_monitor(subparsers: argparse._SubParsersAction) -> None:
    """Register ``aideploy monitor`` and its subcommands."""
    parser = subparsers.add_parser(
        "monitor",
        help="reference profiles and prediction-log reports (drift, accuracy, alerts)",
        description="Monitoring of a served model: `profile` saves a version's reference profile, "
        "`report` summarises a prediction log and writes plots. The last line is JSON.",
    )
    commands = parser.add_subparsers(dest="monitor_command", metavar="SUBCOMMAND")
    commands.required = True

    profile = commands.add_parser(
        "profile",
        help="build a published version's reference profile from the training data",
        description="Run the published ONNX model on the Fashion-MNIST training images and save the "
        "reference profile (input summary, predicted classes, confidences; accuracy on the validation "
        "split) beside it as "
        "<repo>/<name>/<version>/reference.json with its manifest.",
    )
    profile.add_argument("--repo", required=True, help="the model repository")
    profile.add_argument("--name", required=True, help="the model's name")
    profile.add_argument("--version", default=None, help="the version (default: the newest)")
    profile.add_argument("--fast", action="store_true", help="fast mode: a subset of the training data")
    profile.set_defaults(handler=_run_profile)

    report = commands.add_parser(
        "report",
        help="summarise a prediction log and write its plots",
        description="Summarise a prediction log: windows, drift flags per feature, accuracy from delayed "
        "labels, alerts. Without --reference it reads the windows the server computed; with it, it "
        "recomputes drift over count windows (--window-size) or time windows (--window-seconds).",
    )
    report.add_argument("--db", required=True, help="the prediction log (SQLite)")
    report.add_argument("--reference", default=None, help="a reference.json to recompute drift against")
    report.add_argument("--out", required=True, help="folder for the plots and summary.json")
    report.add_argument("--window-size", type=_positive_int, default=500, help="rows per count window (default: 500)")
    report.add_argument("--window-seconds", type=float, default=None, help="time windows of this many seconds")
    report.add_argument("--psi-moderate", type=float, default=0.1, help="PSI of a moderate shift (default: 0.1)")
    report.add_argument("--psi-major", type=float, default=0.25, help="PSI of a major shift (default: 0.25)")
    report.add_argument("--p-value", type=float, default=0.01, help="significance of the tests (default: 0.01)")
    report.set_defaults(handler=_run_report)


def _run_profile(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy import data
    from aideploy.monitor import profile

    splits = data.load_splits("mlp")
    mode = "fast" if config.fast_mode() else "full"
    print(f"Profiling {args.name!r} in {args.repo} on {len(splits.x_train):,} training images ({mode} mode)...",
          flush=True)
    path = profile.profile_version(args.repo, args.name, splits.x_train, version=args.version,
                                   validation=(splits.x_val, splits.y_val))
    reference = profile.load_profile(path)
    print(f"Saved {path}", flush=True)
    return {"path": str(path), "model": reference.model, "version": reference.version,
            "num_samples": reference.num_samples, "accuracy": reference.accuracy}


def _run_report(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy.monitor import drift, profile, report

    settings = drift.DriftSettings(psi_moderate=args.psi_moderate, psi_major=args.psi_major, p_value=args.p_value,
                                   window_size=args.window_size)
    reference = profile.load_profile(args.reference) if args.reference else None
    print(f"Reading {args.db}...", flush=True)
    summary = report.write_report(args.db, args.out, reference, settings=settings,
                                  window_seconds=args.window_seconds)
    for key, entry in summary["models"].items():
        flagged = sum(w["drift"] for w in entry["windows"])
        print(f"{key}: {len(entry['windows'])} windows, {flagged} with drift, {len(entry['alerts'])} alerts",
              flush=True)
    print(f"Wrote {len(summary['plots'])} plots and {summary['summary_path']}", flush=True)
    return summary
