"""Benchmark every runtime of the MLP and the CNN side by side: tf-keras, SavedModel, TFLite, ONNX Runtime.

Usage (from the repository root)::

    .venv/bin/python benchmarks/runtimes.py [--model PATH ...] [--order shuffled|forward|reverse]
                                            [--check-order] [--out benchmarks/results]

Without ``--model`` it uses ``<artifacts>/mlp.keras`` and ``<artifacts>/cnn.keras``,
training them first if they are missing (``AIDEPLOY_FAST=1`` for a quick run on
small models). For each model it exports every format, checks their parity with
tf-keras on the whole test set, then measures batch-1 latency and throughput at
batch 1, 32, 256 and 4096 with :func:`aideploy.bench.benchmark` (each runtime in
a process of its own, the same thread count for all) and prints the table:
threads, CPU model, GMAC/s and the ratios against raw
``onnxruntime.InferenceSession.run`` and the NumPy reference.

``--check-order`` runs the benchmark twice, with the runtimes taking their
turns in forward and then in reverse order, and prints each runtime's batch-1
ratios (p50 / raw ``InferenceSession.run``'s p50 and / the NumPy reference's)
from both runs side by side: they must differ by less than 15%, or a
runtime's figures depend on what ran before it.

It writes ``<model>/runtimes[-ORDER].csv|json|png`` and ``parity.json`` under
``--out`` and exits with status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aideploy import bench, config, convert, data, runtime, train

#: The conversion stage's targets (see notebooks/06_conversion.ipynb).
MAX_BATCH1_COST_VS_RAW_ONNX = 1.5
#: Largest relative difference of a batch-1 ratio between the forward and reverse orders.
MAX_ORDER_DIFFERENCE = 0.15
RATIOS = (("batch1_cost_vs_raw_onnxruntime", "/raw ORT"), ("batch1_cost_vs_numpy", "/numpy"))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 if a target is missed).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=None, help=".keras models (default: the MLP and the CNN)")
    parser.add_argument("--out", default="benchmarks/results", help="results folder (git-ignored)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(bench.DEFAULT_BATCH_SIZES))
    parser.add_argument("--num-threads", type=int, default=1, help="threads of every runtime and of BLAS")
    parser.add_argument("--order", choices=bench.ORDERS, default="shuffled", help="turn order each round")
    parser.add_argument("--check-order", action="store_true", help="run forward and reverse, compare the ratios")
    args = parser.parse_args(argv)

    model_paths = [Path(path) for path in args.model] if args.model else _default_models()
    print(f"CPU: {bench.cpu_model()}; {'fast' if config.fast_mode() else 'full'} mode", flush=True)
    checks: list[tuple[str, bool]] = []
    for model_path in model_paths:
        out_dir = Path(args.out) / model_path.stem
        checks += _one_model(model_path, out_dir, args)
    print()
    for text, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    return 0 if all(passed for _, passed in checks) else 1


def _one_model(model_path: Path, out_dir: Path, args: argparse.Namespace) -> list[tuple[str, bool]]:
    print(f"\n=== {model_path} ===", flush=True)
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

    sources = [model_path, exports["saved_model"].path, exports["tflite"].path, exports["onnx"].path]
    orders = ("forward", "reverse") if args.check_order else (args.order,)
    results = {}
    for order in orders:
        settings = bench.BenchmarkSettings.for_mode(
            batch_sizes=tuple(args.batch_sizes), num_threads=args.num_threads, order=order
        )
        print(f"\nBenchmarking {kind} ({settings.num_rounds} rounds, order {order})...", flush=True)
        result = bench.benchmark(sources, settings, progress=lambda line: print(f"  {line}", file=sys.stderr))
        print(result.table())
        name = "runtimes" if len(orders) == 1 else f"runtimes-{order}"
        paths = result.save(out_dir, name=name)
        print("Wrote " + ", ".join(str(p) for p in paths.values()))
        results[order] = result

    checks = []
    for order, result in results.items():
        cost = result.ratio("aideploy onnxruntime", bench.REFERENCE_RAW_ONNX, 1, measure="latency")
        checks.append(
            (
                f"{kind}, order {order}: ONNX Runtime predictor batch-1 cost vs raw InferenceSession.run "
                f"{_ratio(cost)} (target <= {MAX_BATCH1_COST_VS_RAW_ONNX})",
                cost is not None and cost <= MAX_BATCH1_COST_VS_RAW_ONNX,
            )
        )
    if args.check_order:
        worst = compare_orders(results["forward"], results["reverse"], kind)
        checks.append(
            (
                f"{kind}: batch-1 ratios differ by at most {worst:.1%} between forward and reverse order "
                f"(target < {MAX_ORDER_DIFFERENCE:.0%})",
                worst < MAX_ORDER_DIFFERENCE,
            )
        )
    checks.append(
        (
            f"{kind}: every export agrees with tf-keras (max |diff| <= 1e-4, top-1 >= 99.9%) "
            f"on {parity.num_examples} test images",
            parity.passed(),
        )
    )
    return checks


def compare_orders(forward: bench.BenchmarkResult, reverse: bench.BenchmarkResult, kind: str) -> float:
    """Print each runtime's batch-1 ratios from both orders side by side; returns the largest difference.

    The difference of a ratio is ``|reverse / forward - 1|``.
    """
    width = max(len(label) for label in forward.labels())
    print(f"\n{kind}: batch-1 p50 ratios, forward vs reverse order")
    header = f"{'runtime':<{width}}"
    for _, title in RATIOS:
        header += f"  {'fwd ' + title:>13}  {'rev ' + title:>13}  {'diff':>6}"
    print(header)
    worst = 0.0
    ratios_forward, ratios_reverse = forward.ratios(batch1_only=True), reverse.ratios(batch1_only=True)
    for label in forward.labels():
        line = f"{label:<{width}}"
        for key, _ in RATIOS:
            a, b = ratios_forward[label][key], ratios_reverse.get(label, {}).get(key)
            if a is None or b is None:
                line += f"  {'-':>13}  {'-':>13}  {'-':>6}"
                continue
            difference = abs(b / a - 1)
            worst = max(worst, difference)
            line += f"  {a:>13.3f}  {b:>13.3f}  {difference:>6.1%}"
        print(line)
    return worst


def _ratio(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}x"


def _default_models() -> list[Path]:
    for kind in ("mlp", "cnn"):
        train.load_or_train(kind)
    return [config.artifacts_dir() / "mlp.keras", config.artifacts_dir() / "cnn.keras"]


if __name__ == "__main__":
    sys.exit(main())
