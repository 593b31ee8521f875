"""Reading text tables: BOM, CRLF, delimiter detection, column specs, dates, ints."""

from __future__ import annotations

import csv
import io
import pathlib
import re

import numpy as np
import pandas as pd

from luce.data._validate import Problem
from luce.errors import ConfigError, DataError

DELIMITERS = (",", ";", "\t", "|")
DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d",
                "%d-%m-%Y", "%m-%d-%Y",
                # Month names (English) are unambiguous: "June 12, 1982", "12 Jun 1982".
                "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y")
NULLS = ("", "\\N", "NA", "NaN", "nan", "null", "NULL", "None")


def _delimiter_option(value: str | None) -> str | None:
  if value is None:
    return None
  named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
  return named.get(value, value)


def read_text_table(path, delimiter: str | None = None) -> tuple[pd.DataFrame, str]:
  """All cells of a delimited text file as strings (nulls as None).

  A UTF-8 BOM, CRLF line endings and blank lines before the header are
  tolerated. The delimiter, when not given, is the one of `DELIMITERS` that
  occurs most often in the header line (an error if two tie). Row i of the
  frame is file line `line_numbers(frame)[i]`; blank lines are kept as rows of
  nulls so that line numbers stay right. A row with fewer fields than the
  header (its trailing columns missing, not left empty) is a DataError naming
  the line.
  """
  name = str(path)
  try:
    raw = pathlib.Path(path).read_bytes()
  except OSError as e:
    raise DataError(f"{name}: cannot read ({e}).") from e
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError:
    text = raw.decode("latin-1")
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  lines = text.split("\n")
  skipped = 0
  while skipped < len(lines) - 1 and not lines[skipped].strip():
    skipped += 1
  if skipped:
    text = "\n".join(lines[skipped:])
  header = text.split("\n", 1)[0]
  delimiter = _delimiter_option(delimiter)
  if delimiter is None:
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts.values())
    winners = [d for d, c in counts.items() if c == best]
    if best == 0:
      delimiter = ","
    elif len(winners) > 1:
      raise DataError(f"{name}: cannot tell the delimiter from the header {header!r} "
                      f"({' and '.join(map(repr, winners))} both occur {best} times); "
                      f"pass ?delimiter=...")
    else:
      delimiter = winners[0]
  try:
    frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                        na_filter=False, skip_blank_lines=False, engine="c")
  except (pd.errors.ParserError, ValueError) as e:
    raise DataError(f"{name}: not a {delimiter!r}-delimited table ({e}).") from e
  frame.columns = [str(c).strip() for c in frame.columns]
  _check_row_widths(text, delimiter, list(frame.columns), name, skipped)
  frame = frame.astype(object)
  frame = frame.where(~frame.isin(NULLS) & frame.notna(), None)
  frame.attrs["header_line"] = skipped + 1
  return frame, delimiter


def _check_row_widths(text: str, delimiter: str, columns: list[str], name: str, skipped: int) -> None:
  """DataError at the first row with fewer fields than the header (pandas fills
  them with nulls silently); blank lines are not rows."""
  width = len(columns)
  for i, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter)):
    if 0 < len(row) < width and any(cell.strip() for cell in row):
      missing = ", ".join(map(repr, columns[len(row):]))
      raise DataError(f"{name}, line {skipped + i + 1}: {len(row)} of the header's {width} fields "
                      f"(missing: {missing}); a row must give every column (an empty cell is "
                      f"written as nothing between two delimiters).")


def line_numbers(frame: pd.DataFrame) -> np.ndarray:
  """int64[rows]: the file line of each row (the header is line 1)."""
  return np.arange(len(frame), dtype=np.int64) + frame.attrs.get("header_line", 1) + 1


def column_spec(spec: str, columns: list[str], name: str, option: str) -> list[str]:
  """Columns named by `a,b,c`, a range `Nr1-Nr20`, or a mix; checked to exist."""
  out = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    if part in columns:
      out.append(part)
      continue
    m = re.fullmatch(r"(.*?)(\d+)-(.*?)(\d+)", part)
    if m and m.group(1) == m.group(3):
      lo, hi = int(m.group(2)), int(m.group(4))
      out.extend(f"{m.group(1)}{i}" for i in range(lo, hi + 1))
    else:
      out.append(part)
  missing = [c for c in out if c not in columns]
  if missing:
    raise DataError(f"{name}: {option}= names {', '.join(map(repr, missing))}, which are not "
                    f"columns; the columns are {', '.join(map(repr, columns))}.")
  return out


def numbered_run(columns: list[str]) -> list[str]:
  """The longest run of columns `P1, P2, ..., Pk` (same prefix, numbered from 0 or 1)."""
  best: list[str] = []
  by_prefix: dict[str, dict[int, str]] = {}
  for c in columns:
    m = re.fullmatch(r"(.*?)(\d+)", c)
    if m:
      by_prefix.setdefault(m.group(1), {})[int(m.group(2))] = c
  for numbered in by_prefix.values():
    start = 0 if 0 in numbered else 1
    run = []
    i = start
    while i in numbered:
      run.append(numbered[i])
      i += 1
    if len(run) > len(best):
      best = run
  return best if len(best) >= 2 else []


def parse_ints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(int64 values, ok bool) for an object array of strings/None."""
  s = pd.Series(values, dtype=object)
  num = pd.to_numeric(s.astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
  ok = np.isfinite(num) & (num == np.round(num)) & s.notna().to_numpy()
  return np.where(ok, num, 0).astype(np.int64), ok


def is_int_column(values) -> bool:
  values = [v for v in values if v is not None]
  return bool(values) and parse_ints(np.asarray(values, dtype=object))[1].all()


def parse_times(values: np.ndarray, *, name: str, column: str, rows: np.ndarray,
                date_format: str | None) -> tuple[np.ndarray, list[Problem]]:
  """Times from strings: integer steps when every value is an integer, else dates.

  Returns (int64[m] steps or datetime64[s][m], problems). A date format that is
  not given is inferred: the one of DATE_FORMATS that parses every value; when
  several do and disagree (01/02 vs 02/01) it is an error asking for one.
  """
  values = np.asarray(values, dtype=object)
  present = np.array([v is not None for v in values])
  problems = [Problem("null", name, int(rows[i]), column, None, "missing time")
              for i in np.flatnonzero(~present)]
  if date_format is None and present.any():
    ints, ok = parse_ints(values)
    if ok[present].all():
      return ints, problems
  s = pd.Series(values, dtype=object).where(present, None)
  if date_format is None:
    fits = []
    for fmt in DATE_FORMATS:
      parsed = pd.to_datetime(s, format=fmt, errors="coerce")
      if parsed[present].notna().all():
        fits.append((fmt, parsed))
    if not fits:
      formats = ", ".join(DATE_FORMATS)
      sample = next((v for v in values if v is not None), None)
      raise DataError(f"{name}: column {column!r} holds neither integer steps nor dates in a "
                      f"known format ({formats}); e.g. {sample!r}. Pass ?date_format=...")
    if any(not f[1].equals(fits[0][1]) for f in fits[1:]):
      raise DataError(f"{name}: the dates in column {column!r} parse as "
                      f"{' and as '.join(f[0] for f in fits)} with different results; pass "
                      f"?date_format=...")
    parsed = fits[0][1]
  else:
    parsed = pd.to_datetime(s, format=date_format, errors="coerce")
    for i in np.flatnonzero(present & parsed.isna().to_numpy()):
      problems.append(Problem("parse", name, int(rows[i]), column, values[i],
                              f"not a date in format {date_format}"))
  times = parsed.to_numpy().astype("datetime64[s]")
  return times, problems


def sanitize(name: str) -> str:
  """A column name as a context column suffix: lower case, [a-z0-9_]."""
  out = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
  return out or "column"


def check_choice(value, name, valid):
  if value not in valid:
    raise ConfigError(f"option {name}={value!r}; valid values: {', '.join(valid)}.")
  return value
