"""Reading files: every value a string, strict encodings, clear errors naming file, row and column."""

import json

import pytest
from conftest import read_shared, write_csv

from bertclf.data import read_labelled, read_table, stratified_split
from bertclf.errors import DataError, InputMissingError
from bertclf.labels import sorted_labels


def test_na_like_texts_and_zero_padded_labels_stay_strings(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("NA", "01"), ("null", "1"), ("None", "01"), ("nan", "1")])
    data = read_labelled(path, text_column=None, label_column=None)
    assert data.texts == ["NA", "null", "None", "nan"]
    assert data.labels == ["01", "1", "01", "1"]
    assert sorted_labels(data.labels) == ["01", "1"]
    assert len(set(data.labels)) == 2


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_chinese_file_reads_the_same_in_every_encoding(tmp_path, encoding):
    rows = read_shared("zh_reviews", "dev", limit=50)
    reference = read_labelled(write_csv(tmp_path / "ref.csv", rows), text_column=None, label_column=None)
    data = read_labelled(write_csv(tmp_path / f"{encoding}.csv", rows, encoding=encoding), text_column=None,
                         label_column=None)
    assert data.texts == reference.texts and data.labels == reference.labels
    assert data.text_column == "text"  # the BOM is not part of the header name


def test_utf8_is_never_decoded_as_gb18030(tmp_path):
    path = write_csv(tmp_path / "u.csv", [("你好世界", "a"), ("再见", "b")])
    table = read_table(path)
    assert table.encoding == "utf-8-sig"
    assert table.rows[0]["text"] == "你好世界"


def test_undecodable_bytes_are_an_error_with_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nok,a\n\xff\xfe\xfa broken,b\n")
    with pytest.raises(DataError, match=r"line 3"):
        read_table(path)


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("x", "a")], header=("sentence_text", "label"))
    with pytest.raises(DataError) as info:
        read_labelled(path, text_column=None, label_column=None)
    assert "sentence_text" in info.value.message and "--text-column" in info.value.hint


def test_default_column_names_are_found(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("x", "a"), ("y", "b")], header=("Review", "category"))
    data = read_labelled(path, text_column=None, label_column=None)
    assert (data.text_column, data.label_column) == ("Review", "category")


def test_empty_texts_and_labels_are_reported_with_rows(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("ok", "a"), ("  ", "b"), ("fine", "b")])
    with pytest.raises(DataError, match=r"rows 2"):
        read_labelled(path, text_column=None, label_column=None)
    path = write_csv(tmp_path / "e.csv", [("ok", "a"), ("fine", ""), ("yes", "b")])
    with pytest.raises(DataError, match=r"no 'label' label: rows 2"):
        read_labelled(path, text_column=None, label_column=None)


def test_ragged_rows_and_empty_files_are_errors(tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\na,b\nc,d,e\n", encoding="utf-8")
    with pytest.raises(DataError, match="malformed CSV"):
        read_table(ragged)
    empty = tmp_path / "e.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_table(empty)
    with pytest.raises(InputMissingError):
        read_table(tmp_path / "missing.csv")


def test_jsonl_values_become_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "a", "label": 1}, {"text": "b", "label": 0}]),
                    encoding="utf-8")
    data = read_labelled(path, text_column=None, label_column=None)
    assert data.labels == ["1", "0"]


def test_integer_labels_sort_numerically():
    assert sorted_labels(["10", "2", "1"]) == ["1", "2", "10"]
    assert sorted_labels(["neg", "pos"]) == ["neg", "pos"]


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    first = stratified_split(labels, 0.1, seed=1)
    assert first == stratified_split(labels, 0.1, seed=1)
    train, val = first
    assert len(val) == 10 and set(train).isdisjoint(val)
    assert {labels[i] for i in val} == {"a", "b", "c"}


def test_a_rewritten_file_is_read_anew_even_with_the_same_size_and_mtime(tmp_path):
    import os

    path = write_csv(tmp_path / "d.csv", [("first version", "a"), ("more text", "b")])
    stat = path.stat()
    assert read_table(path).rows[0]["text"] == "first version"
    write_csv(path, [("other version", "a"), ("more text", "b")])  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert read_table(path).rows[0]["text"] == "other version"  # no cache keyed on mtime to go stale
