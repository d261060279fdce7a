"""Unlabelled text for `bertclf pretrain`: one or more corpus files read into a list of texts.

`.txt` files hold one text a line (the plain-text reading of `bertclf predict`, not the fastText format
`train` gives `.txt`); CSV, TSV, JSON and JSONL go through the same strict stream readers as predict's input,
Parquet through the table reader of train. Blank texts teach a masked language model nothing: they are
left out, and counted aloud, never dropped silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bertclf import console
from bertclf.config import TEXT_COLUMN_CANDIDATES
from bertclf.digest import file_sha256
from bertclf.errors import DataError, InputMissingError, UsageError

CORPUS_FORMATS = ("txt", "csv", "tsv", "jsonl", "json", "parquet")
_BY_SUFFIX = {".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class CorpusFile:
    """What the manifest records about one corpus file."""

    path: str
    format: str
    encoding: str
    sha256: str
    texts: int  # texts read from it
    blank: int  # blank lines or empty texts left out

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Corpus:
    texts: list[str]
    files: list[CorpusFile]


def read_corpus(paths: tuple[Path, ...] | list[Path], *, text_column: str | None = None, encoding: str | None = None,
                fmt: str | None = None) -> Corpus:
    """Every non-blank text of every file, in file order. Errors name the file (and line, from the readers)."""
    if fmt is not None and fmt not in CORPUS_FORMATS:
        raise UsageError(f"Invalid value for --format: {fmt!r}. Choose one of: {', '.join(CORPUS_FORMATS)}.")
    texts: list[str] = []
    files: list[CorpusFile] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputMissingError(f"{path}: no such file." if not path.exists() else f"{path}: not a file.",
                                    hint="Give corpus files: .txt (one text a line), .csv, .tsv, .jsonl, .json or "
                                    ".parquet.")
        chosen_format = fmt or _BY_SUFFIX.get(path.suffix.lower())
        file_texts, used_encoding = (_parquet_texts(path, text_column) if chosen_format == "parquet"
                                     else _stream_texts(path, chosen_format, text_column, encoding))
        kept = [text for text in file_texts if text.strip()]
        blank = len(file_texts) - len(kept)
        if not kept:
            raise DataError(f"{path}: no text in it ({blank} blank line(s) or empty text(s)).",
                            hint="Give a corpus with one text a line (.txt) or a text column.")
        if blank:
            console.info(f"{path}: {blank} blank line(s) or empty text(s) left out; {len(kept)} texts read.")
        files.append(CorpusFile(str(path), chosen_format or _stream_format(path), used_encoding, file_sha256(path),
                                len(kept), blank))
        texts.extend(kept)
    return Corpus(texts, files)


def _stream_format(path: Path) -> str:
    from bertclf.streams import INPUT_FORMATS

    return INPUT_FORMATS.get(path.suffix.lower(), "txt")


def _stream_texts(path: Path, fmt: str | None, text_column: str | None, encoding: str | None) -> tuple[list[str], str]:
    from bertclf.streams import open_input, sniff_encoding

    fmt = fmt or _stream_format(path)
    used = sniff_encoding(path, encoding)
    records = open_input(str(path), fmt=fmt, text_column=text_column, encoding=used)
    texts = [row[records.text_column] for row in records]
    return texts, used


def _parquet_texts(path: Path, text_column: str | None) -> tuple[list[str], str]:
    from bertclf.data import choose_column, read_table

    table = read_table(path, fmt="parquet")
    column = choose_column(table.columns, text_column, TEXT_COLUMN_CANDIDATES, "--text-column", str(path))
    return [row[column] for row in table.rows], "parquet"
