"""Property: any table written in any input format and encoding reads back row for row, unchanged.

Random texts mix what breaks readers: quotes, commas, tabs, line breaks (\\n, \\r\\n, a lone \\r), U+2028,
U+0085, \\f, emoji, CJK, leading and trailing spaces, and the strings pandas and datasets turn into
missing values ("NA", "null", "None", "nan"). Each table goes through bertclf's own readers: read_table
and read_labelled (train, eval, inspect) and open_input (predict). Every row must come back, in order, with
every value exactly as written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bertclf.data import read_labelled, read_table
from bertclf.streams import open_input

AWKWARD = ['"', "'", ",", "\t", "\n", "\r\n", "\r", "\u2028", "\u2029", "\u0085", "\f", "\v", " ", "  ", "\u3000",
           "😀", "👍🏽", "中", "文", "，", "。", "é", "ß", "NA", "null", "None", "nan", "N/A", "#", "\\", "__label__"]
NA_LIKE = ["", "NA", "null", "None", "nan", "N/A", "0", "01", " "]

# Left out on purpose: NUL (an error wherever it is, see test_input_integrity) and U+FDD0, the noncharacter
# the CSV reader uses to carry a lone "\r" through the csv module (an error next to a lone "\r").
texts = st.one_of(
    st.sampled_from(NA_LIKE),
    st.lists(st.one_of(st.sampled_from(AWKWARD), st.text(min_size=1, max_size=6)), max_size=8).map("".join),
).filter(lambda t: "\x00" not in t and "\ufdd0" not in t)
labels = st.one_of(st.sampled_from(["pos", "neg", "01", "1", "NA", "None", "中文", "😀", " spaced "]),
                   st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc")), min_size=1, max_size=5))
tables = st.lists(st.tuples(texts, labels), min_size=1, max_size=8)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "gb18030"])
# The same examples on every run (derandomize): the suite is a release gate, and a gate that fails on one run in
# ten for an example no one chose lands nothing. To search wider, run with BERTCLF_HYPOTHESIS_EXAMPLES=2000:
# that run draws fresh random examples (a CI run once found a writer ambiguity the fixed set had missed).
_EXPLORE = int(os.environ.get("BERTCLF_HYPOTHESIS_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_EXPLORE or 60, derandomize=not _EXPLORE, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


def _auto(encoding: str) -> str | None:
    """UTF-8 (with or without BOM) is found by itself; GB18030 is named, since a short GB18030 text can also be
    valid UTF-8 (auto-detection tries UTF-8 first, as it must)."""
    return None if encoding.startswith("utf-8") else encoding


def _looks_like_swallowed_rows(rows, separator: str) -> bool:
    """A quoted multi-line text whose own lines hold a field equal to a label (say "x,pos\\ny") reads exactly
    like rows swallowed by a stray quote, and is rejected on purpose (data.SwallowedRowCheck); leave those out."""
    known = {label.strip() for _, label in rows}
    for text, _ in rows:
        lines = re.split(r"\r?\n", text)
        if len(lines) > 1 and any(field.strip().strip('"').strip() in known
                                  for line in lines for field in line.split(separator)):
            return True
    return False


def _delimited(rows, header, separator: str, terminator: str) -> str:
    """The table as csv.writer writes it. csv.writer leaves a lone "\r" unquoted, so a last field ending in "\r"
    followed by a "\n" terminator is written as "...\r\n": a CRLF line end, which no reader can tell apart. A
    careful writer quotes it, as this one then does (every field of the table)."""
    last_ends_in_cr = any((row[-1] if header[0] == "text" else row[0]).endswith("\r") for row in rows)
    quoting = csv.QUOTE_ALL if last_ends_in_cr else csv.QUOTE_MINIMAL
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, lineterminator=terminator, quoting=quoting)
    writer.writerow(header)
    writer.writerows([row if header[0] == "text" else row[::-1] for row in rows])
    return buffer.getvalue()


@SETTINGS
@given(rows=tables, encoding=encodings, fmt=st.sampled_from(["csv", "tsv"]), terminator=st.sampled_from(["\n", "\r\n"]),
       text_first=st.booleans())
def test_csv_and_tsv_rows_round_trip(tmp_path_factory, rows, encoding, fmt, terminator, text_first):
    separator = "," if fmt == "csv" else "\t"
    header = ["text", "label"] if text_first else ["label", "text"]
    path = tmp_path_factory.mktemp("rt") / f"d.{fmt}"
    path.write_bytes(_delimited(rows, header, separator, terminator).encode(encoding))
    expected = [{"text": t, "label": lab} for t, lab in rows]
    assert read_table(path, encoding=_auto(encoding)).rows == expected
    assume(not _looks_like_swallowed_rows(rows, separator))
    assert list(open_input(str(path), fmt=None, text_column=None, encoding=_auto(encoding))) == expected
    if all(t.strip() for t, _ in rows) and all(lab.strip() for _, lab in rows):
        data = read_labelled(path, text_column=None, label_column=None, encoding=_auto(encoding))
        assert data.texts == [t for t, _ in rows] and data.labels == [lab.strip() for _, lab in rows]


@SETTINGS
@given(rows=tables, encoding=encodings, fmt=st.sampled_from(["json", "jsonl"]), ascii_only=st.booleans(),
       terminator=st.sampled_from(["\n", "\r\n"]))
def test_json_and_jsonl_rows_round_trip(tmp_path_factory, rows, encoding, fmt, ascii_only, terminator):
    records = [{"text": t, "label": lab} for t, lab in rows]
    if fmt == "json":
        content = json.dumps(records, ensure_ascii=ascii_only, indent=1)
    else:  # ensure_ascii=False writes U+2028, U+0085 raw: they must not split the line
        content = "".join(json.dumps(r, ensure_ascii=ascii_only) + terminator for r in records)
    path = tmp_path_factory.mktemp("rt") / f"d.{fmt}"
    path.write_bytes(content.encode(encoding))
    assert read_table(path, encoding=_auto(encoding)).rows == records
    assert list(open_input(str(path), fmt=None, text_column=None, encoding=_auto(encoding))) == records


@SETTINGS
@given(rows=tables)
def test_parquet_rows_round_trip(tmp_path_factory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("rt") / "d.parquet"
    pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}), path)
    assert read_table(path).rows == [{"text": t, "label": lab} for t, lab in rows]


def _fasttext_text(text: str) -> bool:
    """What a fastText line can hold: one line, no leading/trailing whitespace, not starting with a label."""
    return bool(text) and "\n" not in text and text == text.strip() and not text.startswith("__label__")


@SETTINGS
@given(rows=st.lists(st.tuples(texts.filter(_fasttext_text),
                               st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1,
                                       max_size=5)), min_size=1, max_size=8),
       encoding=encodings, terminator=st.sampled_from(["\n", "\r\n"]))
def test_fasttext_rows_round_trip(tmp_path_factory, rows, encoding, terminator):
    assume(all(" " not in lab and not lab.startswith("__label__") for _, lab in rows))
    path = tmp_path_factory.mktemp("rt") / "d.txt"
    path.write_bytes("".join(f"__label__{lab} {t}{terminator}" for t, lab in rows).encode(encoding))
    assert read_table(path, encoding=_auto(encoding)).rows == [{"text": t, "label": lab} for t, lab in rows]


@SETTINGS
@given(lines=st.lists(texts.filter(lambda t: "\n" not in t and not t.endswith("\r") and not t.startswith("\ufeff")),
                      min_size=1, max_size=8),
       encoding=encodings, terminator=st.sampled_from(["\n", "\r\n"]))
def test_plain_text_lines_round_trip_in_predict(tmp_path_factory, lines, encoding, terminator):
    """predict's .txt input: one row per line, an empty line too; only \\n and \\r\\n end a line. (A line
    may not start with U+FEFF: at the start of a file that is a byte order mark.)"""
    path = tmp_path_factory.mktemp("rt") / "d.txt"
    path.write_bytes("".join(line + terminator for line in lines).encode(encoding))
    assert [row["text"] for row in open_input(str(path), fmt=None, text_column=None,
                                              encoding=_auto(encoding))] == lines


@pytest.mark.parametrize("text", ["x,pos\ny", "line one\nline two, with comma", "top\n\nbottom", "a\r\nb\rc"])
def test_multi_line_texts_written_by_csv_writer(tmp_path, text):
    """A few fixed cases the random ones may miss: multi-line texts that parse back as they were written (or,
    for the first one, are taken for swallowed rows, as SwallowedRowCheck documents)."""
    rows = [(text, "neg"), ("plain", "pos"), ("other", "neg")]
    path = tmp_path / "d.csv"
    path.write_text(_delimited(rows, ["text", "label"], ",", "\n"), encoding="utf-8", newline="")
    assert read_table(path).rows == [{"text": t, "label": lab} for t, lab in rows]
    if _looks_like_swallowed_rows(rows, ","):
        from bertclf.errors import DataError

        with pytest.raises(DataError, match="look like rows of their own"):
            read_labelled(path, text_column=None, label_column=None)
    else:
        assert read_labelled(path, text_column=None, label_column=None).texts == [t for t, _ in rows]
