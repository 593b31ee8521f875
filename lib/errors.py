"""luce's exceptions.

Every error luce raises on purpose is a `LuceError`, so callers can catch the
family at once. Each subclass also derives from the builtin that fits it best
(`ValueError`, `RuntimeError`), so code written against the builtins keeps
working. Messages name the argument, the position and, where there is one, the
fix.
"""


class LuceError(Exception):
  """Base class of every error luce raises on purpose."""


class ShapeError(LuceError, ValueError):
  """Arrays whose shapes or dtypes do not fit together."""


class InputError(LuceError, ValueError):
  """Array values that break a documented precondition (duplicate ids, NaN, ...)."""


class DataError(LuceError, ValueError):
  """A data file or table that fails validation (names file, row, column)."""


class InfeasibleError(LuceError, ValueError):
  """Sampling constraints (forbidden items, quotas) that no set can meet."""


class ConvergenceError(LuceError, RuntimeError):
  """An iterative fit that did not reach its tolerance."""


class ConfigError(LuceError, ValueError):
  """A configuration that is inconsistent or names unknown fields."""


class NonFiniteError(LuceError, FloatingPointError):
  """Training met a NaN or inf loss or gradient (names the step and metric)."""


class CheckpointError(LuceError, OSError):
  """No checkpoint of a run folder can be read back whole (each step's reason is named)."""
