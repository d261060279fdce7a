"""Read labelled text files (single labels or label sets, optional second texts) and validate them.

Files are parsed by the csv module (CSV/TSV, through `DelimitedRecords`, the one CSV reader that
`predict`'s streams use too), the json module (JSON/JSONL) and pyarrow (Parquet), every value as a
string: the loaders' defaults turn the texts "NA"/"None"/"null" into missing values and integer labels into
floats (shared/research/reliability.md section 4), and the `datasets` CSV cache is keyed on mtime only, so
it can serve stale rows. Bytes are decoded strictly by us, never with errors="replace".

No row lost, none invented: only "\n" and "\r\n" end a line (never a lone "\r", U+2028, U+0085 or "\f",
which str.splitlines() and universal-newline reading also split on); a NUL byte anywhere is an error naming
its line; a quote left open, or a quoted field that swallowed lines which read as rows of their own, is an
error naming the line; blank lines in CSV/TSV/JSONL/fastText files are not rows: they are skipped and
counted in a warning.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import hashlib
import io
import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
SEPARATORS = {"csv": ",", "tsv": "\t"}
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are legitimate texts


@dataclass
class TextTable:
    """A file read as strings: the columns, one list of values per column, and where it came from."""

    path: Path
    format: str
    encoding: str
    sha256: str
    columns: list[str]
    rows: list[dict[str, str]]
    # CSV/TSV records that span several lines: (row index, first line, the raw lines), for SwallowedRowCheck
    multiline: list[tuple[int, int, list[str]]] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # Parquet columns that hold no text, and why

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[str]:
        if name in self.unreadable:
            raise DataError(f"{self.path}: column {name!r} cannot be read as text: {self.unreadable[name]}.",
                            hint="Choose another column, or store this one as strings.")
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
                f"{path}: not valid {encoding} at byte {exc.start} (line {_line_of(raw, exc.start)}): {exc.reason}.",
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
        columns, rows, unreadable = _parse_parquet(path, raw)
        return TextTable(path=path, format=fmt, encoding="parquet", sha256=sha, columns=columns, rows=rows,
                         unreadable=unreadable)
    if raw.startswith(b"PAR1") or raw.startswith(b"PK\x03\x04"):
        kind = "a Parquet file" if raw.startswith(b"PAR1") else "a ZIP or Excel (.xlsx) file"
        raise DataError(f"{path}: is {kind}, not {fmt.upper()} text.",
                        hint="Rename it to its real extension, pass --format, or export it as CSV.")
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf16:  # UTF-16 text is full of NUL bytes; it is checked once decoded
        check_no_nul(str(path), raw, fmt)
    text, used_encoding = decode_bytes(path, raw, encoding)
    if utf16 or used_encoding.replace("_", "-").lower().startswith(("utf-16", "utf-32", "utf16", "utf32")):
        check_no_nul(str(path), text, fmt)
    if fmt in ("csv", "tsv") and text.lstrip()[:1] in ("[", "{"):
        raise DataError(f"{path}: looks like JSON, not {fmt.upper()}.",
                        hint="Name it .json (an array) or .jsonl (one object a line), or pass --format.")
    multiline: list[tuple[int, int, list[str]]] = []
    if fmt in ("csv", "tsv"):
        columns, rows, multiline = _parse_delimited(path, text, fmt)
    elif fmt == "fasttext":
        columns, rows = _parse_fasttext(path, text)
    else:
        columns, rows = _parse_json(path, text, fmt)
    return TextTable(path=path, format=fmt, encoding=used_encoding, sha256=sha, columns=columns, rows=rows,
                     multiline=multiline)


def check_no_nul(name: str, data: bytes | str, fmt: str) -> None:
    """A NUL byte anywhere (not only in the first kilobytes) means a binary or damaged file: name its line."""
    binary = isinstance(data, bytes)
    position = data.find(b"\x00" if binary else "\x00")  # memchr: fast on the largest files
    if position >= 0:
        unit = "byte" if binary else "character"
        raise DataError(f"{name}: line {_line_of(data, position)} holds a NUL byte (at {unit} {position}): "
                        f"this looks like a binary or damaged file, not {fmt.upper()} text.",
                        hint="Check that you passed the right file; text files never hold NUL bytes.")


def _line_of(data: bytes | str, position: int) -> int:
    return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, position) + 1


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end). Only "\n" and "\r\n" end a line: a lone "\r", U+2028, U+0085,
    "\f" and the other characters str.splitlines() splits on stay inside the line."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line[:-1] if line.endswith("\r") else line


def warn_blank_lines(name: str, blank: list[int]) -> None:
    """Blank lines are not rows (in predict too, so output rows match input records): say how many were
    skipped. Blank lines at the very end of a file are a trailing newline too many, skipped silently."""
    if blank:
        from bertclf import console

        console.warn(f"{name}: skipped {len(blank)} blank line(s), which are not rows: "
                     f"line(s) {_rows_list(blank)}.")


def _parse_delimited(path: Path, text: str, fmt: str) -> tuple[list[str], list[dict[str, str]],
                                                                  list[tuple[int, int, list[str]]]]:
    records = DelimitedRecords(io.StringIO(text), fmt, str(path))  # StringIO splits on "\n" only
    columns = records.columns
    other = "csv" if fmt == "tsv" else "tsv"
    if len(columns) == 1 and SEPARATORS[other] in columns[0]:
        # Checked before the rows, whose quotes read with the wrong separator give a less helpful error.
        raise DataError(f"{path}: the header is one column, {columns[0]!r}, split by "
                        f"{'commas' if other == 'csv' else 'tabs'}: is this {other.upper()} named .{fmt}? "
                        f"Columns found: {columns[0]}.", hint=f"Rename it .{other}, or pass --format {other}.")
    width = len(columns)
    rows: list[dict[str, str]] = []
    multiline: list[tuple[int, int, list[str]]] = []
    for first_line, fields, lines in records:
        if len(fields) > width:
            raise DataError(f"{path}: malformed {fmt.upper()}: line {first_line}: Expected {width} fields, saw "
                            f"{len(fields)}.", hint=QUOTING_HINT)
        if len(fields) < width:  # a short row's missing fields are empty (a missing label is reported later)
            fields += [""] * (width - len(fields))
        if lines is not None:
            multiline.append((len(rows), first_line, lines))
        rows.append(dict(zip(columns, fields, strict=True)))
    if not rows:
        raise DataError(f"{path}: has a header but no data rows.")
    warn_blank_lines(str(path), records.inner_blank_lines)
    return columns, rows, multiline


CR_STAND_IN = "\ufdd0"  # a noncharacter: never in text, so it can carry a lone "\r" through csv.reader
QUOTING_HINT = ("Quote fields that contain the separator, a quote or a line break (a quote inside a quoted field "
                'is written ""), and give every row the same number of fields.')


class _LineFeed:
    """The lines given to csv.reader, counted, checked for NUL and kept until their record is complete."""

    def __init__(self, lines: Iterable[str], name: str, fmt: str):
        self._lines, self.name, self.fmt = iter(lines), name, fmt
        self.number = 0  # lines read so far: the line csv.reader is on
        self.current: list[str] = []  # the raw lines of the record being read
        self.disguised = False  # whether a line of the current record had a lone "\r" replaced

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        if "\x00" in line:
            raise DataError(f"{self.name}: line {self.number} holds a NUL byte: this looks like a binary or "
                            f"damaged file, not {self.fmt.upper()} text.",
                            hint="Check that you passed the right file; text files never hold NUL bytes.")
        self.current.append(line)
        body = line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line
        if "\r" in body:
            # csv.reader ends a record at any "\r"; here a lone one is text (writers such as Python's own
            # csv.writer with lineterminator="\n" leave it unquoted), so it crosses the parser in disguise.
            if CR_STAND_IN in line:
                raise DataError(f"{self.name}: line {self.number} holds U+{ord(CR_STAND_IN):04X}, a noncharacter "
                                "that is not text.", hint="Remove it from the file.")
            self.disguised = True
            line = body.replace("\r", CR_STAND_IN) + line[len(body):]
        return line


class DelimitedRecords:
    """The one CSV/TSV reader of train, eval and predict: records with the line each starts on, streamed.

    `lines` must be split on "\n" only, ends kept (io.StringIO, or a file opened with newline="\n"), so a
    lone "\r" never ends a line: it is part of its field, quoted or not. The csv module runs strict: a quote
    left open at the end of the file, or a closing quote followed by more text, is an error naming the line,
    never a silent merge. Iterating yields (first line, fields, raw lines if
    the record spans several lines else None); blank lines are skipped and counted.
    """

    def __init__(self, lines: Iterable[str], fmt: str, name: str):
        self.fmt, self.name = fmt, name
        self._feed = _LineFeed(lines, name, fmt)
        self._reader = csv.reader(self._feed, delimiter=SEPARATORS[fmt], quotechar='"', doublequote=True,
                                  strict=True)
        self.blank_lines: list[int] = []
        self.last_line = 0  # the last line of the last record read
        header = self._next()
        if header is None:
            raise DataError(f"{name}: no header row found.", hint="Give a file with a header and rows.")
        self.columns = [column or f"Unnamed: {i}" for i, column in enumerate(header[1])]
        duplicates = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if duplicates:
            raise DataError(f"{name}: duplicate column names in the header ({', '.join(duplicates)}).",
                            hint="Give every column a distinct name.")

    @property
    def inner_blank_lines(self) -> list[int]:
        """Blank lines between records (those after the last record are only trailing newlines)."""
        return [n for n in self.blank_lines if n < self.last_line]

    def _next(self) -> tuple[int, list[str], list[str] | None] | None:
        while True:
            first = self._feed.number + 1
            try:
                fields = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                raise self._error(str(exc), first) from None
            lines, self._feed.current = self._feed.current, []
            if self._feed.disguised:
                fields = [value.replace(CR_STAND_IN, "\r") for value in fields]
                self._feed.disguised = False
            if not fields:
                self.blank_lines.append(first)
                continue
            self.last_line = self._feed.number
            return first, fields, (lines if len(lines) > 1 else None)

    def _error(self, reason: str, first: int) -> DataError:
        kind, line = self.fmt.upper(), self._feed.number
        where = f"line {line}" if line == first else f"line {line} (in the record that starts on line {first})"
        if reason.startswith("unexpected end of data"):
            message = (f"malformed {kind}: line {first}: EOF inside string: a quote opened on line {first} is "
                       f"never closed, so the rest of the file would be one field")
        elif "expected after" in reason:
            message = (f"malformed {kind}: {where}: a quoted field's closing quote is followed by more text "
                       "(a stray or unbalanced quote?)")
        else:
            message = f"malformed {kind}: {where}: {reason}"
        return DataError(f"{self.name}: {message}.", hint=QUOTING_HINT)

    def __iter__(self) -> Iterator[tuple[int, list[str], list[str] | None]]:
        while (record := self._next()) is not None:
            yield record


_INTEGER = re.compile(r"[+-]?\d+")


class SwallowedRowCheck:
    """Catches the rows a stray quote swallows, in train, eval and predict alike.

    A quoted field may legitimately span lines (multi-line texts are real data), so a record that spans
    several lines is only suspect when its lines read as rows of their own: a quote that opens a field
    without closing it on that line makes the parser take the following rows into the field, up to the
    next quote. Each physical line of the record is split on the separator with quotes taken literally; a
    line *looks like a row* when it has exactly the header's number of fields and agrees with the file's
    rows in every key column that can tell: a label-like column (few distinct values, e.g. the label)
    holds one of its known values, an integer column (ids) an integer. At least one label-like column must
    agree. Two or more such lines in one record mean swallowed rows, wherever they are in the record
    (first, middle or last line). A multi-line text whose own lines end in ",<a label>" would be taken for
    swallowed rows; one whose lines merely hold commas is not. Without a label-like column (a text-only
    file, or id and text) nothing can tell the two apart, and only the strict parser's errors apply.
    Key columns are all but the text (and pair) columns; `exact` ones (the label) are always label-like.
    """

    MAX_VALUES = 1000  # distinct values kept per column; beyond that a column is not label-like

    def __init__(self, name: str, columns: list[str], fmt: str, *, text_columns: Iterable[str | None] = (),
                 exact: Iterable[str] = ()):
        self.name, self.columns, self.separator = name, columns, SEPARATORS[fmt]
        skip, self.exact = set(text_columns), set(exact)
        self.keys = [c for c in columns if c not in skip]
        self.values: dict[str, set[str] | None] = {c: set() for c in self.keys}  # None: too many
        self.integers = dict.fromkeys(self.keys, True)
        self.observed = 0

    def observe(self, row: dict[str, str]) -> None:
        self.observed += 1
        for column in self.keys:
            value = row.get(column, "").strip()
            if self.integers[column] and not _INTEGER.fullmatch(value):
                self.integers[column] = False
            known = self.values[column]
            if known is not None:
                known.add(value)
                if len(known) > self.MAX_VALUES and column not in self.exact:
                    self.values[column] = None

    def _kinds(self) -> dict[str, str]:
        """How each key column can judge a line: "set" (known values) or "int"; others are left out."""
        kinds = {}
        for column in self.keys:
            known, integers = self.values[column], self.integers[column] and self.observed > 0
            distinct = len(known) if known is not None else None
            if column in self.exact:
                kinds[column] = "set"
            elif integers and (distinct is None or distinct > self.observed // 2):
                kinds[column] = "int"  # mostly unique integers: ids
            elif distinct is not None and distinct <= max(10, self.observed // 2):
                kinds[column] = "set"
        return kinds

    def rowlike_lines(self, lines: list[str]) -> list[int]:
        """Indices of the lines of one record that look like rows of their own."""
        kinds = self._kinds()
        if "set" not in kinds.values():
            return []
        index = {c: i for i, c in enumerate(self.columns)}
        found = []
        for offset, line in enumerate(lines):
            fields = line.rstrip("\n").rstrip("\r").split(self.separator)
            if len(fields) != len(self.columns):
                continue
            values = {c: fields[index[c]].strip().strip('"').strip() for c in kinds}
            if all(values[c] in self.values[c] if kind == "set" else bool(_INTEGER.fullmatch(values[c]))
                   for c, kind in kinds.items()):
                found.append(offset)
        return found

    def check(self, first_line: int, lines: list[str]) -> None:
        rowlike = self.rowlike_lines(lines)
        if len(rowlike) >= 2:
            shown = lines[rowlike[1]].rstrip("\r\n")
            raise DataError(
                f"{self.name}: line {first_line}: a quoted field runs over lines {first_line}-"
                f"{first_line + len(lines) - 1}, and {len(rowlike)} of those lines look like rows of their own "
                f"(for example line {first_line + rowlike[1]}: {shown[:60]!r}): an unbalanced quote on line "
                f"{first_line} swallowed them?",
                hint='Check the quotes on that line; a quote inside a field is written "" and the field quoted.')


def _parse_parquet(path: Path, raw: bytes) -> tuple[list[str], list[dict[str, str]], dict[str, str]]:
    """Every column as text, whatever its Arrow type: dates and times in ISO 8601, decimals as written.
    A column of bytes that are not UTF-8 is kept out (`unreadable`), an error only if it is used."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except Exception as exc:  # pyarrow raises several types for a damaged or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc}).",
                        hint="Check the file, or pass --format with its real format.") from None
    columns = [str(c) for c in table.column_names]
    if table.num_rows == 0:
        raise DataError(f"{path}: has no rows.")
    values: list[list[str]] = []
    unreadable: dict[str, str] = {}
    for name, column in zip(columns, table.columns, strict=True):
        try:
            values.append([json_value_as_text(v) for v in column.to_pylist()])
        except ValueError as exc:
            unreadable[name] = str(exc)
            values.append([""] * table.num_rows)
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    return columns, rows, unreadable


def _parse_fasttext(path: Path, text: str) -> tuple[list[str], list[dict[str, str]]]:
    """fastText lines: `__label__pos __label__x the text`. One label a line (multi-label is a later feature)."""
    rows: list[dict[str, str]] = []
    blank, last = [], 0
    for line_number, line in numbered_lines(text):
        if not line.strip():
            blank.append(line_number)
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
        last = line_number
    if not rows:
        raise DataError(f"{path}: has no lines.")
    warn_blank_lines(str(path), [n for n in blank if n < last])
    return ["text", "label"], rows


def _plain(value: object) -> object:
    """Values json cannot write (from Parquet: dates, times, decimals, bytes) as text, for json.dumps."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (datetime.timedelta, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("it holds bytes that are not UTF-8 text") from None
    raise TypeError(f"{type(value).__name__} is not text")


def json_value_as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None, NaN: missing
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalars
        value = value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        value = value.tolist()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal, bytes, bytearray)):
        return str(_plain(value))
    try:  # lists (multi-label), nested objects
        return json.dumps(value, ensure_ascii=False, default=_plain)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _parse_json(path: Path, text: str, fmt: str) -> tuple[list[str], list[dict[str, str]]]:
    records: list[object] = []
    if fmt == "jsonl":
        blank, last = [], 0
        for line_number, line in numbered_lines(text):
            if not line.strip():
                blank.append(line_number)
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_number} is not valid JSON ({exc.msg}).",
                                hint="Write one JSON object per line.") from None
            last = line_number
        warn_blank_lines(str(path), [n for n in blank if n < last])
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
    if table.multiline:
        _check_swallowed_rows(table, text_col, label_col, pair_col)
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


def _check_swallowed_rows(table: TextTable, text_col: str, label_col: str, pair_col: str | None) -> None:
    """A stray quote makes the parser swallow the following rows into one field, silently: see
    SwallowedRowCheck, which predict's reader uses too. The label column is known here, so it always judges."""
    check = SwallowedRowCheck(str(table.path), table.columns, table.format, text_columns=(text_col, pair_col),
                              exact=(label_col,))
    for row in table.rows:
        check.observe(row)
    for _, first_line, lines in table.multiline:
        check.check(first_line, lines)


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
