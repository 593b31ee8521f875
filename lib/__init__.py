"""luce: learning, scoring and sampling rankings and k-subsets of items in JAX.

The core API is re-exported here; the code lives in the modules beside this
file (`luce.pl`, `luce.pl_set`, `luce.sampling`, `luce.fit`, ...). The larger
parts (`luce.data`, `luce.models`, `luce.train`, `luce.eval`, `luce.tune`, `luce.diffusion`,
`luce.kernels`, `luce.baselines`, ...) are attributes after a bare `import luce`
but load on first use (PEP 562 `__getattr__`), so `import luce` stays as fast
as the core and never pulls in Flax, Optax or Orbax.
"""

import importlib as _importlib

from luce.errors import (
    ConfigError,
    ConvergenceError,
    DataError,
    InfeasibleError,
    InputError,
    LuceError,
    NonFiniteError,
    ShapeError,
)
from luce._checks import checked
from luce.fit import CLFit, PLFit, fit_cl, fit_pl, listed_items
from luce.fit import NormalPrior
from luce.inference import (
    Connectivity,
    aic,
    bic,
    check_connected,
    itempar,
    likelihood_ratio_test,
    quasi_variances,
    summary_table,
    vcov,
)
from luce.mixture import MixtureChoice, PLMixtureFit, fit_pl_mixture
from luce.pl import pl_log_prob
from luce.pl_set import pl_set_log_prob
from luce.sampling import gumbel_noise, pl_sample
from luce.ties import PLTieFit, fit_pl_tied, pl_tie_log_prob, sample_pl_tied

__version__ = "0.1.0"

# The parts loaded on first attribute access (`luce.train`, ...).
_LAZY = ("baselines", "data", "diffusion", "eval", "kernels", "losses", "metrics", "models", "ratings",
         "train", "tune")


def __getattr__(name: str):
  if name in _LAZY:
    return _importlib.import_module(f"{__name__}.{name}")  # also binds luce.<name>
  public = sorted(k for k in globals() if not k.startswith("_") and k not in _LAZY)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}. Parts (loaded on first "
                       f"use): {', '.join(_LAZY)}; functions and classes: {', '.join(public)}.")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
