"""``aideploy pipeline``: the whole job in fast mode, its resumption, its report and the served result."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import numpy as np
import pytest
from _pipeline_run import fast_run_twice, run_cli

from aideploy import cli, pipeline


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    out_dir, first, second = fast_run_twice(tmp_path_factory.mktemp("pipeline"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    return out_dir, first, second


def test_second_run_resumes_and_is_at_least_five_times_faster(fast_run):
    out_dir, first, second = fast_run
    print(f"first run {first.seconds:.1f} s, second run {second.seconds:.1f} s")
    assert set(first.summary["stages"].values()) == {"ran"}
    assert list(first.summary["stages"]) == list(pipeline.STAGES)
    # The evidence that it resumed: every stage says so, in the JSON and in the progress lines.
    assert set(second.summary["stages"].values()) == {"skipped"}
    assert second.stdout.count("up to date, skipped") == len(pipeline.STAGES)
    assert first.seconds >= 5 * second.seconds
    # Same run, same figures.
    for key in ("baseline_test_accuracy", "tuned_test_accuracy", "parity_max_abs_diff", "version"):
        assert second.summary[key] == first.summary[key]


def test_summary_and_report_hold_the_figures(fast_run):
    out_dir, first, _ = fast_run
    summary = first.summary
    assert summary["repository"] == str(out_dir / "repository")
    assert summary["serve_command"] == f"aideploy serve {out_dir / 'repository'}"
    assert f"Serve it: aideploy serve {out_dir / 'repository'}" in first.stdout
    # A fast-mode MLP on 5,400 images still learns: chance is 0.1.
    assert summary["baseline_test_accuracy"] > 0.6
    assert summary["tuned_test_accuracy"] > 0.5
    assert summary["parity_max_abs_diff"] < 1e-4
    assert summary["parity_top1_agreement"] >= 0.999
    rows = {row["variant"]: row for row in json.loads((out_dir / "summary.json").read_text())["rows"]}
    assert {"fp32 ONNX", "fp32 TFLite", "prune80 TFLite", "dynamic TFLite", "int8 TFLite"} <= set(rows)
    # Quantized weights take a byte instead of four; pruned zeros compress.
    assert rows["int8 TFLite"]["size_ratio"] < 0.35
    assert rows["prune80 TFLite"]["gzip_ratio"] < 0.45
    assert abs(rows["int8 TFLite"]["accuracy_change_pp"]) < 3.0
    assert all(row["p50_us"] > 0 for row in rows.values())
    markdown = (out_dir / "report.md").read_text()
    for expected in ("## Variants", "## Parity with tf-keras", "## Stages", "## Versions", "tf2onnx",
                     "aideploy pipeline --fast --model mlp", "evaluation/tradeoffs.png"):  # fmt: skip
        assert expected in markdown, expected
    for image in ("tradeoffs.png", "runtimes.png"):
        assert (out_dir / "evaluation" / image).read_bytes().startswith(b"\x89PNG")


def test_html_report_opens_offline(fast_run):
    out_dir, _, _ = fast_run
    page = (out_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    # Nothing fetched from a network: no remote script, style sheet or image.
    remote = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert remote == []
    assert "<script" not in page.lower()
    assert "@import" not in page


def test_the_published_repository_serves_the_model(fast_run):
    from aideploy import data, runtime
    from aideploy.serve.process import running_server

    out_dir, first, _ = fast_run
    x = data.flatten(data.scale(data.load().x_test[:3])).astype(np.float32)
    model_file = out_dir / "repository" / "mlp" / "1" / "model.onnx"
    local = runtime.load(model_file).predict(x)
    request = {"inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32", "data": x.ravel().tolist()}]}
    with running_server(first.summary["repository"]) as url:
        answer = httpx.post(f"{url}/v2/models/mlp/infer", json=request, timeout=30)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert output["shape"] == [3, 10]
    np.testing.assert_allclose(np.array(output["data"], np.float32).reshape(3, 10), local, atol=1e-6)


def test_a_changed_output_reruns_its_stage_only(fast_run, tmp_path):
    out_dir, _, _ = fast_run
    copy = tmp_path / "copy"
    shutil.copytree(out_dir, copy)
    (copy / "report.html").write_text("edited")
    rerun = run_cli("pipeline", "--fast", "--out", str(copy))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stages = rerun.summary["stages"]
    assert stages.pop("report") == "ran"
    assert set(stages.values()) == {"skipped"}
    assert "base64" in (copy / "report.html").read_text()


def test_unknown_model_is_one_paragraph_and_exit_2(tmp_path, capsys):
    assert cli.main(["pipeline", "--fast", "--model", "resnet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet'" in err and "mlp" in err
    assert "Traceback" not in err


def test_unwritable_out_is_one_paragraph_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["pipeline", "--fast", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to" in err and "--out" in err
    assert not (blocker.parent / "run").exists()


def test_reproduce_command_names_mode_model_and_folder():
    assert pipeline.reproduce_command(kind="cnn", fast=True, out_dir="runs/a b", seed=7) == (
        "AIDEPLOY_SEED=7 aideploy pipeline --fast --model cnn --out 'runs/a b'"
    )
