"""Source strings: `scheme:PATH?key=value&...` -> (scheme, path, options).

One string reaches the data from the launchers (`--data=`), the configs
(`config.data.source`) and `luce.data.read`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import urllib.parse

from luce.errors import ConfigError, DataError

# scheme -> (what it reads, its options). Options every scheme takes: on_invalid.
SCHEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "draws": ("a CSV with one draw (set of picks) per row",
              ("delimiter", "columns", "sep", "date", "time", "date_format", "bonus", "context",
               "k", "n", "first", "kind", "catalog", "series")),
    "rankings": ("a CSV with one ranking per row (columns pos1..posK)",
                 ("delimiter", "columns", "sep", "date", "time", "date_format", "bonus", "context",
                  "k", "n", "first", "kind", "catalog", "series")),
    "long": ("a CSV with one (event, item, rank) per row, e.g. race results; per-item "
             "columns can be covariates",
             ("delimiter", "event", "item", "rank", "time", "date_format", "series", "name",
              "kind", "ties", "duplicates", "unranked", "covariates", "categorical")),
    "baskets": ("a text file with one basket (item labels separated by a delimiter) per "
                "line, no header or time column; every catalog item is available",
                ("delimiter", "header", "duplicates", "catalog")),
    "ergast": ("an Ergast f1db_csv folder (results.csv, races.csv, drivers.csv); covariates "
               "grid and constructor",
               ("classified", "duplicates", "ties", "from_year", "to_year", "covariates")),
    "preflib": ("a PrefLib .soc/.soi/.toc/.toi file",
                ("counts", "ties")),
    "prices": ("a wide price table (date + one column per asset) or `sp500` (skfolio); "
               "covariates vol:20, mom:60, rev:5 from the prices before each day",
               ("delimiter", "date", "date_format", "top", "kind", "covariates")),
    "events": ("a luce event table in Parquet (luce.data.write)",
               ("verify_hash",)),
    "synthetic": ("events drawn from a known context-dependent PL model; KIND is ranking "
                  "(default) or set",
                  ("n_items", "k", "n_events", "item_spread", "momentum", "rank_momentum", "seed")),
}
COMMON_OPTIONS = ("on_invalid", "drop_invalid")
# Why a scheme lacks an option that another has, said instead of just listing.
_OPTION_HINTS = {
    ("rankings", "covariates"): "rankings: files hold one ranking per row (pos1..posK) and no "
                                "per-item columns; write one (event, item, rank, covariates...) "
                                "row per line and read it with long:PATH?covariates=COL,...",
    ("draws", "covariates"): "draws: files hold one draw per row and no per-item columns; "
                             "per-item covariates need the long: format",
}


@dataclasses.dataclass(frozen=True)
class Source:
  scheme: str
  path: str
  options: dict

  def __str__(self) -> str:
    query = "&".join(f"{k}={v}" for k, v in self.options.items())
    return f"{self.scheme}:{self.path}" + (f"?{query}" if query else "")


_PATH_WORD = {"synthetic": "KIND"}  # what stands after the colon, when it is not a path


def valid_schemes() -> str:
  return "; ".join(f"{s}:{_PATH_WORD.get(s, 'PATH')} ({what})" for s, (what, _) in SCHEMES.items())


def parse_source(source: str) -> Source:
  """Split `scheme:PATH?key=value&...`; unknown schemes or options raise ConfigError."""
  if not isinstance(source, str) or ":" not in source:
    raise ConfigError(f"data source {source!r} has no scheme; write SCHEME:PATH with one of: "
                      f"{valid_schemes()}.")
  scheme, rest = source.split(":", 1)
  scheme = scheme.strip().lower()
  if scheme not in SCHEMES:
    raise ConfigError(f"data source {source!r}: unknown scheme {scheme!r}; valid schemes: "
                      f"{valid_schemes()}.")
  path, _, query = rest.partition("?")
  options = {}
  for part in filter(None, query.split("&")):
    key, eq, value = part.partition("=")
    key = key.strip()
    if not eq:
      raise ConfigError(f"data source {source!r}: option {part!r} has no value; write key=value.")
    valid = SCHEMES[scheme][1] + COMMON_OPTIONS
    if key not in valid:
      # categorical= only makes sense with covariates=: the same hint.
      hint = _OPTION_HINTS.get((scheme, "covariates" if key == "categorical" else key))
      raise ConfigError(f"data source {source!r}: unknown option {key!r} for {scheme}:; "
                        + (f"{hint}; " if hint else "") + f"valid options: {', '.join(valid)}.")
    options[key] = urllib.parse.unquote(value)
  return Source(scheme, path, options)


def shared_data_dir() -> pathlib.Path | None:
  """The shared data folder: $LUCE_SHARED_DATA, else ../shared/data beside the repo."""
  env = os.environ.get("LUCE_SHARED_DATA")
  if env:
    path = pathlib.Path(env)
  else:
    path = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
  path = path.resolve()
  return path if path.is_dir() else None


def resolve_path(path: str, source: str) -> pathlib.Path:
  """`path` with ~ and $VARS expanded; a relative path missing from the working
  folder is looked up in the shared data folder."""
  expanded = pathlib.Path(os.path.expandvars(os.path.expanduser(path)))
  if expanded.exists():
    return expanded
  tried = [str(expanded)]
  shared = shared_data_dir()
  if not expanded.is_absolute() and shared is not None:
    candidate = shared / expanded
    if candidate.exists():
      return candidate
    tried.append(str(candidate))
  raise DataError(f"data source {source!r}: no such file or folder (tried {', '.join(tried)}).")


def flag(value: str, name: str) -> bool:
  v = value.strip().lower()
  if v in ("1", "true", "yes", "on"):
    return True
  if v in ("0", "false", "no", "off"):
    return False
  raise ConfigError(f"option {name}={value!r}: write true or false.")


def choice(value: str, name: str, valid: tuple[str, ...]) -> str:
  if value not in valid:
    raise ConfigError(f"option {name}={value!r}; valid values: {', '.join(valid)}.")
  return value


def integer(value: str, name: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"option {name}={value!r} must be an integer.") from None


def number(value: str, name: str) -> float:
  """A finite float option (`item_spread=0.5`)."""
  try:
    x = float(value)
  except ValueError:
    raise ConfigError(f"option {name}={value!r} must be a number.") from None
  if not math.isfinite(x):
    raise ConfigError(f"option {name}={value!r} must be a finite number.")
  return x
