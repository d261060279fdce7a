"""Table-driven: malformed or awkward inputs built from real ../shared/data rows. Each bad input gets its
exit code and a message that names the problem, never a traceback; each awkward-but-valid one trains."""

import io
import json
import random
import zipfile
from pathlib import Path

import pytest
from conftest import read_shared, run_bertclf, write_csv

from bertclf.errors import EXIT_DATA, EXIT_NO_INPUT, EXIT_USAGE

ROWS = read_shared("zh_reviews", "dev", limit=40) if Path(__file__).parents[2].joinpath("shared").exists() else []


def _csv_text(rows, sep=",", header=("text", "label")) -> str:
    buffer = io.StringIO()
    import csv

    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write(name: str, content, encoding="utf-8"):
    def build(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes((content() if callable(content) else content).encode(encoding))
        return path
    return build


def _parquet(name: str, rows):
    def build(tmp: Path) -> Path:
        import pandas as pd

        path = tmp / name
        pd.DataFrame(rows, columns=["text", "label"]).to_parquet(path)
        return path
    return build


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


def _stray_quote() -> str:
    # A quote opened in row 1 and closed in row 3: the parser silently merges rows 1-3 into one text.
    clean = [(" ".join(t.replace('"', "").replace(",", "，").split()), lab) for t, lab in ROWS[:10]]
    (t1, l1), (t2, l2), (t3, l3), *rest = clean
    lines = ["text,label", f'"{t1},{l1}', f"{t2},{l2}", f'{t3}",{l3}', *[f"{t},{lab}" for t, lab in rest]]
    return "\n".join(lines) + "\n"


def _with(rows_change):
    rows = [list(r) for r in ROWS[:30]]
    rows_change(rows)
    return _csv_text(rows)


def _set(i, j, value):
    def change(rows):
        rows[i][j] = value
    return change


BAD = [
    # (id, builder, extra args, exit code, message fragment)
    ("empty-file", _write("e.csv", b""), [], EXIT_DATA, "the file is empty"),
    ("whitespace-file", _write("w.csv", b"  \n\n "), [], EXIT_DATA, "the file is empty"),
    ("header-only", _write("h.csv", "text,label\n"), [], EXIT_DATA, "no data rows"),
    ("binary-junk", _write("b.csv", bytes(random.Random(0).randrange(256) for _ in range(3000)) + b"\x00"), [],
     EXIT_DATA, "binary"),
    ("png-as-csv", _write("p.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 40), [], EXIT_DATA, "binary"),
    ("xlsx-as-csv", _write("x.csv", _zip_bytes()), [], EXIT_DATA, "Excel"),
    ("parquet-as-csv", lambda tmp: _parquet("p.parquet", ROWS[:5])(tmp).rename(tmp / "p.csv") or tmp / "p.csv", [],
     EXIT_DATA, "Parquet file"),
    ("json-as-csv", _write("j.csv", lambda: json.dumps([{"text": t, "label": lab} for t, lab in ROWS[:5]])), [],
     EXIT_DATA, "looks like JSON, not CSV"),
    ("csv-as-json", _write("c.json", lambda: _csv_text(ROWS[:5])), [], EXIT_DATA, "not valid JSON"),
    ("csv-as-jsonl", _write("c.jsonl", lambda: _csv_text(ROWS[:5])), [], EXIT_DATA, "line 1 is not valid JSON"),
    ("json-object", _write("o.json", '{"text": "a", "label": "b"}'), [], EXIT_DATA, "expected a JSON array"),
    ("json-strings", _write("s.json", '["a", "b"]'), [], EXIT_DATA, "record 1 is a str"),
    ("unknown-extension", _write("d.xls", "text,label\na,b\n"), [], EXIT_DATA, "cannot tell the file format"),
    ("missing-file", lambda tmp: tmp / "nope.csv", [], EXIT_NO_INPUT, "no such file"),
    ("directory", lambda tmp: tmp, [], EXIT_NO_INPUT, "is a directory"),
    ("no-text-column", _write("n.csv", lambda: _csv_text(ROWS[:5], header=("body_text", "label"))), [], EXIT_DATA,
     "Columns found: body_text, label"),
    ("no-label-column", _write("n.csv", lambda: _csv_text(ROWS[:5], header=("text", "sentiment"))), [], EXIT_DATA,
     "Columns found: text, sentiment"),
    ("wrong-text-flag", _write("d.csv", lambda: _csv_text(ROWS[:5])), ["--text-column", "review"], EXIT_DATA,
     "no column 'review'"),
    ("duplicate-header", _write("d.csv", "text,text,label\na,b,c\nd,e,f\n"), [], EXIT_DATA, "duplicate column"),
    ("empty-texts", _write("d.csv", lambda: _with(_set(2, 0, ""))), [], EXIT_DATA, "empty 'text' text: rows 3"),
    ("blank-texts", _write("d.csv", lambda: _with(_set(4, 0, "   \t"))), [], EXIT_DATA, "rows 5"),
    ("blank-labels", _write("d.csv", lambda: _with(_set(6, 1, " "))), [], EXIT_DATA, "no 'label' label: rows 7"),
    ("single-class", _write("d.csv", lambda: _csv_text([(t, "positive") for t, _ in ROWS[:10]])), [], EXIT_DATA,
     "single label"),
    ("ragged-row", _write("d.csv", lambda: _csv_text(ROWS[:5]) + "extra,field,here\n"), [], EXIT_DATA,
     "Expected 2 fields"),
    ("missing-field", _write("d.csv", lambda: _csv_text(ROWS[:5]) + "no label here\n"), [], EXIT_DATA,
     "no 'label' label: rows 6"),
    ("unclosed-quote", _write("d.csv", lambda: _csv_text(ROWS[:5]) + '"never closed,positive\n'), [], EXIT_DATA,
     "EOF inside string"),
    ("stray-quote", _write("d.csv", _stray_quote), [], EXIT_DATA, "unbalanced quote"),
    ("undecodable", _write("d.csv", b"text,label\ngood,a\n\xff\xff bad,b\n"), [], EXIT_DATA,
     "neither UTF-8 nor GB18030"),
    ("wrong-encoding-flag", _write("d.csv", lambda: _csv_text(ROWS[:5])), ["--encoding", "ascii"], EXIT_DATA,
     "not valid ascii"),
    ("bogus-encoding-flag", _write("d.csv", lambda: _csv_text(ROWS[:5])), ["--encoding", "klingon"], EXIT_USAGE,
     "not a known encoding"),
    ("bogus-format-flag", _write("d.csv", lambda: _csv_text(ROWS[:5])), ["--format", "xml"], EXIT_USAGE,
     "--format"),
    ("fasttext-no-label", _write("d.txt", "__label__a good\nno label on this line\n"), [], EXIT_DATA,
     "line 2 has no __label__"),
    ("fasttext-two-labels", _write("d.txt", "__label__a __label__b both\n__label__a one\n"), [], EXIT_DATA,
     "line 1 has 2 labels"),
    ("jsonl-bad-line", _write("d.jsonl", lambda: "\n".join(
        [json.dumps({"text": t, "label": lab}) for t, lab in ROWS[:2]] + ["{broken"])), [], EXIT_DATA,
     "line 3 is not valid JSON"),
    ("jsonl-empty-text", _write("d.jsonl", lambda: "\n".join(
        json.dumps({"text": "" if i == 1 else t, "label": lab}) for i, (t, lab) in enumerate(ROWS[:5]))), [],
     EXIT_DATA, "rows 2"),
    ("csv-as-tsv", _write("d.tsv", lambda: _csv_text(ROWS[:5])), [], EXIT_DATA, "Columns found: text,label"),
    ("damaged-parquet", _write("d.parquet", b"PAR1 not really"), [], EXIT_DATA, "not a readable Parquet"),
    ("too-few-rows", _write("d.csv", "text,label\na,x\nb,y\n"), [], EXIT_DATA, "Too few rows"),
    ("bad-validation-split", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--validation-split", "1"], EXIT_USAGE,
     "--validation-split"),
    ("missing-validation", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--validation", "nope.csv"],
     EXIT_NO_INPUT, "no such file"),
    ("unseen-validation-label", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--validation", "VAL"], EXIT_DATA,
     "'neutral' (1)"),
    ("multi-label-broken-json", _write("d.csv", lambda: _csv_text(ROWS[:4] + [(ROWS[4][0], '["positive", ')])),
     ["--multi-label"], EXIT_DATA, "row 5, column 'label'"),
    ("multi-label-one-label", _write("d.csv", lambda: _csv_text([(t, "positive") for t, _ in ROWS[:10]])),
     ["--multi-label"], EXIT_DATA, "a single label ('positive')"),
    ("multi-label-accuracy-metric", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--multi-label", "--metric",
     "accuracy"], EXIT_USAGE, "--metric"),
    ("missing-pair-column", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--text-pair-column", "reply"],
     EXIT_DATA, "no column 'reply'. Columns found: text, label"),
    ("stride-too-large", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--long-text", "chunks", "--max-length",
     "64", "--stride", "40"], EXIT_USAGE, "--stride"),
    ("unknown-long-text-mode", _write("d.csv", lambda: _csv_text(ROWS[:10])), ["--long-text", "windows"],
     EXIT_USAGE, "--long-text"),
]


@pytest.mark.skipif(not ROWS, reason="../shared/data not found")
@pytest.mark.parametrize(("case", "build", "args", "code", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_a_clear_error(case, build, args, code, message, tmp_path, cli):
    path = build(tmp_path)
    args = [str(write_csv(tmp_path / "val.csv", [("很好", "positive"), ("还行", "neutral")])) if a == "VAL" else
            str(tmp_path / a) if a == "nope.csv" else a for a in args]
    exit_code, stdout, stderr = cli("train", path, "-m", "scratch:tiny", "-o", tmp_path / "run", *args)
    assert exit_code == code, stderr
    assert message in " ".join(stderr.split()), stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ngood,a\n\xff\xff bad,b\n")
    result = run_bertclf("train", path)
    assert result.returncode == EXIT_DATA
    assert "Traceback" not in result.stderr and "line 3" in result.stderr


VALID = [
    ("jsonl-label-lists", _write("d.jsonl", lambda: "\n".join(
        json.dumps({"text": t, "labels": [lab, "long"] if len(t) > 60 else [lab]}, ensure_ascii=False)
        for t, lab in ROWS)), ["--multi-label"]),
    ("pipe-separated-label-sets", _write("d.csv", lambda: _csv_text([(t, f"{lab}|long" if len(t) > 60 else lab)
                                                                    for t, lab in ROWS])),
     ["--multi-label", "--label-separator", "|"]),
    ("utf8-bom", _write("d.csv", lambda: _csv_text(ROWS), encoding="utf-8-sig"), []),
    ("gbk", _write("d.csv", lambda: _csv_text(ROWS), encoding="gbk"), []),
    ("gb18030", _write("d.csv", lambda: _csv_text(ROWS), encoding="gb18030"), []),
    ("utf16-bom", _write("d.csv", lambda: _csv_text(ROWS), encoding="utf-16"), []),
    ("na-like-texts", _write("d.csv", lambda: _with(lambda r: [r[i].__setitem__(0, w) for i, w in
                                                               enumerate(["NA", "null", "None", "nan", "N/A"])])), []),
    ("integer-labels", _write("d.csv", lambda: _csv_text([(t, "1" if lab == "positive" else "01")
                                                         for t, lab in ROWS])), []),
    ("quoted-newlines", _write("d.csv", lambda: _csv_text([(t + '\n第二行 "引号"', lab) for t, lab in ROWS])), []),
    ("crlf", _write("d.csv", lambda: _csv_text(ROWS).replace("\n", "\r\n")), []),
    ("tsv", _write("d.tsv", lambda: _csv_text(ROWS, sep="\t")), []),
    ("jsonl-int-labels", _write("d.jsonl", lambda: "\n".join(json.dumps({"text": t, "label": int(lab == "positive")})
                                                            for t, lab in ROWS)), []),
    ("json-array", _write("d.json", lambda: json.dumps([{"text": t, "label": lab} for t, lab in ROWS])), []),
    ("parquet", _parquet("d.parquet", ROWS), []),
    ("fasttext", _write("d.txt", lambda: "".join(f"__label__{lab} {' '.join(t.split())}\n" for t, lab in ROWS)),
     []),
    ("drop-empty", _write("d.csv", lambda: _with(_set(3, 0, ""))), ["--drop-empty"]),
    ("capitalised-columns", _write("d.csv", lambda: _csv_text(ROWS, header=("Review", "Label")), "utf-8-sig"), []),
    ("format-override", _write("d.data", lambda: _csv_text(ROWS)), ["--format", "csv"]),
]


@pytest.mark.skipif(not ROWS, reason="../shared/data not found")
@pytest.mark.parametrize(("case", "build", "args"), VALID, ids=[c[0] for c in VALID])
def test_awkward_but_valid_input_trains(case, build, args, tmp_path, cli, tiny_model_dir):
    path = build(tmp_path)
    exit_code, _, stderr = cli("train", path, "-m", tiny_model_dir, "-o", tmp_path / "run", "--max-steps", "1",
                               "--cpu", *args)
    assert exit_code == 0, stderr
    manifest = json.loads((tmp_path / "run" / "bertclf.json").read_text())
    assert manifest["completed"] is True
    expected_rows = {"drop-empty": 29, "na-like-texts": 30}.get(case, len(ROWS))
    assert manifest["train_rows"] + manifest["validation_rows"] == expected_rows
