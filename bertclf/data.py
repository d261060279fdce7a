"""Read labelled text files (single labels or label sets, optional second texts) and validate them.

Files are parsed with pandas (CSV/TSV) or the json module (JSON/JSONL), every value as a string: the
loaders' defaults turn the texts "NA"/"None"/"null" into missing values and integer labels into floats
(shared/research/reliability.md section 4), and the `datasets` CSV cache is keyed on mtime only, so it
can serve stale rows. Bytes are decoded strictly by us, never with errors="replace".
"""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bertclf.config import LABEL_COLUMN_CANDIDATES, TEXT_COLUMN_CANDIDATES
from bertclf.errors import DataError, InputMissingError, UsageError
from bertclf.labels import label_key

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
           ".parquet": "parquet", ".pq": "parquet", ".txt": "fasttext", ".ft": "fasttext"}
FORMAT_NAMES = ("csv", "tsv", "json", "jsonl", "parquet", "fasttext")
FASTTEXT_PREFIX = "__label__"
# Tried in this order: UTF-8 bytes also decode as GB18030 (into garbage), so UTF-8 must come first.
AUTO_ENCODINGS = ("utf-8-sig", "gb18030")
MAX_ROWS_LISTED = 5


@dataclass
class TextTable:
    """A file read as strings: the columns, one list of values per column, and where it came from."""

    path: Path
    format: str
    encoding: str
    sha256: str
    columns: list[str]
    rows: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[str]:
        return [row[name] for row in self.rows]

    def describe(self) -> dict[str, str]:
        return {"path": str(self.path), "format": self.format, "encoding": self.encoding, "sha256": self.sha256,
                "rows": str(len(self.rows))}


def _rows_list(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:MAX_ROWS_LISTED])
    return shown + (f" and {len(numbers) - MAX_ROWS_LISTED} more" if len(numbers) > MAX_ROWS_LISTED else "")


def detect_format(path: Path, override: str | None = None) -> str:
    if override:
        if override not in FORMAT_NAMES:
            raise UsageError(f"Invalid value for --format: {override!r}. Choose one of: {', '.join(FORMAT_NAMES)}.")
        return override
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the file format from the extension {path.suffix or '(none)'!r}.",
            hint="Name the file .csv, .tsv, .json, .jsonl, .parquet or .txt (fastText lines), or pass --format.",
        )
    return fmt


def decode_bytes(path: Path, raw: bytes, encoding: str | None) -> tuple[str, str]:
    """Decode strictly; returns (text, encoding used). Never replaces undecodable bytes."""
    if encoding:
        try:
            return raw.decode(encoding), encoding
        except LookupError:
            raise UsageError(f"Invalid value for --encoding: {encoding!r} is not a known encoding.") from None
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: not valid {encoding} at byte {exc.start}: {exc.reason}.",
                hint="Check --encoding, or leave it out to try UTF-8 and then GB18030.",
            ) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM (Excel "Unicode text")
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: has a UTF-16 BOM but is not valid UTF-16 at byte {exc.start}.") from None
    first_error: UnicodeDecodeError | None = None
    for candidate in AUTO_ENCODINGS:
        try:
            return raw.decode(candidate), candidate
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
    assert first_error is not None
    line = raw[: first_error.start].count(b"\n") + 1
    raise DataError(
        f"{path}: line {line}, byte {first_error.start}: neither UTF-8 nor GB18030 can decode this file.",
        hint="Save it as UTF-8, or pass --encoding with its real encoding (for example --encoding big5).",
    )


def read_table(path: Path, *, encoding: str | None = None, fmt: str | None = None) -> TextTable:
    """Read a CSV/TSV/JSON/JSONL file with every value as a string."""
    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"{path}: no such file.", hint="Check the path.")
    if path.is_dir():
        raise InputMissingError(f"{path}: is a directory, expected a data file.")
    fmt = detect_format(path, fmt)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot be read ({exc.strerror}).") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty.", hint="Give a file with a header and at least one row.")
    sha = hashlib.sha256(raw).hexdigest()
    if fmt == "parquet":
        columns, rows = _parse_parquet(path, raw)
        return TextTable(path=path, format=fmt, encoding="parquet", sha256=sha, columns=columns, rows=rows)
    if raw.startswith(b"PAR1") or raw.startswith(b"PK\x03\x04"):
        kind = "a Parquet file" if raw.startswith(b"PAR1") else "a ZIP or Excel (.xlsx) file"
        raise DataError(f"{path}: is {kind}, not {fmt.upper()} text.",
                        hint="Rename it to its real extension, pass --format, or export it as CSV.")
    if b"\x00" in raw[:8192] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: looks like a binary file, not {fmt.upper()} text.",
                        hint="Check that you passed the right file.")
    text, used_encoding = decode_bytes(path, raw, encoding)
    if fmt in ("csv", "tsv") and text.lstrip()[:1] in ("[", "{"):
        raise DataError(f"{path}: looks like JSON, not {fmt.upper()}.",
                        hint="Name it .json (an array) or .jsonl (one object a line), or pass --format.")
    if fmt in ("csv", "tsv"):
        columns, rows = _parse_delimited(path, text, "," if fmt == "csv" else "\t")
    elif fmt == "fasttext":
        columns, rows = _parse_fasttext(path, text)
    else:
        columns, rows = _parse_json(path, text, fmt)
    return TextTable(path=path, format=fmt, encoding=used_encoding, sha256=sha, columns=columns, rows=rows)


def _parse_delimited(path: Path, text: str, sep: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no header row found.") from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path}: malformed {'CSV' if sep == ',' else 'TSV'}: {str(exc).strip()}.",
            hint="Quote fields that contain the separator, a quote or a line break, and give every row "
            "the same number of fields.",
        ) from None
    columns = [str(c) for c in frame.columns]
    mangled = [c for c in columns if c.rsplit(".", 1)[0] in columns and c.rsplit(".", 1)[-1].isdigit()]
    if mangled:
        raise DataError(f"{path}: duplicate column names in the header ({', '.join(mangled)}).",
                        hint="Give every column a distinct name.")
    if frame.empty:
        raise DataError(f"{path}: has a header but no data rows.")
    return columns, frame.to_dict(orient="records")


def _parse_parquet(path: Path, raw: bytes) -> tuple[list[str], list[dict[str, str]]]:
    try:
        frame = pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises several types for a damaged or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc}).",
                        hint="Check the file, or pass --format with its real format.") from None
    columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: has no rows.")
    rows = [{str(k): json_value_as_text(v) for k, v in record.items()} for record in frame.to_dict(orient="records")]
    return columns, rows


def _parse_fasttext(path: Path, text: str) -> tuple[list[str], list[dict[str, str]]]:
    """fastText lines: `__label__pos __label__x the text`. One label a line (multi-label is a later feature)."""
    rows: list[dict[str, str]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        words = line.split(" ")
        labels = []
        while words and words[0].startswith(FASTTEXT_PREFIX):
            labels.append(words.pop(0)[len(FASTTEXT_PREFIX):])
        if not labels:
            raise DataError(f"{path}: line {line_number} has no {FASTTEXT_PREFIX} label at its start.",
                            hint=f"Write each line as '{FASTTEXT_PREFIX}LABEL text'.")
        if len(labels) > 1:
            raise DataError(f"{path}: line {line_number} has {len(labels)} labels ({', '.join(labels)}); "
                            "single-label classification needs one.", hint="Keep one label a line.")
        rows.append({"text": " ".join(words).strip(), "label": labels[0]})
    if not rows:
        raise DataError(f"{path}: has no lines.")
    return ["text", "label"], rows


def json_value_as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None, NaN: missing
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalars from Parquet
        value = value.item()
    if hasattr(value, "tolist"):  # numpy arrays (Parquet list columns)
        value = value.tolist()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return json.dumps(value, ensure_ascii=False)  # lists (multi-label), nested objects


def _parse_json(path: Path, text: str, fmt: str) -> tuple[list[str], list[dict[str, str]]]:
    records: list[object] = []
    if fmt == "jsonl":
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_number} is not valid JSON ({exc.msg}).",
                                hint="Write one JSON object per line.") from None
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON at line {exc.lineno} ({exc.msg}).",
                            hint="Give a JSON array of objects, or use a .jsonl file.") from None
        if not isinstance(document, list):
            raise DataError(f"{path}: expected a JSON array of objects, found {type(document).__name__}.")
        records = document
    if not records:
        raise DataError(f"{path}: has no records.")
    columns: list[str] = []
    rows: list[dict[str, str]] = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {number} is a {type(record).__name__}, expected an object.")
        for key in record:
            if key not in columns:
                columns.append(key)
        rows.append({str(k): json_value_as_text(v) for k, v in record.items()})
    for row in rows:
        for column in columns:
            row.setdefault(column, "")
    return columns, rows


def choose_column(columns: list[str], requested: str | None, candidates: tuple[str, ...], flag: str, source: str,
                  preferred: str | None = None) -> str:
    """The column named by the flag; else `preferred` (say, the one a model was trained on) when present;
    else the first default name present (case-insensitive). Errors list the columns found."""
    if requested is not None:
        if requested in columns:
            return requested
        raise DataError(f"{source}: no column {requested!r}. Columns found: {', '.join(columns)}.",
                        hint=f"Pass the right name with {flag}.")
    if preferred in columns:
        return preferred
    lowered = {c.lower().strip(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise DataError(
        f"{source}: none of the default column names ({', '.join(candidates)}) was found. "
        f"Columns found: {', '.join(columns)}.",
        hint=f"Choose the column with {flag}.",
    )


def pick_column(table: TextTable, requested: str | None, candidates: tuple[str, ...], flag: str) -> str:
    return choose_column(table.columns, requested, candidates, flag, str(table.path))


@dataclass
class LabelledData:
    """Texts (and second texts of pairs) with their labels, taken from one file, and the columns used.
    `labels` holds one label name per row, or with multi_label a list of names per row."""

    table: TextTable
    text_column: str
    label_column: str
    texts: list[str]
    labels: list
    row_numbers: list[int] = field(default_factory=list)  # 1-based data rows of the file
    pairs: list[str] | None = None
    pair_column: str | None = None
    multi_label: bool = False

    def label_names(self) -> list[str]:
        """Every label occurrence (a multi-label row counts once per label it holds)."""
        return [name for names in self.labels for name in names] if self.multi_label else list(self.labels)

    def pairs_at(self, indices: list[int]) -> list[str] | None:
        return None if self.pairs is None else [self.pairs[i] for i in indices]


def read_labelled(path: Path, *, text_column: str | None, label_column: str | None,
                  encoding: str | None = None, fmt: str | None = None, drop_empty: bool = False,
                  text_pair_column: str | None = None, multi_label: bool = False,
                  label_separator: str = ",") -> LabelledData:
    """Read a file and check that every row has a non-empty text (and second text) and a label."""
    from bertclf import console

    table = read_table(path, encoding=encoding, fmt=fmt)
    text_col = pick_column(table, text_column, TEXT_COLUMN_CANDIDATES, "--text-column")
    label_col = pick_column(table, label_column, LABEL_COLUMN_CANDIDATES, "--label-column")
    pair_col = pick_column(table, text_pair_column, (), "--text-pair-column") if text_pair_column else None
    if len({text_col, label_col, pair_col} - {None}) < (3 if pair_col else 2):
        raise UsageError(f"The text, text pair and label columns must differ (got text {text_col!r}, "
                         f"label {label_col!r}{f', pair {pair_col!r}' if pair_col else ''}).",
                         hint="Pass different --text-column, --text-pair-column and --label-column.")
    texts = table.column(text_col)
    pairs = table.column(pair_col) if pair_col else None
    labels = [label.strip() for label in table.column(label_col)]
    row_numbers = list(range(1, len(texts) + 1))
    empty_labels = [i + 1 for i, label in enumerate(labels) if not label]
    if empty_labels:
        raise DataError(f"{path}: {len(empty_labels)} row(s) have no {label_col!r} label: "
                        f"rows {_rows_list(empty_labels)}.",
                        hint="Label those rows or remove them" + (" (write [] for a text with none of the labels)."
                                                                 if multi_label else "."))
    empty_texts = [i + 1 for i, t in enumerate(texts) if not t.strip() or (pairs is not None and not pairs[i].strip())]
    what = f"{text_col!r} text" + (f" or {pair_col!r} pair text" if pair_col else "")
    if empty_texts and not drop_empty:
        raise DataError(f"{path}: {len(empty_texts)} row(s) have an empty {what}: "
                        f"rows {_rows_list(empty_texts)}.", hint="Fill in or remove those rows, or pass --drop-empty.")
    if empty_texts:
        console.warn(f"{path}: left out {len(empty_texts)} row(s) with an empty {what} (--drop-empty): "
                     f"rows {_rows_list(empty_texts)}.")
        empty = set(empty_texts)
        keep = [i for i in range(len(texts)) if i + 1 not in empty]
        texts, labels, row_numbers = [texts[i] for i in keep], [labels[i] for i in keep], [i + 1 for i in keep]
        pairs = [pairs[i] for i in keep] if pairs is not None else None
        if not texts:
            raise DataError(f"{path}: every row has an empty {what}.")
    if table.format in ("csv", "tsv"):
        _check_swallowed_rows(table, texts, labels, row_numbers)
    data = LabelledData(table, text_col, label_col, texts, labels, row_numbers, pairs, pair_col, multi_label)
    if multi_label:
        data.labels = _label_sets(data, label_separator)
    return data


def _label_sets(data: LabelledData, separator: str) -> list[list[str]]:
    from bertclf.labels import split_label_cell

    sets = []
    for cell, row in zip(data.labels, data.row_numbers, strict=True):
        try:
            sets.append(split_label_cell(cell, separator))
        except ValueError as exc:
            raise DataError(f"{data.table.path}: row {row}, column {data.label_column!r}: {exc}.",
                            hint=f'Write labels as a JSON list (["a", "b"]) or separated by {separator!r} '
                            "(--label-separator).") from None
    return sets


def _check_swallowed_rows(table: TextTable, texts: list[str], labels: list[str], row_numbers: list[int]) -> None:
    """A stray quote makes the CSV parser swallow the following lines into one text, silently. Catch texts
    holding line breaks whose lines end like a row of this file: a separator and a known label."""
    separator = "," if table.format == "csv" else "\t"
    known = set(labels)
    for text, row in zip(texts, row_numbers, strict=True):
        if "\n" not in text:
            continue
        swallowed = [line for line in text.splitlines()[1:]
                     if separator in line and line.rsplit(separator, 1)[1].strip().strip('"') in known]
        if swallowed:
            raise DataError(
                f"{table.path}: row {row}'s text spans {text.count(chr(10)) + 1} lines, {len(swallowed)} of which "
                f"look like rows of their own (for example {swallowed[0][:60]!r}): an unbalanced quote?",
                hint='Check the quotes on and just before that row; a quote inside a field is written "".')


def data_warnings(path: Path, texts: list[str], labels: list,
                  val_texts: list[str] | None = None) -> list[str]:
    """Problems worth knowing that do not stop training: duplicates, conflicting labels, train/validation
    overlap, extreme class imbalance. `labels` holds a name per text, or a list of names (multi-label)."""
    warnings: list[str] = []
    normalized = [" ".join(t.split()).casefold() for t in texts]
    by_text: dict[str, set[str]] = {}
    for text, label in zip(normalized, labels, strict=True):
        by_text.setdefault(text, set()).add(label_key(label))
    duplicates = len(normalized) - len(by_text)
    if duplicates:
        warnings.append(f"{path}: {duplicates} duplicate text(s) (after case and whitespace folding).")
    conflicts = [t for t, labels in by_text.items() if len(labels) > 1]
    if conflicts:
        warnings.append(f"{path}: {len(conflicts)} text(s) appear with different labels, "
                        f"for example {conflicts[0][:60]!r}.")
    if val_texts:
        overlap = sum(" ".join(t.split()).casefold() in by_text for t in val_texts)
        if overlap:
            warnings.append(f"{overlap} of {len(val_texts)} validation text(s) ({overlap / len(val_texts):.1%}) also "
                            "appear in the training data: validation scores will be optimistic.")
    counts = Counter(name for label in labels for name in ([label] if isinstance(label, str) else label))
    if not counts:
        return warnings
    (top, top_n), (low, low_n) = counts.most_common()[0], counts.most_common()[-1]
    if top_n >= 20 * low_n:
        warnings.append(f"Classes are very imbalanced: {top!r} has {top_n} rows, {low!r} only {low_n}. "
                        "Consider macro_f1 (the default --metric) and more data for rare classes.")
    return warnings


def check_label_set(data: LabelledData) -> list[str]:
    from bertclf.labels import sorted_labels

    label_list = sorted_labels(data.label_names())
    if len(label_list) < 2:
        raise DataError(
            f"{data.table.path}: column {data.label_column!r} holds "
            f"{'a single label (' + repr(label_list[0]) + ')' if label_list else 'no labels'}; "
            "a classifier needs at least two.",
            hint="Check --label-column" + (" and --label-separator" if data.multi_label else "")
            + ", or add examples of the other classes.",
        )
    return label_list


def unknown_labels(data: LabelledData, known: list[str] | tuple[str, ...]) -> Counter:
    """Labels of the data that are not in `known`, with their counts."""
    known_set = set(known)
    return Counter(label for label in data.label_names() if label not in known_set)


def rows_with_known_labels(data: LabelledData, known: list[str] | tuple[str, ...]) -> list[int]:
    """Indices of rows whose label (every label, for multi-label) is in `known`."""
    known_set = set(known)
    if data.multi_label:
        return [i for i, names in enumerate(data.labels) if set(names) <= known_set]
    return [i for i, label in enumerate(data.labels) if label in known_set]


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation): a seeded split that keeps each label's share, rare labels kept in train."""
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    indices = list(range(len(labels)))
    splittable = [i for i in indices if counts[labels[i]] >= 2]
    singletons = [i for i in indices if counts[labels[i]] < 2]
    n_val = max(len(set(labels[i] for i in splittable)), round(fraction * len(splittable)))
    if n_val >= len(splittable):
        raise DataError(f"Too few rows ({len(labels)}) to hold out a validation split.",
                        hint="Add rows, or pass --validation FILE.")
    train_idx, val_idx = train_test_split(splittable, test_size=n_val, random_state=seed,
                                          stratify=[labels[i] for i in splittable])
    return sorted(train_idx + singletons), sorted(val_idx)


def cjk_share(texts: list[str], sample: int = 2000) -> float:
    """Share of letters that are CJK ideographs, over a sample of texts (for --model auto)."""
    letters = cjk = 0
    for text in texts[:sample]:
        for char in text:
            if char.isalpha():
                letters += 1
                if "CJK" in unicodedata.name(char, ""):
                    cjk += 1
    return cjk / letters if letters else 0.0
