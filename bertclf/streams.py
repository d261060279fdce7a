"""Streaming input for `bertclf predict` (text lines, CSV/TSV, JSONL, JSON, stdin) and streaming output
(JSONL, CSV, TSV), so memory stays flat however long the input is.

Input is read as bytes and decoded line by line, strictly: only "\n" and "\r\n" end a line (a lone "\r",
U+2028 or "\f" stays inside its line, unlike universal-newline text reading), so an undecodable byte or a
NUL byte is reported with its exact line, on stdin too. CSV/TSV go through data.DelimitedRecords and
data.SwallowedRowCheck, the reader and the stray-quote check of train and eval.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from bertclf import console
from bertclf.config import TEXT_COLUMN_CANDIDATES
from bertclf.data import (
    AUTO_ENCODINGS,
    DelimitedRecords,
    SwallowedRowCheck,
    choose_column,
    json_value_as_text,
    warn_blank_lines,
)
from bertclf.errors import DataError, InputMissingError, UsageError
from bertclf.safe_write import AtomicFile

INPUT_FORMATS = {".txt": "txt", ".text": "txt", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".json": "json"}
INPUT_FORMAT_NAMES = ("txt", "csv", "tsv", "jsonl", "json")
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".json": "jsonl"}
# Multi-line CSV records read before this many rows are judged again at the end of the input, when the
# label-like columns' values are known (a stray quote is often in the first rows).
SETTLED_ROWS, MAX_DEFERRED = 200, 1000


def check_encoding(encoding: str) -> None:
    """--encoding must name a text encoding Python knows (exit 2 naming the flag, not a traceback)."""
    try:
        "\n".encode(encoding)
    except LookupError:
        raise UsageError(f"Invalid value for --encoding: {encoding!r} is not a known text encoding.",
                         hint="For example utf-8, gb18030, big5, latin-1 or utf-16.") from None


def _splits_on_newline_byte(encoding: str) -> bool:
    """Whether "\n" is the byte 0x0A and no other character holds that byte (UTF-8, GB18030, Big5, Latin-1
    ...: not UTF-16/32), so lines can be split as bytes and decoded one at a time."""
    one, two = "\n".encode(encoding), "\n\n".encode(encoding)
    return two[len(one):] == b"\n" and one.endswith(b"\n")


def sniff_encoding(path: Path, requested: str | None) -> str:
    """The file's encoding, checked over the whole file in 1 MiB pieces (constant memory). A requested
    encoding is checked line by line as the file is read."""
    if requested:
        check_encoding(requested)
        if _splits_on_newline_byte(requested):
            _check_no_nul(path)
        return requested
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    _check_no_nul(path)  # before decoding: a NUL in binary junk would otherwise read as "not UTF-8"
    first_error: tuple[int, int] | None = None  # (line, byte) where UTF-8 failed
    for candidate in AUTO_ENCODINGS:
        decoder = codecs.getincrementaldecoder(candidate)()
        offset = lines = 0
        try:
            with path.open("rb") as handle:
                while piece := handle.read(1 << 20):
                    try:
                        decoder.decode(piece)
                    except UnicodeDecodeError as exc:
                        first_error = first_error or (lines + piece.count(b"\n", 0, max(exc.start, 0)) + 1,
                                                      offset + max(exc.start, 0))
                        raise
                    offset, lines = offset + len(piece), lines + piece.count(b"\n")
                decoder.decode(b"", final=True)
            return candidate
        except UnicodeDecodeError:
            first_error = first_error or (lines + 1, offset)
            continue
    line, byte = first_error or (1, 0)
    raise DataError(f"{path}: line {line}, byte {byte}: neither UTF-8 nor GB18030 can decode this file.",
                    hint="Save it as UTF-8, or pass --encoding with its real encoding (for example --encoding big5).")


def _check_no_nul(path: Path) -> None:
    """A NUL byte anywhere in the file is an error naming its line (1 MiB pieces: constant memory)."""
    offset = lines = 0
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            position = piece.find(b"\x00")
            if position >= 0:
                line = lines + piece.count(b"\n", 0, position) + 1
                raise DataError(f"{path}: line {line} holds a NUL byte (at "
                                f"byte {offset + position}): this looks like a binary or damaged file, not text.",
                                hint="Check that you passed the right file; text files never hold NUL bytes.")
            offset, lines = offset + len(piece), lines + piece.count(b"\n")


def decoded_lines(binary: IO[bytes], encoding: str, name: str, *, close: bool = False) -> Iterator[str]:
    """Lines of a byte stream as text, each with its "\n" (or "\r\n") end, decoded strictly; errors name
    the line. Reads one line at a time, so a slow pipe's lines come out as they arrive."""
    label = "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf-8", "utf8") else encoding
    hint = ("stdin is read as UTF-8: pass --encoding with its real encoding (for example --encoding gb18030)."
            if name == "<stdin>" else "Check --encoding, or leave it out to try UTF-8 and then GB18030.")
    number = 0
    try:
        if _splits_on_newline_byte(encoding):
            decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
            for raw in binary:  # binary streams split on b"\n" only
                number += 1
                try:
                    line = decoder.decode(raw)
                except UnicodeDecodeError as exc:
                    raise DataError(f"{name}: line {number} is not valid {label} (byte {exc.start + 1} of the "
                                    f"line: {exc.reason}).", hint=hint) from None
                yield _checked(line, name, number)
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise DataError(f"{name}: line {number} is not valid {label}: the file ends inside a character.",
                                hint=hint) from None
            return
        text = io.TextIOWrapper(binary, encoding=encoding, errors="strict", newline="\n")
        try:
            for line in text:  # newline="\n": only "\n" ends a line
                number += 1
                yield _checked(line, name, number)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: not valid {label} near line {number + 1} ({exc.reason}).", hint=hint) from None
    finally:
        if close:
            binary.close()


def _checked(line: str, name: str, number: int) -> str:
    if "\x00" in line:
        raise DataError(f"{name}: line {number} holds a NUL byte: this looks like a binary or damaged file, "
                        "not text.", hint="Check that you passed the right file; text files never hold NUL bytes.")
    return line


def _line_body(line: str) -> str:
    """A line without its end ("\n" or "\r\n"); a "\r" elsewhere is part of the text."""
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


class InputRecords:
    """Rows of an input as string dicts, with the text column chosen and the id of each row. `lines` are
    decoded lines with their ends (decoded_lines)."""

    def __init__(self, source: str, fmt: str, lines: Iterable[str], text_column: str | None, name: str,
                 preferred_column: str | None = None, pair_column: str | None = None):
        self.source, self.format, self.lines, self.name = source, fmt, iter(lines), name
        self._requested_text_column = text_column
        self._preferred_column = preferred_column  # the column the model was trained on
        self.pair_column = pair_column  # second texts, for a model trained on pairs
        self.columns: list[str] = []
        self.text_column = "text"
        self._rows = self._open_rows()

    def _open_rows(self) -> Iterator[dict[str, str]]:
        if self.format == "txt":
            if self.pair_column:
                raise UsageError(f"{self.name}: this model classifies text pairs, and plain text lines hold one "
                                 "text each.", hint=f"Give a CSV, TSV or JSONL input with a {self.pair_column!r} "
                                 "column (or --text with --text-pair).")
            self.columns = ["text"]
            return ({"text": _line_body(line)} for line in self.lines)  # every line a row, an empty one too
        if self.format in ("csv", "tsv"):
            try:
                records = DelimitedRecords(self.lines, self.format, self.name)
            except DataError as exc:
                if "no header row" in exc.message:
                    raise DataError(f"{self.name}: empty file, no header row.") from None
                raise
            self.columns = records.columns
            self._pick_text_column()
            return self._checked_csv_rows(records)
        if self.format == "jsonl":
            return self._jsonl_rows()
        return self._json_records(iter(self._json_document()))

    def _json_document(self) -> list:
        text = "".join(self.lines)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.name}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}).",
                            hint="A .json input is one complete JSON array of objects (was it cut short?); "
                            "for one object a line, use .jsonl.") from None
        if not isinstance(document, list):
            raise DataError(f"{self.name}: expected a JSON array of objects, found {type(document).__name__}.")
        return document

    def _pick_text_column(self) -> None:
        self.text_column = choose_column(self.columns, self._requested_text_column, TEXT_COLUMN_CANDIDATES,
                                         "--text-column", self.name, preferred=self._preferred_column)
        if self.pair_column:
            choose_column(self.columns, self.pair_column, (), "--text-pair-column", self.name)

    def _checked_csv_rows(self, records: DelimitedRecords) -> Iterator[dict[str, str]]:
        width = len(self.columns)
        check = SwallowedRowCheck(self.name, self.columns, self.format,
                                  text_columns=(self.text_column, self.pair_column))
        deferred: list[tuple[int, list[str]]] = []
        for first_line, fields, lines in records:
            if len(fields) != width:
                raise DataError(f"{self.name}: line {first_line} has {len(fields)} field(s), the header "
                                f"{width}.", hint="Quote fields that contain the separator, and give every row "
                                "the same number of fields.")
            row = dict(zip(self.columns, fields, strict=True))
            check.observe(row)
            if lines is not None:
                check.check(first_line, lines)
                if check.observed < SETTLED_ROWS and len(deferred) < MAX_DEFERRED:
                    deferred.append((first_line, lines))
            yield row
        for first_line, lines in deferred:
            check.check(first_line, lines)
        warn_blank_lines(self.name, records.inner_blank_lines)

    def _jsonl_rows(self) -> Iterator[dict[str, str]]:
        blank: list[int] = []
        last = [0]  # the line of the last record

        def records() -> Iterator[object]:
            for number, line in enumerate(self.lines, start=1):
                if not line.strip():
                    blank.append(number)
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{self.name}: line {number} is not valid JSON ({exc.msg}).",
                                    hint="Write one JSON object per line.") from None
                last[0] = number
                yield record

        yield from self._json_records(records())
        warn_blank_lines(self.name, [n for n in blank if n < last[0]])

    def _json_records(self, records: Iterator[object]) -> Iterator[dict[str, str]]:
        first = True
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise DataError(f"{self.name}: record {number} is not a JSON object.")
            try:
                row = {str(k): json_value_as_text(v) for k, v in record.items()}
            except ValueError as exc:
                raise DataError(f"{self.name}: record {number}: {exc}.") from None
            if first:
                self.columns = list(row)
                self._pick_text_column()
                first = False
            row.setdefault(self.text_column, "")
            if self.pair_column:
                row.setdefault(self.pair_column, "")
            yield row

    def __iter__(self) -> Iterator[dict[str, str]]:
        return self._rows


def open_input(source: str, *, fmt: str | None, text_column: str | None, encoding: str | None,
               preferred_column: str | None = None, pair_column: str | None = None) -> InputRecords:
    """`-` is stdin (plain text lines unless --input-format says otherwise)."""
    if fmt is not None and fmt not in INPUT_FORMAT_NAMES:
        raise UsageError(f"Invalid value for --input-format: {fmt!r}. Choose one of: {', '.join(INPUT_FORMAT_NAMES)}.")
    if encoding is not None:
        check_encoding(encoding)
    if source == "-":
        lines = decoded_lines(sys.stdin.buffer, encoding or "utf-8-sig", "<stdin>")
        return InputRecords(source, fmt or "txt", lines, text_column, "<stdin>", preferred_column, pair_column)
    path = Path(source)
    if not path.is_file():
        raise InputMissingError(f"{path}: no such file." if not path.exists() else f"{path}: not a file.")
    if fmt is None:
        fmt = INPUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(f"{path}: cannot tell the input format from the extension {path.suffix!r}.",
                             hint="Pass --input-format txt, csv, tsv, jsonl or json.")
    chosen = sniff_encoding(path, encoding)
    try:
        binary = path.open("rb")
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot be read ({exc.strerror}).") from None
    lines = decoded_lines(binary, chosen, str(path), close=True)
    return InputRecords(source, fmt, lines, text_column, str(path), preferred_column, pair_column)


def output_format(output: Path | None, requested: str | None) -> str:
    if requested:
        if requested not in ("jsonl", "csv", "tsv"):
            raise UsageError(f"Invalid value for --format: {requested!r}. Choose jsonl, csv or tsv.")
        return requested
    if output is not None:
        return OUTPUT_FORMATS.get(output.suffix.lower(), "jsonl")
    return "jsonl"


class RowWriter:
    """Writes prediction rows as they come: to stdout, or to --output through a unique temporary file renamed
    into place at the end (bertclf.safe_write: a device or FIFO is written to directly)."""

    def __init__(self, output: Path | None, fmt: str):
        self.output, self.format = output, fmt
        self._file = AtomicFile(output, "w", encoding="utf-8", newline="", what=f"--output {output}") \
            if output is not None else None
        self.handle = self._file.handle if self._file is not None else console.stdout
        self._csv: csv.DictWriter | None = None

    def write(self, row: dict) -> None:
        try:
            self._write(row)
        except OSError as exc:
            if self._file is None:
                raise  # stdout: the CLI's guard tells a closed pipe (quiet) from a full disk (exit 74)
            self._file.abort()
            raise self._file._error(exc) from None

    def _write(self, row: dict) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        if self._csv is None:
            delimiter = "," if self.format == "csv" else "\t"
            self._csv = csv.DictWriter(self.handle, fieldnames=list(row), delimiter=delimiter, lineterminator="\n")
            self._csv.writeheader()
        self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})

    def close(self, success: bool) -> None:
        if self._file is None:
            self.handle.flush()
        elif success:
            self._file.commit()
        else:
            self._file.abort()
