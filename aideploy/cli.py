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
from aideploy import cli_compress, cli_monitor, cli_pipeline, config
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
    from aideploy import artifacts

    # Settle the cheap checks before TensorFlow loads (seconds): a bad folder or
    # seed is reported at once.
    artifacts.writable_dir(args.out, option="--out")
    config.resolve_seed(args.seed)
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


# --- aideploy convert -----------------------------------------------------------


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="export a .keras model to ONNX, TFLite or a SavedModel",
        description="Export a trained .keras model to ONNX (tf2onnx), TFLite (float32) or a "
        "TensorFlow SavedModel, written atomically under --out with a JSON manifest. The last "
        "line is JSON with the export's path, format and sha256.",
    )
    parser.add_argument("model", metavar="MODEL", help="the .keras file to export")
    parser.add_argument("--to", dest="format", required=True, choices=_export_formats(), help="target format")
    parser.add_argument("--out", required=True, help="output folder for the export and its manifest")
    parser.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: 17)")
    parser.add_argument("--name", default=None, help="base name of the export (default: the model's stem)")
    parser.set_defaults(handler=_run_convert)


def _export_formats() -> tuple[str, ...]:
    # Kept in step with aideploy.convert.FORMATS without importing TensorFlow to
    # build the parser (a test checks that the two agree).
    return ("onnx", "tflite", "saved_model")


def _run_convert(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy import artifacts

    # A bad --out is reported before TensorFlow loads (seconds).
    if args.out is not None:
        artifacts.writable_dir(args.out, option="--out")
    from aideploy import convert

    print(f"Exporting {args.model} to {args.format}...", flush=True)
    options = {"opset": args.opset} if args.opset is not None else {}
    exported = convert.export(args.model, args.format, args.out, name=args.name, **options)
    print(f"Wrote {exported.path} ({exported.size_bytes:,} bytes) and its manifest.", flush=True)
    return exported.to_dict()


# --- aideploy bench -------------------------------------------------------------


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark a model's runtimes (latency and throughput)",
        description="Measure batch-1 latency and throughput of each model file (or each model in "
        "each folder), each runtime in a process of its own with the same thread count, next to "
        "model.predict, raw onnxruntime and a NumPy reference. Prints a table, then a short JSON "
        "line (headline ratios and the results files); with --json the last line holds every measurement.",
    )
    parser.add_argument("models", metavar="MODEL_OR_DIR", nargs="+", help="model files or folders of them")
    parser.add_argument(
        "--batch-sizes", type=_positive_int, nargs="+", default=None, help="default: 1 32 256 4096"
    )
    parser.add_argument(
        "--num-threads",
        type=_positive_int,
        default=1,
        help="threads of every runtime and of NumPy's BLAS (default: 1)",
    )
    parser.add_argument(
        "--order",
        choices=("shuffled", "forward", "reverse"),
        default="shuffled",
        help="order in which the runtimes take turns each round (default: shuffled)",
    )
    parser.add_argument("--out", default=None, help="also write runtimes.csv/.json/.png into this folder")
    parser.add_argument("--json", action="store_true", help="end with every measurement as JSON")
    parser.add_argument("--fast", action="store_true", help="fast mode: short measurements")
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy import artifacts, bench, runtime

    if args.out is not None:
        artifacts.writable_dir(args.out, option="--out")
    paths = runtime.find_models(args.models)
    overrides: dict[str, Any] = {"num_threads": args.num_threads, "order": args.order}
    if args.batch_sizes:
        overrides["batch_sizes"] = tuple(args.batch_sizes)
    settings = bench.BenchmarkSettings.for_mode(**overrides)
    print(f"Benchmarking {', '.join(str(p) for p in paths)}...", file=sys.stderr, flush=True)
    result = bench.benchmark(
        paths, settings, progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True)
    )
    saved = {kind: str(path) for kind, path in result.save(args.out).items()} if args.out else {}
    if args.json:
        return {**result.to_dict(), "files": saved}
    print(result.table(), flush=True)
    return {
        "models": [str(p) for p in paths],
        "cpu_model": result.settings["cpu_model"],
        "num_threads": settings.num_threads,
        "order": settings.order,
        "batch1_p50_us": {label: round(result.get(label, 1)["p50_us"], 2) for label in result.labels()},
        "ratios": {
            label: {name: None if value is None else round(value, 3) for name, value in ratios.items()}
            for label, ratios in result.ratios(batch1_only=True).items()
        },
        "files": saved,
    }


# --- aideploy tune --------------------------------------------------------------


def _add_tune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="tune hyperparameters with Optuna (grid, random, TPE; one or two objectives)",
        description="Search hyperparameters with Optuna in a study kept in --storage (resumed if it "
        "exists), optionally with several worker processes, then retrain the best configuration on "
        "train + validation and save it as <model>_tuned.keras with its manifest under --out.",
    )
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="model kind (default: mlp)")
    parser.add_argument("--sampler", default="tpe", help="grid, random or tpe (default: tpe)")
    parser.add_argument("--trials", type=int, required=True, help="trials this run adds to the study")
    parser.add_argument(
        "--objectives", default="accuracy",
        help="accuracy, accuracy,params or accuracy,latency (default: accuracy)",
    )
    parser.add_argument("--pruner", default="median", help="median, halving or none (default: median)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the mode's)")
    parser.add_argument("--retrain-epochs", type=int, default=None, help="epochs of the final retraining")
    parser.add_argument("--space", default=None, help="JSON file: {name: [choices] or {low, high, log}}")
    parser.add_argument(
        "--storage", default=None,
        help="Optuna storage URL (default: sqlite:///OUT/tuning.db); postgresql://... needs the postgres extra",
    )
    parser.add_argument("--study", default=None, help="study name (default: <model>-<sampler>-<objectives>)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: AIDEPLOY_SEED or 42)")
    parser.add_argument("--fast", action="store_true", help="fast mode: a subset of the data, few epochs")
    parser.add_argument("--out", required=True, help="output folder for the tuned model and the trials table")
    parser.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from aideploy import tune
    from aideploy.errors import ConfigError

    space = None
    if args.space:
        try:
            mapping = json.loads(Path(args.space).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read the search space {args.space}: {error}.") from None
        space = tune.space_from_simple_dict(args.model, mapping)
    if args.retrain_epochs is not None and args.retrain_epochs < 1:
        raise ConfigError(f"--retrain-epochs must be at least 1, got {args.retrain_epochs}.")
    settings = tune.TuneSettings(
        kind=args.model,
        sampler=args.sampler,
        num_trials=args.trials,
        objectives=tuple(name.strip() for name in args.objectives.split(",") if name.strip()),
        pruner=args.pruner,
        num_epochs=args.epochs,
        seed=args.seed,
        space=space,
    )
    # Fail now rather than after the search, when the tuned model is saved.
    tune.make_folder(args.out)
    mode = "fast" if config.fast_mode() else "full"
    print(
        f"Tuning the {args.model.upper()} ({mode} mode): {args.sampler} search, {args.trials} trials, "
        f"objectives {','.join(settings.objectives)}, {args.workers} worker(s)...",
        flush=True,
    )
    result = tune.run(
        settings, storage=args.storage, study_name=args.study, workers=args.workers, out_dir=args.out
    )
    summary = result.summary()
    print(f"Best value {summary['best_value']} with {summary['best_params']}", flush=True)
    print("Retraining the best configuration on train + validation...", flush=True)
    final = tune.retrain_best(result, num_epochs=args.retrain_epochs, out_dir=args.out, seed=args.seed, verbose=2)
    trials_path = tune.save_trials(result.study, Path(args.out) / f"{result.study.study_name}_trials.json")
    print(f"Test accuracy {final['test_accuracy']:.4f}; saved {final['model_path']}", flush=True)
    return {
        **summary,
        "test_accuracy": final["test_accuracy"],
        "model_path": final["model_path"],
        "manifest_path": final["manifest_path"],
        "trials_path": str(trials_path),
        "fast_mode": config.fast_mode(),
    }


# --- aideploy publish -----------------------------------------------------------


def _add_publish(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish a model into a Triton-layout model repository",
        description="Copy an .onnx export (or convert a .keras file to ONNX first) into "
        "<repo>/<name>/<version>/model.onnx with its manifest, and write <repo>/<name>/config.pbtxt. "
        "Versions are immutable; the last line is JSON with model_dir and version.",
    )
    parser.add_argument("model", metavar="MODEL", help="an .onnx export or a .keras file")
    parser.add_argument("--repo", required=True, help="the model repository folder (created if missing)")
    parser.add_argument("--name", required=True, help="the model's name in the repository")
    parser.add_argument("--version", type=_positive_int, default=None, help="version (default: the next one)")
    parser.add_argument("--tflite", default=None, help="a .tflite export to publish beside the ONNX model")
    parser.add_argument(
        "--max-batch-size", type=_positive_int, default=64, help="largest batch in config.pbtxt (default: 64)"
    )
    parser.set_defaults(handler=_run_publish)


def _run_publish(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy import registry

    print(f"Publishing {args.model} as {args.name!r} into {args.repo}...", flush=True)
    published = registry.publish(
        args.model,
        args.repo,
        args.name,
        version=args.version,
        tflite=args.tflite,
        max_batch_size=args.max_batch_size,
    )
    print(f"Published version {published.version} in {published.version_dir}.", flush=True)
    return published.to_dict()


# --- aideploy serve -------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model repository (KServe V2 and TensorFlow Serving REST)",
        description="Serve every model of a Triton-layout repository over HTTP, speaking the KServe V2 "
        "(Open Inference Protocol) and TensorFlow Serving REST APIs, with dynamic batching and "
        "Prometheus metrics at /metrics. Stops gracefully on Ctrl-C or SIGTERM; the last line is JSON.",
    )
    parser.add_argument("repo", metavar="REPO", help="the model repository folder")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--max-batch-size", type=_positive_int, default=None, help="largest merged batch (default: config.pbtxt)"
    )
    parser.add_argument(
        "--max-queue-delay-ms", type=float, default=0.0,
        help="how long a batch waits for more requests (default: 0, as Triton's dynamic_batching)",
    )
    parser.add_argument("--runtime", choices=("onnxruntime", "tflite"), default="onnxruntime", help="model runtime")
    parser.add_argument(
        "--workers", type=_positive_int, default=1,
        help="server processes sharing the port, each with its own models and batching (default: 1)",
    )
    parser.add_argument(
        "--num-threads", type=_positive_int, default=None,
        help="threads one model call may use (ONNX Runtime intra-op, LiteRT; default: the runtime's)",
    )
    parser.add_argument(
        "--inline-below-ms", type=float, default=1.0,
        help="run a batch on the event loop when its measured model call is shorter (default: 1; 0: never)",
    )
    parser.add_argument(
        "--log-db", default=None,
        help="prediction log file (SQLite; default: <artifacts>/monitoring/predictions.db), see aideploy.monitor",
    )
    parser.add_argument("--no-log", action="store_true", help="keep no prediction log (and no drift monitoring)")
    parser.add_argument("--monitor-window", type=_positive_int, default=500, help="rows per drift window (500)")
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> dict[str, Any]:
    from aideploy import serve

    log_db = None if args.no_log else (args.log_db or str(config.artifacts_dir() / "monitoring" / "predictions.db"))
    settings = serve.ServerSettings(
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        runtime=args.runtime,
        num_threads=args.num_threads,
        inline_below_ms=args.inline_below_ms,
        log_db=log_db,
        monitor_window=args.monitor_window,
    )
    print(f"Serving {args.repo}...", flush=True)
    return serve.run(
        args.repo,
        host=args.host,
        port=args.port,
        settings=settings,
        workers=args.workers,
        on_started=lambda url: print(f"Listening on {url} (Ctrl-C to stop)", flush=True),
    )


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train, _add_convert, _add_bench, _add_tune, _add_publish, _add_serve, *cli_compress.COMMANDS,
    cli_pipeline.add_pipeline, cli_monitor.add_monitor,
]


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


def _print_error(command: str, message: str) -> None:
    """One paragraph on standard error: what went wrong and how to fix it."""
    text = " ".join(f"aideploy {command}: error: {message}".split())
    # Paths stay whole (no breaks at hyphens or inside long words), so they can be copied.
    print(textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False),
          file=sys.stderr, flush=True)


def _describe_os_error(error: OSError) -> str:
    paths = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    reason = error.strerror or type(error).__name__
    return (
        f"{reason}: {paths}. Check that the path exists and that you may read or write it, "
        "or choose another one."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Expected problems (an :class:`~aideploy.errors.AideployError`, or an
    ``OSError`` on a named path) print one paragraph to standard error and return
    2; anything else is a bug and raises with its traceback.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for an expected error or bad usage, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "fast", False):
        config.set_fast_mode(True)
    try:
        result = args.handler(args)
    except AideployError as error:
        _print_error(args.command, str(error))
        return EXIT_EXPECTED_ERROR
    except OSError as error:
        # A path the user named that cannot be read or written (a missing file, a
        # read-only folder, a full disk) is an expected problem; any other OSError
        # is a bug and keeps its traceback.
        if error.filename is None:
            raise
        _print_error(args.command, _describe_os_error(error))
        return EXIT_EXPECTED_ERROR
    except KeyboardInterrupt:
        print("aideploy: interrupted", file=sys.stderr)
        return 130
    _print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
