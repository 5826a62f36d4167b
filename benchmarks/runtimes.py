"""Benchmark every runtime of one model side by side: tf-keras, SavedModel, TFLite, ONNX Runtime.

Usage (from the repository root)::

    .venv/bin/python benchmarks/runtimes.py [--model PATH] [--out benchmarks/results]

Without ``--model`` it uses ``<artifacts>/mlp.keras``, training it first if it is
missing (``AIDEPLOY_FAST=1`` for a quick run on a small model). It exports the
model to every format, checks their parity with tf-keras on the whole test set,
then measures batch-1 latency and throughput at batch 1, 32, 256 and 4096 in this
one process, and prints the table of ratios against ``model.predict``, raw
``onnxruntime.InferenceSession.run`` and the NumPy reference. It writes
``runtimes.csv``, ``runtimes.json``, ``runtimes.png`` and ``parity.json`` under
``--out`` and exits with status 1 if a target of the conversion stage is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aideploy import bench, config, convert, data, runtime, train

#: The conversion stage's targets (see notebooks/06_conversion.ipynb).
MAX_BATCH1_COST_VS_RAW_ONNX = 1.5
MIN_LARGE_BATCH_THROUGHPUT_VS_NUMPY = 0.7


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 if a target is missed).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=".keras model (default: <artifacts>/mlp.keras)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder (git-ignored)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(bench.DEFAULT_BATCH_SIZES))
    parser.add_argument("--num-threads", type=int, default=1, help="ONNX Runtime / LiteRT threads")
    args = parser.parse_args(argv)

    model_path = Path(args.model) if args.model else _default_model()
    out_dir = Path(args.out)
    print(f"Model: {model_path} ({'fast' if config.fast_mode() else 'full'} mode)", flush=True)
    exports = convert.export_all(model_path, out_dir / "exports")
    for export in exports.values():
        print(f"  exported {export.format:<11} {export.path} ({export.size_bytes:,} bytes)")

    kind = "mlp" if runtime.load(exports["onnx"].path).input.shape[1:] == (784,) else "cnn"
    splits = data.load_splits(kind)
    parity = runtime.parity_report(model_path, [e.path for e in exports.values()], splits.x_test, splits.y_test)
    print("\nParity with tf-keras on the whole test set:")
    print(parity.table())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "parity.json").write_text(json.dumps(parity.to_dict(), indent=2) + "\n")

    settings = bench.BenchmarkSettings.for_mode(
        batch_sizes=tuple(args.batch_sizes), num_threads=args.num_threads
    )
    sources = [model_path, exports["saved_model"].path, exports["tflite"].path, exports["onnx"].path]
    print(f"\nBenchmarking ({settings.num_rounds} rounds, batch sizes {settings.batch_sizes})...", flush=True)
    result = bench.benchmark(sources, settings, progress=lambda line: print(f"  {line}", file=sys.stderr))
    print(result.table())
    paths = result.save(out_dir)
    print("\nWrote " + ", ".join(str(p) for p in paths.values()))

    largest = max(settings.batch_sizes)
    label = "aideploy onnxruntime"
    cost = result.ratio(label, bench.REFERENCE_RAW_ONNX, 1, measure="latency")
    versus_numpy = result.ratio(label, bench.REFERENCE_NUMPY, largest)
    checks = [
        (
            f"ONNX Runtime predictor batch-1 cost vs raw InferenceSession.run: {_ratio(cost)} "
            f"(target <= {MAX_BATCH1_COST_VS_RAW_ONNX})",
            cost is not None and cost <= MAX_BATCH1_COST_VS_RAW_ONNX,
        ),
        (
            f"ONNX Runtime predictor throughput at batch {largest} vs NumPy reference: {_ratio(versus_numpy)} "
            f"(target >= {MIN_LARGE_BATCH_THROUGHPUT_VS_NUMPY})",
            versus_numpy is not None and versus_numpy >= MIN_LARGE_BATCH_THROUGHPUT_VS_NUMPY,
        ),
        (
            f"every export agrees with tf-keras (max |diff| <= 1e-4, top-1 >= 99.9%) "
            f"on {parity.num_examples} test images",
            parity.passed(),
        ),
    ]
    print()
    for text, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    return 0 if all(passed for _, passed in checks) else 1


def _ratio(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}x"


def _default_model() -> Path:
    train.load_or_train("mlp")
    return config.artifacts_dir() / "mlp.keras"


if __name__ == "__main__":
    sys.exit(main())
