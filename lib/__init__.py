"""luce: learning, scoring and sampling rankings and k-subsets of items in JAX.

The core API is re-exported here; the code lives in the modules beside this
file (`luce.pl`, `luce.pl_set`, `luce.sampling`, `luce.fit`, ...). The larger
parts are imported by name: `luce.data`, `luce.models`, `luce.train`,
`luce.eval`, `luce.diffusion`, `luce.kernels`.
"""

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
from luce.fit import PLFit, fit_pl, listed_items
from luce.pl import pl_log_prob
from luce.pl_set import pl_set_log_prob
from luce.sampling import gumbel_noise, pl_sample

__version__ = "0.1.0"
