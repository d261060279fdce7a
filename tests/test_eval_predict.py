"""`bertclf eval` and `bertclf predict` on the tiny trained run: reports, gates, order, formats."""

import csv
import io
import json

import pytest
from conftest import EXAMPLES, run_bertclf, write_csv

from bertclf.errors import EXIT_DATA, EXIT_GATE_FAILED, EXIT_NO_INPUT, EXIT_USAGE

TEST_FILE = EXAMPLES / "en_topics_test.csv"


def test_eval_json_has_every_metric_and_nothing_else_on_stdout(tiny_run, cli):
    code, stdout, _ = cli("eval", tiny_run, TEST_FILE, "--json", "--cpu")
    assert code == 0
    report = json.loads(stdout)
    metrics = report["metrics"]
    for name in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall", "mcc",
                 "roc_auc", "loss"):
        assert isinstance(metrics[name], float), name
    assert report["rows"] == report["rows_evaluated"] == 80
    assert metrics["confusion_matrix"]["labels"] == ["cooking", "sports", "technology", "weather"]
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 80
    assert sum(row["support"] for row in metrics["per_class"].values()) == 80
    assert report["timings"]["texts_per_second"] > 0


def test_eval_report_files(tiny_run, tmp_path, cli):
    code, _, _ = cli("eval", tiny_run, TEST_FILE, "--output", tmp_path / "report", "--cpu")
    assert code == 0
    report = tmp_path / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    with (report / "errors.csv").open() as handle:
        errors = list(csv.DictReader(handle))
    assert len(errors) == round((1 - metrics["metrics"]["accuracy"]) * 80)
    assert all(e["gold"] != e["predicted"] and 0 < float(e["confidence"]) <= 1 for e in errors)
    assert (report / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "confusion_matrix.csv").read_text().splitlines()[0].endswith("technology,weather")


def test_fail_under_gates(tiny_run, cli):
    code, _, stderr = cli("eval", tiny_run, TEST_FILE, "--fail-under", "accuracy=0.01", "--fail-under",
                          "macro_f1=0.0", "--cpu")
    assert code == 0, stderr
    code, stdout, stderr = cli("eval", tiny_run, TEST_FILE, "--fail-under", "accuracy=0.01", "--fail-under",
                               "macro_f1=1.01", "--json", "--cpu")
    assert code == EXIT_GATE_FAILED
    assert "macro_f1" in stderr and "short by" in stderr and "accuracy" not in stderr.split("failed:")[1]
    gates = json.loads(stdout)["gates"]
    assert gates["accuracy"]["passed"] and not gates["macro_f1"]["passed"]
    code, _, stderr = cli("eval", tiny_run, TEST_FILE, "--fail-under", "f2=0.5")
    assert code == EXIT_USAGE and "--fail-under" in stderr


def test_unknown_labels_are_an_error_unless_ignored(tiny_run, tmp_path, cli):
    data = write_csv(tmp_path / "t.csv", [("rain and wind", "weather"), ("a new phone", "gadgets"),
                                          ("a tablet", "gadgets"), ("goal!", "sports")])
    code, _, stderr = cli("eval", tiny_run, data, "--cpu")
    assert code == EXIT_DATA and "'gadgets' (2)" in stderr
    code, stdout, stderr = cli("eval", tiny_run, data, "--ignore-unknown-labels", "--json", "--cpu")
    assert code == 0 and "Left out 2 row(s)" in stderr
    assert json.loads(stdout)["rows_evaluated"] == 2


def test_eval_of_a_missing_run_dir(tmp_path, cli):
    code, _, stderr = cli("eval", tmp_path / "nope", TEST_FILE)
    assert code == EXIT_NO_INPUT and "does not exist" in stderr


def test_predict_output_joined_to_input_reproduces_eval_accuracy(tiny_run, tmp_path, cli):
    code, stdout, _ = cli("eval", tiny_run, TEST_FILE, "--json", "--cpu")
    accuracy = json.loads(stdout)["metrics"]["accuracy"]
    out = tmp_path / "pred.csv"
    code, _, stderr = cli("predict", tiny_run, TEST_FILE, "-o", out, "--batch-size", "7", "--cpu")
    assert code == 0, stderr
    with TEST_FILE.open() as handle:
        gold = [row["label"] for row in csv.DictReader(handle)]
    with out.open() as handle:
        predicted = list(csv.DictReader(handle))
    assert [int(row["id"]) for row in predicted] == list(range(1, 81))  # input order, every row
    assert sum(p["label"] == g for p, g in zip(predicted, gold, strict=True)) / 80 == accuracy


def test_predict_keeps_order_ids_and_reports_empty_rows(tiny_run, tmp_path, cli):
    rows = [("z9", "The striker scored in the last minute."), ("a1", ""), ("m5", "Preheat the oven."),
            ("b2", "A long text " * 80)]
    data = write_csv(tmp_path / "in.csv", rows, header=("id", "text"))
    code, stdout, stderr = cli("predict", tiny_run, data, "--keep-columns", "--all-probs", "--top-k", "2", "--cpu")
    assert code == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["id"] for line in lines] == ["z9", "a1", "m5", "b2"]
    assert lines[1]["label"] is None and "1 of 4 input row(s) had an empty text" in stderr
    assert lines[0]["text"] == rows[0][1] and len(lines[0]["top_k"]) == 2
    assert abs(sum(lines[0]["probs"].values()) - 1) < 1e-4


def test_predict_stdin_text_and_tsv(tiny_run):
    result = run_bertclf("predict", tiny_run, "-", "--format", "tsv", "--all-probs", "--cpu",
                         input="Heavy snow tonight\nThe new laptop has a fast chip\n")
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader(io.StringIO(result.stdout), delimiter="\t"))
    assert len(table) == 2 and {"id", "label", "score", "prob_weather"} <= set(table[0])


def test_predict_text_option_and_argument_errors(tiny_run, cli):
    code, stdout, _ = cli("predict", tiny_run, "--text", "Grill the fish", "--text", "Match postponed", "--cpu")
    assert code == 0 and len(stdout.splitlines()) == 2
    code, _, stderr = cli("predict", tiny_run)
    assert code == EXIT_USAGE and "--text" in stderr


def test_predictor_python_api(tiny_run):
    from bertclf.predict import Predictor

    predictor = Predictor.from_dir(tiny_run, cpu=True)
    one = predictor.predict(["Stir the soup", "Storm warning"], top_k=3)
    assert len(one) == 2 and len(one[0].top_k) == 3
    texts = ["Stir the soup", "Storm warning", "A goal"]
    # In fp32, batching and padding do not change results. In bf16 (what auto picks where the CPU has it and
    # training's check passed) a batch of 1 and one of 3 run different matmul kernels whose rounding differs
    # in the last bf16 digits: close, not equal.
    exact = Predictor.from_dir(tiny_run, cpu=True, precision="fp32")
    assert abs(exact.predict_proba(texts, batch_size=1) - exact.predict_proba(texts, batch_size=32)).max() < 1e-5
    probs_1, probs_32 = predictor.predict_proba(texts, batch_size=1), predictor.predict_proba(texts, batch_size=32)
    assert abs(probs_1 - probs_32).max() < 5e-3
    assert (probs_1.argmax(axis=1) == probs_32.argmax(axis=1)).all()


def test_report_files_for_a_hand_checked_case(tmp_path):
    import numpy as np

    from bertclf.metrics import classification_metrics
    from bertclf.report import write_report

    labels = ["neg", "pos"]
    gold, predicted = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
    errors = [{"row": 2, "text": "meh", "gold": "neg", "predicted": "pos", "confidence": 0.6},
              {"row": 5, "text": "ok, fine", "gold": "pos", "predicted": "neg", "confidence": 0.7}]
    report = {"metrics": classification_metrics(gold, predicted, labels), "errors": errors, "rows": 5}
    write_report(report, tmp_path)
    assert (tmp_path / "confusion_matrix.csv").read_text().splitlines() == [
        "gold \\ predicted,neg,pos", "neg,1,1", "pos,1,2"]
    with (tmp_path / "errors.csv").open() as handle:
        assert [(r["row"], r["text"], r["gold"], r["predicted"]) for r in csv.DictReader(handle)] == [
            ("2", "meh", "neg", "pos"), ("5", "ok, fine", "pos", "neg")]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["accuracy"] == 0.6 and "errors" not in saved


def test_shuffled_input_with_ids_gets_the_same_prediction_per_id(tiny_run, tmp_path, cli):
    import random

    with TEST_FILE.open() as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    rows = [(f"doc-{i}", text) for i, text in enumerate(texts)]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    outputs = []
    for name, data in (("in_order", rows), ("shuffled", shuffled)):
        path = write_csv(tmp_path / f"{name}.csv", data, header=("id", "text"))
        code, stdout, stderr = cli("predict", tiny_run, path, "--batch-size", "5", "--cpu")
        assert code == 0, stderr
        lines = [json.loads(line) for line in stdout.splitlines()]
        assert [line["id"] for line in lines] == [row_id for row_id, _ in data]
        outputs.append({line["id"]: line["label"] for line in lines})
    assert outputs[0] == outputs[1]


def test_int8_quantized_prediction_agrees_with_fp32(tiny_run, cli):
    from bertclf.predict import Predictor

    with TEST_FILE.open() as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["text"] for row in rows]
    fp32 = Predictor.from_dir(tiny_run, cpu=True).predict_proba(texts)
    quantized = Predictor.from_dir(tiny_run, cpu=True, quantize="int8")
    int8 = quantized.predict_proba(texts)
    assert abs(fp32 - int8).max() < 0.05
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.9
    int8_accuracy = sum(quantized.labels[i] == row["label"] for i, row in zip(int8.argmax(1), rows, strict=True)) / 80
    code, stdout, stderr = cli("eval", tiny_run, TEST_FILE, "--quantize", "int8", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["metrics"]["accuracy"] == pytest.approx(int8_accuracy)
    code, _, stderr = cli("predict", tiny_run, "--text", "hello", "--quantize", "int4")
    assert code == EXIT_USAGE and "--quantize" in stderr


def test_predict_stops_quietly_when_the_reader_goes_away(tiny_run, tmp_path):
    """`bertclf predict ... | head -1`: no error message, and the shell's SIGPIPE status (141), not 74."""
    import subprocess
    import sys

    from conftest import ROOT

    texts = tmp_path / "many.txt"
    texts.write_text("rain and wind tonight\n" * 20000, encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "bertclf", "predict", tiny_run, texts, "--cpu"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b'{"id": 1')
    process.stdout.close()  # like head after its first line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141
    assert "Error" not in stderr and "Traceback" not in stderr
