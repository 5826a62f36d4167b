"""The model-optimization commands: ``aideploy prune``, ``cluster``, ``quantize`` and ``compare``.

Notebooks: ``notebooks/04_pruning.ipynb`` and ``notebooks/05_quantization.ipynb``.

Registered in :data:`aideploy.cli._COMMANDS` like every command: each
``add_<name>(subparsers)`` registers a parser whose handler returns the dict the
command prints as its last line (JSON). Settings that can be checked without
TensorFlow (a sparsity, a method name, the output folder) are checked before it
loads, so a typo costs no seconds; errors are :class:`~aideploy.errors.AideployError`
s, which :func:`aideploy.cli.main` prints as one paragraph with exit status 2.
Every file is written atomically, so a failed command leaves nothing partial behind.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aideploy import config
from aideploy.errors import ConfigError

#: Kept in step with :data:`aideploy.quantize.METHODS` without importing TensorFlow
#: to build the parser (a test checks that the two agree).
QUANTIZE_METHODS = ("dynamic", "float16", "int8", "int16x8", "qat", "ort-dynamic", "ort-static")
#: Kept in step with :data:`aideploy.quantize.CALIBRATION_METHODS`.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _whole_number(text: str) -> int:
    # Range checks belong to the settings classes, whose messages say how to fix them.
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _prepare(args: argparse.Namespace) -> None:
    """Checks that need no TensorFlow: the output folder is writable, the model file exists."""
    from aideploy import artifacts
    from aideploy.errors import ArtifactError

    artifacts.writable_dir(args.out, option="--out")
    for model in getattr(args, "models", None) or [args.model]:
        if not Path(model).exists():
            raise ArtifactError(
                f"model file {model} does not exist: train one with `aideploy train`, or check the path."
            )


def _summary(result: dict[str, Any]) -> str:
    return (
        f"Test accuracy {result['test_accuracy']:.4f}; wrote {result['path']} "
        f"({result['size_bytes']:,} bytes, {result['gzip_bytes']:,} gzip-compressed) and its manifest."
    )


# --- aideploy prune -------------------------------------------------------------


def add_prune(subparsers: argparse._SubParsersAction) -> None:
    """Register ``aideploy prune MODEL --sparsity S [--schedule] [--structure 2:4] [--fast] --out DIR``."""
    parser = subparsers.add_parser(
        "prune",
        help="prune a .keras model by weight magnitude and fine-tune it",
        description="Prune every kernel of a trained .keras model to a target sparsity (or to 2:4 "
        "structured sparsity), fine-tune it, strip the pruning wrappers and save it (.keras) with its "
        "manifest under --out. The last line is JSON with path, test_accuracy, sparsity, size_bytes "
        "and gzip_bytes.",
    )
    parser.add_argument("model", metavar="MODEL", help="the trained .keras file")
    parser.add_argument("--sparsity", type=_number, default=None,
                        help="share of zeros in (0, 1), e.g. 0.8 (required unless --structure)")  # fmt: skip
    parser.add_argument("--schedule", default="polynomial", help="polynomial (default) or constant")
    parser.add_argument("--structure", default=None, help="2:4 for structured sparsity (two zeros in four)")
    parser.add_argument("--epochs", type=_whole_number, default=None,
                        help="fine-tuning epochs (default: 10; 1 in fast mode)")  # fmt: skip
    parser.add_argument("--fast", action="store_true", help="fast mode: a subset of the data")
    parser.add_argument("--out", required=True, help="output folder for the pruned model and its manifest")
    parser.set_defaults(handler=run_prune)


def run_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``aideploy prune``: :func:`aideploy.prune.prune_and_save`."""
    if args.sparsity is None and args.structure is None:
        raise ConfigError("say how much to prune: --sparsity 0.8 (80% zeros) or --structure 2:4.")
    if args.sparsity is not None and not 0.0 < args.sparsity < 1.0:
        raise ConfigError(
            f"--sparsity must be strictly between 0 and 1 (e.g. 0.8 for 80% zeros), got {args.sparsity}."
        )
    from aideploy import compress, prune  # the settings check themselves; TensorFlow loads here

    settings = prune.PruneSettings(
        target_sparsity=args.sparsity if args.sparsity is not None else 0.5,
        schedule=args.schedule,
        structure=args.structure,
        # The comparison's fine-tuning length: two epochs lose points a longer run keeps.
        num_epochs=args.epochs if args.epochs is not None else config.fast_or_full(1, compress.PRUNE_EPOCHS),
    )
    _prepare(args)
    what = f"to {args.structure} structure" if args.structure else f"to {settings.target_sparsity:.0%} sparsity"
    print(f"Pruning {args.model} {what} ({settings.schedule} schedule, {_mode()} mode)...", flush=True)
    result = prune.prune_and_save(args.model, args.out, settings=settings)
    print(f"Sparsity {result['sparsity']:.1%}. " + _summary(result), flush=True)
    return result


# --- aideploy cluster -----------------------------------------------------------


def add_cluster(subparsers: argparse._SubParsersAction) -> None:
    """Register ``aideploy cluster MODEL --clusters K [--fast] --out DIR``."""
    parser = subparsers.add_parser(
        "cluster",
        help="cluster a .keras model's weights into k shared values and fine-tune it",
        description="Cluster each kernel of a trained .keras model into k shared values, fine-tune "
        "the centroids, strip the clustering wrappers and save it (.keras) with its manifest under --out. "
        "The last line is JSON with path, test_accuracy, size_bytes and gzip_bytes.",
    )
    parser.add_argument("model", metavar="MODEL", help="the trained .keras file")
    parser.add_argument("--clusters", type=_whole_number, required=True, help="distinct values a kernel keeps (>= 2)")
    parser.add_argument("--centroid-init", default="kmeans_plus_plus",
                        help="kmeans_plus_plus (default), linear, density_based or random")  # fmt: skip
    parser.add_argument("--epochs", type=_whole_number, default=None, help="fine-tuning epochs (default: 1)")
    parser.add_argument("--fast", action="store_true", help="fast mode: a subset of the data")
    parser.add_argument("--out", required=True, help="output folder for the clustered model and its manifest")
    parser.set_defaults(handler=run_cluster)


def run_cluster(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``aideploy cluster``: :func:`aideploy.prune.prune_and_save` with cluster settings."""
    if args.clusters < 2:
        raise ConfigError(f"--clusters must be at least 2 (one value a kernel is no model), got {args.clusters}.")
    from aideploy import prune

    settings = prune.ClusterSettings(
        num_clusters=args.clusters,
        centroid_init=args.centroid_init,
        **({"num_epochs": args.epochs} if args.epochs is not None else {}),
    )
    _prepare(args)
    print(f"Clustering {args.model} into {args.clusters} values a kernel ({_mode()} mode)...", flush=True)
    result = prune.prune_and_save(args.model, args.out, settings=settings)
    print(_summary(result), flush=True)
    return result


# --- aideploy quantize ----------------------------------------------------------


def add_quantize(subparsers: argparse._SubParsersAction) -> None:
    """Register ``aideploy quantize MODEL --method M [--calibration-size N] [--fast] --out DIR``."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a .keras model (TFLite post-training, QAT or ONNX Runtime)",
        description="Quantize a trained .keras model with one method: TFLite dynamic, float16, int8 or "
        "int16x8; quantization-aware training (qat: TFLite int8 and an ONNX QDQ graph); or ONNX Runtime "
        "ort-dynamic / ort-static. Calibration images come from the training set. The result and its "
        "manifest go under --out; the last line is JSON with path, test_accuracy, size_bytes and gzip_bytes.",
    )
    parser.add_argument("model", metavar="MODEL", help="the trained .keras file")
    parser.add_argument("--method", required=True, help=", ".join(QUANTIZE_METHODS))
    parser.add_argument("--calibration-size", type=_whole_number, default=None,
                        help="training images that calibrate int8 ranges (default: 500)")  # fmt: skip
    parser.add_argument("--calibration-method", default="minmax",
                        help="ort-static: minmax (default), entropy or percentile")  # fmt: skip
    parser.add_argument("--io-dtype", default="float32",
                        help="int8 only: the model's input/output dtype, float32 (default), int8 or uint8")  # fmt: skip
    parser.add_argument("--no-per-channel", action="store_true", help="ONNX Runtime: one scale a weight tensor")
    parser.add_argument("--epochs", type=_whole_number, default=None, help="qat: fine-tuning epochs")
    parser.add_argument("--fast", action="store_true", help="fast mode: a subset of the data")
    parser.add_argument("--out", required=True, help="output folder for the quantized model and its manifest")
    parser.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``aideploy quantize``: :func:`aideploy.quantize.quantize`."""
    if args.method not in QUANTIZE_METHODS:
        raise ConfigError(f"unknown quantization method {args.method!r}: use one of {', '.join(QUANTIZE_METHODS)}.")
    if args.calibration_method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {args.calibration_method!r}: use one of {', '.join(CALIBRATION_METHODS)}."
        )
    if args.calibration_size is not None and args.calibration_size < 1:
        raise ConfigError(
            f"--calibration-size must be at least 1 (an empty calibration set calibrates nothing), "
            f"got {args.calibration_size}."
        )
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}.")
    _prepare(args)
    from aideploy import quantize

    print(f"Quantizing {args.model} with {args.method} ({_mode()} mode)...", flush=True)
    options: dict[str, Any] = {
        "io_dtype": args.io_dtype,
        "per_channel": not args.no_per_channel,
        "calibration_method": args.calibration_method,
        "num_epochs": args.epochs,
    }
    if args.calibration_size is not None:
        options["calibration_size"] = args.calibration_size
    result = quantize.quantize(args.model, args.method, args.out, **options)
    print(_summary(result), flush=True)
    return result


# --- aideploy compare -----------------------------------------------------------


def add_compare(subparsers: argparse._SubParsersAction) -> None:
    """Register ``aideploy compare MODEL... [--baseline M] [--fast] --out DIR``."""
    parser = subparsers.add_parser(
        "compare",
        help="compare model variants: accuracy, size (raw, gzip), latency and throughput",
        description="Measure every model file (or every model in each folder) the same way: test "
        "accuracy and its change from the baseline in percentage points, size raw and gzip-compressed "
        "and the ratios to the baseline, batch-1 latency p50/p99 and throughput at batch 256, all with "
        "the same thread count. Given a single .keras file, first builds every pruned, clustered and "
        "quantized variant of it into OUT/variants (keeping those already there). Prints the table and "
        "writes comparison.csv, .json and .png under --out; the last line is JSON with their paths and "
        "the headline rows.",
    )
    parser.add_argument("models", metavar="MODEL", nargs="+", help="model files or folders (or one .keras file)")
    parser.add_argument("--baseline", default=None, help="the variant the ratios refer to (default: the first)")
    parser.add_argument("--num-threads", type=_whole_number, default=1, help="threads of every runtime (default: 1)")
    parser.add_argument("--rounds", type=_whole_number, default=None, help="latency rounds (default: 2 fast, 5 full)")
    parser.add_argument("--fast", action="store_true", help="fast mode: a subset of the data, short measurements")
    parser.add_argument("--out", required=True, help="output folder for the table, plots (and built variants)")
    parser.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``aideploy compare``: :func:`aideploy.compress.build_variants` if needed, then ``compare``."""
    if args.num_threads < 1:
        raise ConfigError(f"--num-threads must be at least 1, got {args.num_threads}.")
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {args.rounds}.")
    _prepare(args)
    if args.baseline is not None and not Path(args.baseline).exists():
        raise ConfigError(f"the baseline {args.baseline} does not exist: pass one of the model files, or leave it out.")
    from aideploy import compress, runtime

    out = Path(args.out)
    if len(args.models) == 1 and Path(args.models[0]).suffix == ".keras" and Path(args.models[0]).is_file():
        print(f"Building every variant of {args.models[0]} into {out / 'variants'} ({_mode()} mode)...", flush=True)
        paths = compress.build_variants(args.models[0], None, out / "variants")
    else:
        paths = runtime.find_models(args.models)
    print(f"Comparing {len(paths)} variants...", flush=True)
    comparison = compress.compare(
        paths, baseline=args.baseline, num_threads=args.num_threads, latency_rounds=args.rounds, progress=True
    )
    print(comparison.table(), flush=True)
    saved = comparison.save(out)
    return {
        **{kind: str(path) for kind, path in saved.items()},
        "cpu_model": comparison.settings["cpu_model"],
        "num_threads": args.num_threads,
        "baseline": comparison.settings["baseline"],
        "rows": compress.headline(comparison),
    }


def _mode() -> str:
    return "fast" if config.fast_mode() else "full"


#: The commands this module adds, in the order ``aideploy --help`` lists them.
COMMANDS = (add_prune, add_cluster, add_quantize, add_compare)
