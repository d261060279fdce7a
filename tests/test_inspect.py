"""`bertclf inspect` on the shared data sets and on a file with planted problems."""

import json

import pytest
from conftest import SHARED_DATA, read_shared, write_csv


def test_inspect_shared_chinese_reviews(cli):
    path = SHARED_DATA / "zh_reviews" / "train.csv"
    if not path.exists():
        pytest.skip("shared data not found")
    code, stdout, stderr = cli("inspect", path, "--model", "scratch", "--max-length", "128", "--against",
                               SHARED_DATA / "zh_reviews" / "test.csv", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["rows"] == 6000 and sum(report["labels"].values()) == 6000
    assert set(report["labels"]) == {"positive", "negative"}
    assert report["encoding"] == "utf-8-sig" and report["format"] == "csv"
    assert report["char_length"]["p100"] > 2000  # reviews run up to about 2,900 characters (data README)
    assert 0.1 < report["tokens"]["truncated_share"] < 0.3
    assert report["tokens"]["auto_max_length"] == 256  # 18% over 128, fewer than 5% over 256
    assert report["against"]["overlapping_texts"] == 0 and report["duplicate_texts"] == 0


def test_inspect_reports_planted_duplicates_conflicts_and_overlap(tmp_path, cli):
    rows = read_shared("en_wordnet_verbs", "dev", limit=50)
    planted = rows + [rows[0], (rows[1][0], "not-" + rows[1][1])]
    data = write_csv(tmp_path / "d.csv", planted)
    other = write_csv(tmp_path / "o.csv", rows[:5] + [("unseen text", "brand-new")])
    code, stdout, stderr = cli("inspect", data, "--against", other, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["duplicate_texts"] == 2 and report["conflicting_texts"] == 1
    assert report["against"]["overlapping_texts"] == 5
    assert report["against"]["labels_not_in_this_file"] == {"brand-new": 1}


def test_inspect_table_output(cli):
    from conftest import EXAMPLES

    code, stdout, _ = cli("inspect", EXAMPLES / "en_topics.csv")
    assert code == 0 and "4 labels" in stdout and "Duplicate texts: 0" in stdout


def test_inspect_counts_each_label_of_a_multi_label_file(cli):
    from conftest import EXAMPLES

    code, stdout, stderr = cli("inspect", EXAMPLES / "en_topics_multilabel.csv", "--multi-label", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert set(report["labels"]) == {"cooking", "sports", "technology", "weather"}
    per_row = {int(n): rows for n, rows in report["labels_per_row"].items()}
    assert sum(per_row.values()) == 240 and set(per_row) == {1, 2}
    assert sum(report["labels"].values()) == per_row[1] + 2 * per_row[2]
