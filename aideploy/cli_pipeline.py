"""``aideploy pipeline``: the main job end to end (see :mod:`aideploy.pipeline`).

Kept out of :mod:`aideploy.cli` so that the pipeline's command grows in its own
module; ``cli._COMMANDS`` registers :func:`add_pipeline`.
"""

from __future__ import annotations

import argparse
from typing import Any

from aideploy import config


def add_pipeline(subparsers: argparse._SubParsersAction) -> None:
    """Register ``aideploy pipeline`` (introduced in ``00_overview.ipynb``).

    Args:
        subparsers: The ``aideploy`` command's subparsers.
    """
    parser = subparsers.add_parser(
        "pipeline",
        help="run the whole pipeline: train, tune, prune, quantize, convert, benchmark, publish, report",
        description="Run data -> training -> tuning -> pruning -> quantization -> conversion -> parity and "
        "benchmark -> publishing into OUT/repository, then write OUT/report.md and OUT/report.html. A rerun "
        "resumes: a stage whose inputs and settings are unchanged is skipped. The last line is JSON with the "
        "report, the repository and the headline figures.",
    )
    # Not argparse choices: an unknown model gets the same one-paragraph error as
    # every other bad input.
    parser.add_argument("--model", default="mlp", help="model kind: mlp or cnn (default: mlp)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: AIDEPLOY_SEED or 42)")
    parser.add_argument("--fast", action="store_true", help="fast mode: small data, few epochs and trials")
    parser.add_argument("--out", required=True, help="the run's folder (resumed if it holds an earlier run)")
    parser.set_defaults(handler=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``aideploy pipeline`` with parsed arguments; returns the JSON summary.

    Raises:
        ConfigError: An unknown model kind.
        ArtifactError: ``--out`` cannot be written to.
    """
    from aideploy import pipeline

    settings = pipeline.PipelineSettings.for_mode(args.model, seed=args.seed)
    mode = "fast" if config.fast_mode() else "full"
    print(f"Running the pipeline for the {args.model.upper()} ({mode} mode) into {args.out}...", flush=True)
    result = pipeline.run(args.out, settings, progress=lambda line: print(line, flush=True))
    skipped = result.skipped
    print(f"Finished in {result.seconds:.1f} s" + (f" ({len(skipped)} stage(s) up to date)." if skipped else "."))
    for line in pipeline.main_summary_lines(result.summary):
        print(line, flush=True)
    return result.summary
