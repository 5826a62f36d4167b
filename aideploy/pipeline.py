"""The main job end to end: data to a served model repository, resumable, with a report.

Notebook: ``notebooks/00_overview.ipynb``. Command: ``aideploy pipeline``.

:func:`run` chains the stages the numbered notebooks teach one by one: data →
training → a short tuning study → pruning → quantization → conversion →
parity and benchmark → publishing into a model repository → the report. Each
stage writes its files through :mod:`aideploy.artifacts` and then a *stage
manifest* (``<out>/stages/<stage>.json``) with the SHA-256 of its inputs and of
its outputs and the settings it ran with. A later run skips a stage whose
manifest still matches (same settings, same input hashes, every output present
and unchanged) and reruns it otherwise, together with every stage downstream of
what changed. A run that was interrupted therefore resumes where it stopped.

TensorFlow is imported only by stages that run: a run that finds everything up
to date finishes in about a second.

The pruning, quantization and conversion stages call the same helpers as
:func:`aideploy.compress.build_variants` (``prune.prune_and_save``,
``quantize.quantize``, ``convert.export``) but build a chosen subset of its
variants, so that fast mode stays within about half a minute; the pruned + int8
variant here is post-training int8 of the pruned model. The evaluation stage
measures latency with :func:`aideploy.bench.benchmark`, each runtime in a process
of its own, because the pipeline's process has TensorFlow loaded, which slows
ONNX Runtime calls made beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aideploy import artifacts, config
from aideploy.errors import ArtifactError, ConfigError

#: The stages in the order they run.
STAGES = (
    "data", "training", "tuning", "pruning", "quantization", "conversion", "evaluation", "publishing", "report",
)
MODEL_KINDS = ("mlp", "cnn")
STAGES_DIR = "stages"
REPOSITORY_DIR = "repository"


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline runs in each mode.

    Introduced in ``00_overview.ipynb``. :meth:`for_mode` gives the defaults of
    fast mode (a few seconds a stage, for tests and ``make demo``) and of full mode
    (the whole list, minutes).

    Attributes:
        kind: ``"mlp"`` or ``"cnn"``.
        seed: Seed of data splits, training and tuning.
        tuning_trials: Trials of the TPE study.
        tuning_epochs: Epochs per trial.
        retrain_epochs: Epochs of retraining the best configuration on train + validation.
        sparsities: Target sparsities of magnitude pruning.
        prune_epochs: Fine-tuning epochs while pruning.
        quantization_methods: Post-training methods of :mod:`aideploy.quantize` applied to the tuned model.
        pruned_int8: Also quantize the first pruned model to full int8 (sparsity and int8 combined).
        benchmark_batch_sizes: Batch sizes of the runtime benchmark.
        fast: Whether these are the fast-mode settings.
    """

    kind: str = "mlp"
    seed: int = config.DEFAULT_SEED
    tuning_trials: int = 12
    tuning_epochs: int = 4
    retrain_epochs: int = 20
    sparsities: tuple[float, ...] = (0.5, 0.8, 0.9)
    prune_epochs: int = 10
    quantization_methods: tuple[str, ...] = ("dynamic", "float16", "int8", "ort-dynamic", "ort-static")
    pruned_int8: bool = True
    benchmark_batch_sizes: tuple[int, ...] = (1, 32, 256)
    fast: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model {self.kind!r}: use one of {', '.join(MODEL_KINDS)} (--model mlp).")
        if self.tuning_trials < 1 or self.tuning_epochs < 1 or self.retrain_epochs < 1 or self.prune_epochs < 1:
            raise ConfigError("trials and epochs of the pipeline must be at least 1.")
        if not self.sparsities:
            raise ConfigError("give at least one target sparsity, e.g. (0.8,).")

    @classmethod
    def for_mode(cls, kind: str = "mlp", *, seed: int | None = None, **overrides: Any) -> PipelineSettings:
        """Fast-mode or full-mode settings (:func:`aideploy.config.fast_mode`), with ``overrides``.

        Args:
            kind: ``"mlp"`` or ``"cnn"``.
            seed: Seed (default: the configured seed).
            **overrides: Any attribute of :class:`PipelineSettings`.

        Returns:
            The settings.

        Raises:
            ConfigError: An unknown model kind or an invalid setting.
        """
        base = FAST_SETTINGS if config.fast_mode() else {}
        return cls(kind=kind, seed=config.resolve_seed(seed), **{**base, **overrides})


#: What fast mode changes in :class:`PipelineSettings`: a run of about half a minute.
FAST_SETTINGS: dict[str, Any] = dict(
    tuning_trials=3, tuning_epochs=2, retrain_epochs=2, sparsities=(0.8,), prune_epochs=1,
    quantization_methods=("dynamic", "int8"), pruned_int8=False, benchmark_batch_sizes=(1, 256), fast=True,
)  # fmt: skip


@dataclass
class PipelineResult:
    """What a pipeline run produced.

    Attributes:
        out_dir: The run's folder.
        summary: The headline figures and paths (what the last line of ``aideploy pipeline`` prints).
        stages: Per stage: ``status`` (``"ran"`` or ``"skipped"``) and ``seconds``.
        seconds: Wall time of this run.
    """

    out_dir: Path
    summary: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped(self) -> list[str]:
        """The stages this run found up to date."""
        return [name for name, entry in self.stages.items() if entry["status"] == "skipped"]


# --- stage bookkeeping ------------------------------------------------------------


def stage_manifest_path(out_dir: str | os.PathLike, stage: str) -> Path:
    """Where the manifest of ``stage`` lies: ``<out_dir>/stages/<stage>.json``."""
    return Path(out_dir) / STAGES_DIR / f"{stage}.json"


def _hashes(out_dir: Path, paths: Mapping[str, str]) -> dict[str, str | None]:
    """SHA-256 of files named relative to ``out_dir`` (``None`` for a missing one)."""
    return {
        name: artifacts.sha256_of(out_dir / relative) if (out_dir / relative).exists() else None
        for name, relative in sorted(paths.items())
    }


def _up_to_date(
    out_dir: Path, stage: str, settings: Mapping[str, Any], inputs: Mapping[str, str | None]
) -> dict[str, Any] | None:
    """The stage's recorded result if it can be reused, else ``None``."""
    path = stage_manifest_path(out_dir, stage)
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if recorded.get("settings") != json.loads(json.dumps(settings)) or recorded.get("inputs") != dict(inputs):
        return None
    # Every output must still be there and unchanged: a deleted or edited model reruns its stage.
    outputs = recorded.get("outputs", {})
    if _hashes(out_dir, outputs) != recorded.get("output_sha256"):
        return None
    return recorded


def _record(out_dir: Path, stage: str, settings: Mapping[str, Any], inputs: Mapping[str, str | None],
            outputs: Mapping[str, str], result: Mapping[str, Any], seconds: float) -> dict[str, Any]:  # fmt: skip
    manifest = {
        "stage": stage,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
        "settings": dict(settings),
        "inputs": dict(inputs),
        "outputs": dict(outputs),
        "output_sha256": _hashes(out_dir, outputs),
        "result": dict(result),
    }
    artifacts.write_json(stage_manifest_path(out_dir, stage), manifest)
    return json.loads(json.dumps(manifest, default=str))


class _Context:
    """State shared by the stages of one run: folders, settings, lazily loaded data."""

    def __init__(self, out_dir: Path, settings: PipelineSettings, say: Callable[[str], None],
                 display_dir: Path | None = None) -> None:  # fmt: skip
        self.out_dir = out_dir
        # The folder as the user named it: what the report, the summary and the
        # commands they print show (no absolute path of the machine that ran it).
        self.display_dir = display_dir or out_dir
        self.settings = settings
        self.say = say
        self.records: dict[str, dict[str, Any]] = {}
        self._splits: Any = None

    @property
    def splits(self) -> Any:
        # Loaded on first use: a run whose stages are all up to date never reads the data.
        if self._splits is None:
            from aideploy import data

            self._splits = data.load_splits(self.settings.kind, seed=self.settings.seed)
        return self._splits

    def rel(self, path: str | os.PathLike) -> str:
        return Path(path).resolve().relative_to(self.out_dir.resolve()).as_posix()

    def outputs_of(self, *stages: str) -> dict[str, str]:
        """The outputs of earlier stages, prefixed with the stage: the inputs of a later one."""
        return {f"{stage}/{name}": rel for stage in stages for name, rel in self.records[stage]["outputs"].items()}

    def result(self, stage: str) -> dict[str, Any]:
        return self.records[stage]["result"]


# --- the stages ---------------------------------------------------------------------
# Each returns (outputs: {name: path}, result: JSON-ready figures). Switching pruning,
# quantization or the comparison to another implementation changes only its function.


def _stage_data(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import data

    summary = data.summarize(ctx.splits)
    path = artifacts.write_json(ctx.out_dir / "data" / "summary.json", summary)
    return {"summary": path}, {"sizes": summary["sizes"], "input_shape": summary["input_shape"]}


def _stage_training(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import train

    summary = train.train_and_save(ctx.settings.kind, ctx.out_dir / "models", seed=ctx.settings.seed, verbose=0)
    keep = ("test_accuracy", "epochs_run", "best_epoch", "parameters", "training_seconds")
    return {"model": Path(summary["model_path"])}, {key: summary[key] for key in keep}


def _stage_tuning(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import tune

    folder = ctx.out_dir / "tuning"
    # A rerun starts a fresh study: resuming the old one would add trials to it and
    # make the result depend on how often the stage ran.
    shutil.rmtree(folder, ignore_errors=True)
    settings = tune.TuneSettings(
        kind=ctx.settings.kind, sampler="tpe", num_trials=ctx.settings.tuning_trials,
        num_epochs=ctx.settings.tuning_epochs, seed=ctx.settings.seed,
        tpe_startup_trials=min(4, ctx.settings.tuning_trials),
    )  # fmt: skip
    result = tune.run(settings, out_dir=folder, splits=ctx.splits, progress=False)
    final = tune.retrain_best(
        result, splits=ctx.splits, num_epochs=ctx.settings.retrain_epochs, out_dir=folder, seed=ctx.settings.seed
    )
    trials = tune.save_trials(result.study, folder / "trials.json")
    summary = result.summary()
    return {"model": Path(final["model_path"]), "trials": trials}, {
        "best_params": summary["best_params"],
        "best_validation_accuracy": summary["best_value"],
        "n_trials": summary["n_trials"],
        "n_pruned": summary["n_pruned"],
        "test_accuracy": final["test_accuracy"],
        "search_seconds": summary["search_seconds"],
    }


def _source(ctx: _Context) -> Path:
    """The model every variant is made from: the tuned one (the best configuration, retrained)."""
    return ctx.out_dir / ctx.records["tuning"]["outputs"]["model"]


def _stage_pruning(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import prune

    outputs, rows = {}, {}
    for sparsity in ctx.settings.sparsities:
        tag = f"prune{round(sparsity * 100)}"
        settings = prune.PruneSettings(target_sparsity=sparsity, num_epochs=ctx.settings.prune_epochs,
                                       seed=ctx.settings.seed)  # fmt: skip
        done = prune.prune_and_save(_source(ctx), ctx.out_dir / "variants", settings=settings, splits=ctx.splits,
                                    name=f"{ctx.settings.kind}-{tag}")  # fmt: skip
        outputs[tag] = Path(done["path"])
        rows[tag] = {"test_accuracy": done["test_accuracy"], "sparsity": round(done["sparsity"], 4)}
    return outputs, rows


def _stage_quantization(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import quantize

    outputs, rows = {}, {}
    jobs = [(method, _source(ctx), ctx.settings.kind) for method in ctx.settings.quantization_methods]
    if ctx.settings.pruned_int8:
        first = ctx.out_dir / ctx.records["pruning"]["outputs"][f"prune{round(ctx.settings.sparsities[0] * 100)}"]
        jobs.append(("int8", first, first.stem))
    for method, model, stem in jobs:
        done = quantize.quantize(model, method, ctx.out_dir / "variants", splits=ctx.splits, name=stem)
        key = method if model == _source(ctx) else f"{Path(stem).name.split('-', 1)[-1]}+{method}"
        outputs[key] = Path(done["path"])
        rows[key] = {"test_accuracy": done["test_accuracy"]}
    return outputs, rows


def _stage_conversion(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import convert

    outputs: dict[str, Path] = {}
    models = {"fp32": _source(ctx)}
    models.update({tag: ctx.out_dir / rel for tag, rel in ctx.records["pruning"]["outputs"].items()})
    for tag, model in models.items():
        formats = ("onnx", "tflite") if tag == "fp32" else ("tflite",)
        for fmt in formats:
            exported = convert.export(model, fmt, ctx.out_dir / "exports", name=f"{ctx.settings.kind}-{tag}")
            outputs[f"{tag}-{fmt}"] = Path(exported.path)
    return outputs, {"formats": sorted(outputs)}


def _variants(ctx: _Context) -> dict[str, Path]:
    """Every deployable file, by the name the report uses, the float32 baseline first."""
    rel = ctx.records["conversion"]["outputs"]
    found = {"fp32 ONNX": rel["fp32-onnx"], "fp32 TFLite": rel["fp32-tflite"]}
    for tag in ctx.records["pruning"]["outputs"]:
        found[f"{tag} TFLite"] = rel[f"{tag}-tflite"]
    for key, path in ctx.records["quantization"]["outputs"].items():
        found[f"{key} {'ONNX' if path.endswith('.onnx') else 'TFLite'}"] = path
    return {name: ctx.out_dir / path for name, path in found.items()}


def _stage_evaluation(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import report as report_module

    variants = _variants(ctx)
    folder = ctx.out_dir / "evaluation"
    ctx.say(f"    measuring {len(variants)} files: accuracy, size, latency (each runtime in a process of its own)")
    comparison = report_module.compare_variants(
        variants, _source(ctx), ctx.splits, batch_sizes=ctx.settings.benchmark_batch_sizes
    )
    outputs = report_module.save_comparison(comparison, folder)
    return outputs, comparison


def _stage_publishing(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import registry

    rel = ctx.records["conversion"]["outputs"]
    published = registry.publish(
        ctx.out_dir / rel["fp32-onnx"], ctx.out_dir / REPOSITORY_DIR, ctx.settings.kind,
        tflite=ctx.out_dir / rel["fp32-tflite"],
    )  # fmt: skip
    version_dir = published.version_dir
    return {"onnx": version_dir / "model.onnx", "config": published.model_dir / "config.pbtxt"}, {
        "name": published.name,
        "version": published.version,
        "files": published.files,
    }


def _stage_report(ctx: _Context) -> tuple[dict[str, Path], dict[str, Any]]:
    from aideploy import report as report_module

    paths = report_module.write_report(ctx.out_dir, ctx.records, ctx.settings, reproduce=reproduce_command(ctx),
                                       display_dir=ctx.display_dir)  # fmt: skip
    return paths, {"files": sorted(paths)}


_RUNNERS: dict[str, Callable[[_Context], tuple[dict[str, Path], dict[str, Any]]]] = {
    "data": _stage_data,
    "training": _stage_training,
    "tuning": _stage_tuning,
    "pruning": _stage_pruning,
    "quantization": _stage_quantization,
    "conversion": _stage_conversion,
    "evaluation": _stage_evaluation,
    "publishing": _stage_publishing,
    "report": _stage_report,
}

#: Which earlier stages' outputs each stage reads (their hashes are its inputs).
_DEPENDS_ON = {
    "data": (),
    "training": ("data",),
    "tuning": ("data",),
    "pruning": ("tuning",),
    "quantization": ("tuning", "pruning"),
    "conversion": ("tuning", "pruning"),
    "evaluation": ("tuning", "pruning", "quantization", "conversion"),
    "publishing": ("conversion",),
    "report": ("training", "tuning", "pruning", "quantization", "conversion", "evaluation", "publishing"),
}


def _stage_settings(settings: PipelineSettings, stage: str) -> dict[str, Any]:
    common = {"kind": settings.kind, "seed": settings.seed, "fast": settings.fast}
    specific = {
        "tuning": {"trials": settings.tuning_trials, "epochs": settings.tuning_epochs,
                   "retrain_epochs": settings.retrain_epochs},  # fmt: skip
        "pruning": {"sparsities": list(settings.sparsities), "epochs": settings.prune_epochs},
        "quantization": {"methods": list(settings.quantization_methods), "pruned_int8": settings.pruned_int8},
        "evaluation": {"batch_sizes": list(settings.benchmark_batch_sizes)},
    }
    return {**common, **specific.get(stage, {})}


def _data_inputs() -> dict[str, str]:
    # The bundled files' own checksums (verified against SHA256SUMS): a changed data
    # file reruns everything.
    from aideploy import data

    checksums = data.verify_checksums(config.data_dir() / "fashion-mnist")
    return {f"data/{name}": digest for name, digest in checksums.items()}


def reproduce_command(ctx: _Context | None = None, *, kind: str = "mlp", fast: bool = False,
                      out_dir: str | os.PathLike = "artifacts/pipeline", seed: int | None = None) -> str:  # fmt: skip
    """The shell command that reruns this pipeline from scratch.

    Introduced in ``00_overview.ipynb``; the report quotes it.
    """
    if ctx is not None:
        kind, fast, out_dir, seed = ctx.settings.kind, ctx.settings.fast, ctx.display_dir, ctx.settings.seed
    parts = [f"AIDEPLOY_SEED={seed}"] if seed is not None else []
    parts += ["aideploy", "pipeline", *(["--fast"] if fast else []), "--model", kind]
    parts += ["--out", shlex.quote(str(out_dir))]
    return " ".join(parts)


def run(
    out_dir: str | os.PathLike,
    settings: PipelineSettings | None = None,
    *,
    progress: Callable[[str], None] | None = print,
) -> PipelineResult:
    """Run (or resume) the whole pipeline into ``out_dir``.

    Stages whose settings and input hashes match their manifest, and whose outputs
    are present and unchanged, are skipped; the others run, and so does every stage
    that reads what they wrote. Introduced in ``00_overview.ipynb``; ``aideploy
    pipeline`` calls it.

    Args:
        out_dir: The run's folder (created if missing). The model repository is
            ``<out_dir>/repository``, the report ``<out_dir>/report.md`` and ``.html``.
        settings: What to run (default: :meth:`PipelineSettings.for_mode`).
        progress: Called with a line of text as each stage starts and ends (``None``: silent).

    Returns:
        The :class:`PipelineResult`.

    Raises:
        ArtifactError: ``out_dir`` cannot be written to (checked before any work).
        ConfigError: An invalid setting.
        DataError: The data files are missing or corrupted.
    """
    started = time.perf_counter()
    display_dir = Path(out_dir).expanduser()
    out_dir = artifacts.writable_dir(out_dir, option="--out").resolve()
    settings = settings or PipelineSettings.for_mode()
    say = progress or (lambda line: None)
    ctx = _Context(out_dir, settings, say, display_dir)
    data_hashes = _data_inputs()
    stages: dict[str, dict[str, Any]] = {}
    for number, stage in enumerate(STAGES, start=1):
        stage_settings = _stage_settings(settings, stage)
        inputs: dict[str, str | None] = dict(data_hashes) if stage == "data" else {}
        inputs.update(_hashes(out_dir, ctx.outputs_of(*_DEPENDS_ON[stage])))
        label = f"[{number}/{len(STAGES)}] {stage:<12}"
        recorded = _up_to_date(out_dir, stage, stage_settings, inputs)
        if recorded is not None:
            ctx.records[stage] = recorded
            stages[stage] = {"status": "skipped", "seconds": 0.0}
            say(f"{label} up to date, skipped (ran in {recorded['seconds']:.1f} s)")
            continue
        say(f"{label} running...")
        stage_started = time.perf_counter()
        outputs, result = _RUNNERS[stage](ctx)
        seconds = time.perf_counter() - stage_started
        relative = {name: ctx.rel(path) for name, path in outputs.items()}
        ctx.records[stage] = _record(out_dir, stage, stage_settings, inputs, relative, result, seconds)
        stages[stage] = {"status": "ran", "seconds": round(seconds, 2)}
        say(f"{label} done in {seconds:.1f} s")
    total = time.perf_counter() - started
    summary = headline(ctx.records, display_dir)
    summary["stages"] = {name: entry["status"] for name, entry in stages.items()}
    summary["seconds"] = round(total, 2)
    summary["fast_mode"] = settings.fast
    return PipelineResult(out_dir=out_dir, summary=summary, stages=stages, seconds=total)


def headline(records: Mapping[str, Mapping[str, Any]], out_dir: str | os.PathLike) -> dict[str, Any]:
    """The figures and paths a reader (or a script) wants first, from the stage manifests.

    Introduced in ``00_overview.ipynb``.

    Args:
        records: The stage manifests of a finished run, by stage.
        out_dir: The run's folder, as the paths in the result should show it.

    Returns:
        ``report``, ``report_html``, ``repository``, ``serve_command``, ``model``,
        the baseline's and the tuned model's test accuracy, parity, and the
        smallest variant within one point of accuracy.

    Raises:
        ArtifactError: A stage is missing from ``records``.
    """
    # The report stage itself calls this before its own manifest exists.
    missing = [stage for stage in STAGES[:-1] if stage not in records]
    if missing:
        raise ArtifactError(f"the pipeline in {out_dir} has not finished stage(s) {', '.join(missing)}: run it again.")
    out_dir = Path(out_dir)
    evaluation = records["evaluation"]["result"]
    published = records["publishing"]["result"]
    repository = out_dir / REPOSITORY_DIR
    return {
        "report": str(out_dir / "report.md"),
        "report_html": str(out_dir / "report.html"),
        "repository": str(repository),
        "serve_command": f"aideploy serve {shlex.quote(str(repository))}",
        "model": published["name"],
        "version": published["version"],
        "baseline_test_accuracy": records["training"]["result"]["test_accuracy"],
        "tuned_test_accuracy": records["tuning"]["result"]["test_accuracy"],
        "parity_max_abs_diff": evaluation["parity"]["max_abs_diff"],
        "parity_top1_agreement": evaluation["parity"]["min_top1_agreement"],
        "smallest_within_1pt": evaluation["smallest_within_1pt"],
        "cpu": evaluation["cpu"],
    }


def main_summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """A short readable summary of a run (what ``make demo`` shows before the JSON line).

    Introduced in ``00_overview.ipynb``.
    """
    smallest = summary["smallest_within_1pt"]
    lines = [
        f"Model {summary['model']!r}: baseline test accuracy {summary['baseline_test_accuracy']:.4f}, "
        f"tuned {summary['tuned_test_accuracy']:.4f}.",
        f"Runtimes agree with tf-keras: max |diff| {summary['parity_max_abs_diff']:.1e}, "
        f"top-1 agreement {summary['parity_top1_agreement']:.2%}.",
    ]
    if smallest:
        lines.append(
            f"Smallest variant within 1 point: {smallest['variant']} at {smallest['gzip_ratio']:.2f}x the fp32 "
            f"gzip size, accuracy {smallest['accuracy_change_pp']:+.2f} points."
        )
    lines += [f"Report: {summary['report']} (and {Path(summary['report_html']).name})",
              f"Serve it: {summary['serve_command']}"]  # fmt: skip
    return lines


if __name__ == "__main__":  # pragma: no cover - the command line is the entry point
    from aideploy import cli

    sys.exit(cli.main(["pipeline", *sys.argv[1:]]))
