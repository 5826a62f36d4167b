"""The ``aideploy`` command line: a thin layer over the functions the notebooks call.

Each command prints human-readable progress and ends with exactly one JSON object
on its last line of standard output, for scripts. Expected problems (bad input, a
corrupted data file) print one paragraph to standard error and exit with status 2,
without a traceback.

To add a command: write ``_add_<name>(subparsers)`` that registers its parser with
``set_defaults(handler=_run_<name>)``, and list it in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import aideploy
from aideploy import config
from aideploy.errors import AideployError

EXIT_EXPECTED_ERROR = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _print_result(result: dict[str, Any]) -> None:
    """The last line of every command: one JSON object."""
    print(json.dumps(result, default=str), flush=True)


# --- aideploy train -------------------------------------------------------------


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train, evaluate and save a model",
        description="Train a model on Fashion-MNIST, evaluate it on the test set and "
        "save it (.keras) with its JSON manifest under --out.",
    )
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="model kind (default: mlp)")
    parser.add_argument("--epochs", type=_positive_int, default=None, help="maximum epochs (default: the mode's)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: AIDEPLOY_SEED or 42)")
    parser.add_argument("--fast", action="store_true", help="fast mode: a subset of the data, few epochs")
    parser.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or a Keras-style .npz path")
    parser.add_argument("--out", required=True, help="output folder for the model and its manifest")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy import train

    mode = "fast" if config.fast_mode() else "full"
    print(f"Training the {args.model.upper()} ({mode} mode) on {args.data}...", flush=True)
    summary = train.train_and_save(
        args.model, args.out, num_epochs=args.epochs, seed=args.seed, source=args.data, verbose=2
    )
    print(
        f"Test accuracy {summary['test_accuracy']:.4f} after {summary['epochs_run']} epochs; "
        f"saved {summary['model_path']}",
        flush=True,
    )
    return summary


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="aideploy",
        description="Deploying a Keras model, step by step: train, tune, convert, serve, monitor.",
    )
    parser.add_argument("--version", action="version", version=f"aideploy {aideploy.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "fast", False):
        config.set_fast_mode(True)
    try:
        result = args.handler(args)
    except AideployError as error:
        message = textwrap.fill(f"aideploy {args.command}: error: {error}", width=100)
        print(message, file=sys.stderr, flush=True)
        return EXIT_EXPECTED_ERROR
    except KeyboardInterrupt:
        print("aideploy: interrupted", file=sys.stderr)
        return 130
    _print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
