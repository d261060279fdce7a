"""The tasks beyond one label per short text, end to end: multi-label, sentence pairs, long texts in windows."""

import csv
import json
import sys

import numpy as np
import pytest
from conftest import EXAMPLES, read_shared, write_csv

from bertclf.errors import EXIT_USAGE

sys.path.insert(0, str(EXAMPLES))
from make_tasks import multilabel_rows, pair_rows  # noqa: E402  (examples/ is not a package)


def _read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, cli):
    """scratch:tiny trained on a multi-label set built from en_wordnet_verbs: half the rows join two glosses
    of different topics and carry both labels."""
    directory = tmp_path_factory.mktemp("multilabel")
    train = write_csv(directory / "train.csv", multilabel_rows(read_shared("en_wordnet_verbs", "train", 1500)),
                      header=("text", "labels"))
    dev = write_csv(directory / "dev.csv", multilabel_rows(read_shared("en_wordnet_verbs", "dev", 300), seed=1),
                    header=("text", "labels"))
    code, _, stderr = cli("train", train, "--validation", dev, "--multi-label", "-m", "scratch:tiny", "-o",
                          directory / "run", "--epochs", "4", "--max-length", "48", "--cpu")
    assert code == 0, stderr
    return directory / "run", dev


def test_multi_label_run_tunes_and_saves_one_threshold_per_label(multilabel_run):
    run, _ = multilabel_run
    manifest = json.loads((run / "bertclf.json").read_text())
    assert manifest["task"] == "multi_label" and len(manifest["labels"]) == 14
    thresholds = manifest["thresholds"]
    assert set(thresholds) == set(manifest["labels"])
    assert all(0.0 < t < 1.0 for t in thresholds.values())
    assert len({round(t, 4) for t in thresholds.values()}) > 3  # tuned per label, not one default for all
    assert json.loads((run / "config.json").read_text())["problem_type"] == "multi_label_classification"
    metrics = json.loads((run / "metrics.json").read_text())
    # Each label's threshold maximises its F1 on this very split, so macro-F1 (their mean) is at least
    # what one threshold of 0.5 for every label gives.
    assert metrics["macro_f1"] >= metrics["at_threshold_0.5"]["macro_f1"]
    assert metrics["per_class"]["change"]["threshold"] == pytest.approx(thresholds["change"], abs=1e-6)


def test_predict_applies_the_saved_thresholds_and_threshold_overrides_them(multilabel_run, cli):
    from bertclf.predict import Predictor

    run, dev = multilabel_run
    thresholds = json.loads((run / "bertclf.json").read_text())["thresholds"]
    texts = [row["text"] for row in csv.DictReader(dev.open(encoding="utf-8"))][:60]
    predictions = Predictor.from_dir(run).predict(texts)
    for prediction in predictions:
        expected = {label for label, p in prediction.probs.items() if p >= thresholds[label]}
        assert set(prediction.labels) == expected
    assert sum(len(p.labels) for p in predictions) > 0
    assert any(len(p.labels) != 1 for p in predictions)

    code, stdout, stderr = cli("predict", run, dev)
    assert code == 0, stderr
    rows = _read_jsonl(stdout)
    assert len(rows) == 300 and set(rows[0]) == {"id", "labels", "probs"} and len(rows[0]["probs"]) == 14
    assert [row["labels"] for row in rows[:60]] == [p.labels for p in predictions]

    code, stdout, _ = cli("predict", run, dev, "--threshold", "0.001")
    assert code == 0 and all(len(row["labels"]) == 14 for row in _read_jsonl(stdout))
    code, stdout, _ = cli("predict", run, dev, "--threshold", "change=0.999", "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(stdout.splitlines()))
    assert not any("change" in row["labels"].split(",") for row in table)
    assert "prob_change" in table[0]


def test_transformers_pipeline_reads_a_multi_label_run_as_sigmoid_scores(multilabel_run):
    from transformers import pipeline

    from bertclf.predict import Predictor

    run, _ = multilabel_run
    text = "move fast in a boat"
    classifier = pipeline("text-classification", model=str(run), top_k=None)
    scores = {r["label"]: r["score"] for r in classifier([text])[0]}
    ours = Predictor.from_dir(run).predict([text])[0].probs
    assert sum(scores.values()) != pytest.approx(1.0)  # independent sigmoids, not a softmax
    assert scores == pytest.approx(ours, abs=1e-5)


def test_multi_label_eval_reports_set_metrics_and_per_label_thresholds(multilabel_run, cli, tmp_path):
    run, dev = multilabel_run
    code, stdout, stderr = cli("eval", run, dev, "--json", "-o", tmp_path / "report")
    assert code == 0, stderr
    report = json.loads(stdout)
    metrics = report["metrics"]
    assert report["task"] == "multi_label"
    assert {"subset_accuracy", "hamming_loss", "micro_f1", "macro_f1", "samples_f1"} <= set(metrics)
    assert 0.0 <= metrics["hamming_loss"] <= 1.0 and metrics["micro_f1"] > 0.1
    saved = json.loads((run / "metrics.json").read_text())
    assert metrics["micro_f1"] == pytest.approx(saved["micro_f1"], abs=1e-6)  # same data, same thresholds
    per_label = list(csv.DictReader((tmp_path / "report" / "per_label.csv").open(encoding="utf-8")))
    assert len(per_label) == 14 and {"label", "threshold", "tp", "fp", "fn", "tn"} <= set(per_label[0])
    code, stdout, _ = cli("eval", run, dev, "--json", "--threshold", "0.5", "--fail-under", "micro_f1=0.99")
    assert code == 1
    assert json.loads(stdout)["metrics"]["per_class"]["change"]["threshold"] == 0.5


def test_multi_label_and_pair_options_are_refused_for_a_plain_run(tiny_run, cli, tmp_path):
    code, _, stderr = cli("predict", tiny_run, "--text", "rain tomorrow", "--threshold", "0.3")
    assert code == EXIT_USAGE and "multi-label" in stderr
    code, _, stderr = cli("predict", tiny_run, "--text", "rain tomorrow", "--text-pair", "sun")
    assert code == EXIT_USAGE and "--text-pair" in stderr
    data = write_csv(tmp_path / "p.csv", [("rain", "snow", "weather")], header=("text", "other", "label"))
    code, _, stderr = cli("eval", tiny_run, data, "--text-pair-column", "other")
    assert code == EXIT_USAGE and "single texts" in stderr


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, cli, tiny_model_dir):
    directory = tmp_path_factory.mktemp("pairs")
    rows = list(csv.DictReader((EXAMPLES / "en_topics.csv").open(encoding="utf-8")))
    pairs = pair_rows([(r["text"], r["label"]) for r in rows])
    train = write_csv(directory / "pairs.csv", pairs, header=("question", "answer", "label"))
    code, _, stderr = cli("train", train, "--text-column", "question", "--text-pair-column", "answer", "-m",
                          tiny_model_dir, "-o", directory / "run", "--epochs", "2", "--cpu")
    assert code == 0, stderr
    return directory / "run", train


def test_pair_run_records_its_columns_and_eval_and_predict_use_them(pair_run, cli):
    run, data = pair_run
    manifest = json.loads((run / "bertclf.json").read_text())
    assert manifest["text_column"] == "question" and manifest["text_pair_column"] == "answer"
    code, stdout, stderr = cli("eval", run, data, "--json")
    assert code == 0, stderr
    accuracy = json.loads(stdout)["metrics"]["accuracy"]
    code, stdout, stderr = cli("predict", run, data, "--format", "csv", "--keep-columns")
    assert code == 0, stderr
    table = list(csv.DictReader(stdout.splitlines()))
    assert len(table) == 240
    assert sum(row["label"] == row["input_label"] for row in table) / len(table) == pytest.approx(accuracy)

    from bertclf.predict import Predictor

    predictor = Predictor.from_dir(run)
    first = table[0]
    by_api = predictor.predict([(first["question"], first["answer"])])[0]
    assert by_api.label == first["label"]
    code, stdout, _ = cli("predict", run, "--text", first["question"], "--text-pair", first["answer"])
    assert code == 0 and _read_jsonl(stdout)[0]["label"] == first["label"]


def test_pair_run_refuses_inputs_without_the_second_text(pair_run, cli, tmp_path):
    run, _ = pair_run
    code, _, stderr = cli("predict", run, "--text", "only one text")
    assert code == EXIT_USAGE and "--text-pair" in stderr
    lines = tmp_path / "texts.txt"
    lines.write_text("one text per line\n", encoding="utf-8")
    code, _, stderr = cli("predict", run, lines)
    assert code == EXIT_USAGE and "'answer'" in stderr
    table = write_csv(tmp_path / "q.csv", [("a question", "x")], header=("question", "other"))
    code, _, stderr = cli("predict", run, table)
    assert code == 65 and "no column 'answer'" in stderr


def test_long_texts_in_windows_average_the_window_probabilities(tmp_path, cli, tiny_model_dir):
    import torch

    from bertclf.encoding import encode
    from bertclf.predict import Predictor

    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", tiny_model_dir, "-o", run, "--max-length", "16",
                          "--long-text", "chunks", "--stride", "4", "--max-steps", "6", "--cpu")
    assert code == 0, stderr
    manifest = json.loads((run / "bertclf.json").read_text())
    assert manifest["long_text"] == "chunks" and manifest["stride"] == 4 and manifest["max_length"] == 16
    assert manifest["sequences"]["train"] > manifest["train_rows"]  # long reviews gave several windows
    assert "split into overlapping windows" in stderr

    predictor = Predictor.from_dir(run, precision="fp32")  # the windows recomputed below, in fp32, to 1e-5
    long_text = max((row["text"] for row in csv.DictReader((EXAMPLES / "zh_reviews.csv").open(encoding="utf-8"))),
                    key=len)
    encoded = encode(predictor.tokenizer, [long_text], predictor.spec)
    assert len(encoded) >= 3
    with torch.no_grad():
        window_probs = [torch.softmax(predictor.model(input_ids=torch.tensor([ids])).logits[0], -1).numpy()
                        for ids in encoded.input_ids]
    np.testing.assert_allclose(predictor.predict_proba([long_text])[0], np.mean(window_probs, axis=0), atol=1e-5)

    code, stdout, stderr = cli("eval", run, EXAMPLES / "zh_reviews_test.csv", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["long_text"] == "chunks" and report["sequences"] > report["rows_evaluated"]


def test_a_resumed_multi_label_run_tunes_the_same_thresholds(tmp_path, cli, tiny_model_dir, monkeypatch):
    common = ["train", EXAMPLES / "en_topics_multilabel.csv", "--multi-label", "-m", tiny_model_dir, "--max-steps",
              "12", "--eval-every", "4", "--save-every", "4", "--batch-size", "16", "--lr", "3e-3", "--cpu"]
    assert cli(*common, "-o", tmp_path / "whole")[0] == 0
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "8")
    code, _, _ = cli(*common, "-o", tmp_path / "cut")
    assert code == 143
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    code, _, stderr = cli(*common, "-o", tmp_path / "cut", "--resume", "latest")
    assert code == 0, stderr
    whole, cut = (json.loads((tmp_path / name / "bertclf.json").read_text()) for name in ("whole", "cut"))
    assert cut["completed"] and set(cut["thresholds"]) == {"cooking", "sports", "technology", "weather"}
    assert cut["thresholds"] == pytest.approx(whole["thresholds"], abs=1e-6)
