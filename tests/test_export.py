"""`bertclf export` (ONNX fp32 and int8, checked against torch) and `--backend onnx` in predict and eval."""

import json
import shutil

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory, cli):
    """A copy of the tiny run (the shared one stays as it was), exported fp32 and int8 with the default check
    texts: the run's training file, which still exists."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run, run)
    code, stdout, stderr = cli("export", run, "--quantize", "int8", "--json")
    assert code == 0, stderr
    return run, json.loads(stdout)


def test_export_writes_checked_fp32_and_int8_models_with_symbolic_dims(exported):
    run, report = exported
    assert (run / "onnx" / "model.onnx").is_file() and (run / "onnx" / "model_quantized.onnx").is_file()
    assert json.loads((run / "onnx" / "export_report.json").read_text()) == report
    assert report["check_data"]["source"] == "the run's train file" and report["check_data"]["labelled"]
    assert report["fp32"]["passed"] and report["fp32"]["max_abs_diff"] <= 1e-4 and report["fp32"]["labels_differ"] == 0
    assert report["opset"] >= 18 and "accuracy_change" in report["int8"]
    assert report["int8"]["bytes"] < report["fp32"]["bytes"]
    assert not list(ROOT.glob("sym_shape_infer_temp*")) and not list(ROOT.glob("*.data"))  # no debris left
    model = onnx.load(str(run / "onnx" / "model.onnx"))
    assert model.opset_import[0].version >= 18
    inputs = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(len(dims) == 2 and all(dims) for dims in inputs.values())  # batch and sequence symbolic
    assert [o.name for o in model.graph.output] == ["logits"]


def test_predict_and_eval_with_the_onnx_backend_match_torch(exported, cli):
    run, _ = exported
    data = EXAMPLES / "en_topics_test.csv"
    rows = {}
    for backend in ("torch", "onnx"):
        # fp32 on both sides: ONNX runs in fp32 (predict's --precision auto may pick bf16 for torch).
        code, stdout, stderr = cli("predict", run, data, "--all-probs", "--backend", backend, "--precision", "fp32")
        assert code == 0, stderr
        rows[backend] = _jsonl(stdout)
    assert [r["label"] for r in rows["onnx"]] == [r["label"] for r in rows["torch"]]
    assert len(rows["onnx"]) == 80
    for a, b in zip(rows["torch"], rows["onnx"], strict=True):
        np.testing.assert_allclose(list(a["probs"].values()), list(b["probs"].values()), atol=1e-5)
    code, stdout, stderr = cli("predict", run, data, "--backend", "onnx", "--quantize", "int8")
    assert code == 0, stderr and len(_jsonl(stdout)) == 80
    accuracy = {}
    for backend in ("torch", "onnx"):
        code, stdout, stderr = cli("eval", run, data, "--json", "--bootstrap", "0", "--backend", backend,
                                   "--precision", "fp32")
        assert code == 0, stderr
        accuracy[backend] = json.loads(stdout)["metrics"]["accuracy"]
    assert accuracy["onnx"] == accuracy["torch"]


def test_export_to_another_directory_makes_a_model_directory_of_its_own(exported, cli, tmp_path):
    run, _ = exported
    out = tmp_path / "deploy"
    code, stdout, stderr = cli("export", run, "-o", out, "--check-data", EXAMPLES / "en_topics_test.csv")
    assert code == 0, stderr
    assert "max logit difference" in stdout
    assert {"config.json", "bertclf.json", "onnx"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists()
    report = json.loads((out / "onnx" / "export_report.json").read_text())
    assert report["check_data"]["source"] == "--check-data" and report["check_data"]["rows"] == 80
    code, stdout, stderr = cli("predict", out, "--text", "rain and wind tomorrow", "--backend", "onnx")
    assert code == 0, stderr
    code, expected, _ = cli("predict", run, "--text", "rain and wind tomorrow")
    assert _jsonl(stdout)[0]["label"] == _jsonl(expected)[0]["label"]


def test_a_failed_parity_check_exits_70_and_leaves_no_model(exported, cli, tmp_path, monkeypatch):
    import bertclf.export

    run, _ = exported
    monkeypatch.setattr(bertclf.export, "FP32_TOLERANCE", -1.0)  # no export can pass: the failure path runs
    # The model already exported stands in for a fresh trace (the check and the writing are what is tested).
    graph = {"inputs": ["input_ids", "attention_mask", "token_type_ids"], "shapes": {}}
    monkeypatch.setattr(bertclf.export, "export_fp32",
                        lambda model: ((run / "onnx" / "model.onnx").read_bytes(), graph))
    out = tmp_path / "failed"
    code, _, stderr = cli("export", run, "-o", out)
    assert code == 70 and "disagrees with the torch model" in stderr and "no model.onnx" in stderr
    assert not (out / "onnx" / "model.onnx").exists() and not list((out / "onnx").glob("*.onnx*"))
    assert json.loads((out / "onnx" / "export_report.json").read_text())["fp32"]["passed"] is False


def test_backend_onnx_without_an_export_names_the_file_and_the_fix(tiny_run, cli, tmp_path):
    code, _, stderr = cli("predict", tiny_run, "--text", "rain", "--backend", "onnx")
    assert code == 66 and "onnx/model.onnx" in stderr and "bertclf export" in stderr
    code, _, stderr = cli("predict", tiny_run, "--text", "rain", "--backend", "tensorrt")
    assert code == 2 and "--backend" in stderr
    code, _, stderr = cli("export", tiny_run, "--check-data", tmp_path / "missing.csv")
    assert code == 66 and "--check-data" in stderr


@pytest.mark.parametrize("task", ["multi_label", "pairs", "chunks", "mean_pooling"])
def test_multi_label_pair_and_window_runs_export_and_predict_alike(task, cli, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    args = {"multi_label": [EXAMPLES / "en_topics_multilabel.csv", "--multi-label"],
            "pairs": [EXAMPLES / "en_topics_pairs.csv", "--text-column", "text_a", "--text-pair-column", "text_b"],
            "chunks": [EXAMPLES / "zh_reviews.csv", "--max-length", "16", "--long-text", "chunks", "--stride", "4"],
            "mean_pooling": [EXAMPLES / "en_topics.csv", "--pooling", "mean"]}
    code, _, stderr = cli("train", *args[task], "-m", tiny_model_dir, "-o", run, "--max-steps", "4", "--cpu")
    assert code == 0, stderr
    code, stdout, stderr = cli("export", run, "--json", "--check-rows", "64")
    assert code == 0, stderr
    assert json.loads(stdout)["fp32"]["passed"]
    data = {"multi_label": EXAMPLES / "en_topics_test_multilabel.csv", "pairs": EXAMPLES / "en_topics_test_pairs.csv",
            "chunks": EXAMPLES / "zh_reviews_test.csv", "mean_pooling": EXAMPLES / "en_topics_test.csv"}[task]
    outputs = []
    for backend in ("torch", "onnx"):
        code, stdout, stderr = cli("predict", run, data, "--backend", backend)
        assert code == 0, stderr
        outputs.append([(r.get("label"), r.get("labels")) for r in _jsonl(stdout)])
    assert outputs[0] == outputs[1]
