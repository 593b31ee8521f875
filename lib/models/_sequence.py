"""Sequence encoders over each item's event history: a diagonal state-space stack and a GRU.

Both read the same input: for every item of an event, the outcomes of the
last L events of the table (the `in_last_l` and `rank_last_l` features,
`history_columns`), as a sequence of L steps from the oldest (lag L) to the
newest (lag 1), c = 1 or 2 channels a step. Each returns one vector per item,
its state after the newest step, which the scorer joins with the item's other
features.

`S5Stack` ("s5"): `depth` pre-norm residual blocks around `DiagonalSSM`, a
diagonal linear state-space layer in the manner of S4D / S5 (Gu et al. 2022;
Smith et al. 2023):

    x_t = A x_{t-1} + B u_t,   y_t = Re(C x_t) + D u_t,

with a complex diagonal A = exp(Lambda * Delta) from the continuous-time
eigenvalues Lambda (real part -exp(.) < 0, so it is stable) and per-state
steps Delta, discretised by zero-order hold: B = ((A - 1) / Lambda) B_c. In
training the recurrence runs as one `jax.lax.associative_scan` over the
pairs (A, B u_t) with (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), O(log L)
deep; `step` advances it by one new event, for forecasting an event at a time.

`GRUStack` ("deepar"): DeepAR's encoder (Salinas et al. 2020): `depth`
stacked GRU layers (`flax.linen.GRUCell`) that read the previous events'
outcomes step by step; the PL head on its state makes the forecast a
distribution over the next event, sampled by Gumbel-top-k.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ConfigError


def ssm_discretise(log_neg_real, imag, log_step, b_real, b_imag):
  """(A bar complex[P], B bar complex[P, H]): zero-order hold of the continuous system.

  Lambda = -exp(log_neg_real) + i imag; Delta = exp(log_step);
  A bar = exp(Lambda Delta); B bar = (A bar - 1) / Lambda * (b_real + i b_imag).
  """
  lam = -jnp.exp(log_neg_real) + 1j * imag
  a = jnp.exp(lam * jnp.exp(log_step))
  return a, ((a - 1.0) / lam)[:, None] * (b_real + 1j * b_imag)


def _combine(left, right):
  """The associative operator of the linear recurrence x_t = a_t x_{t-1} + b_t."""
  a1, b1 = left
  a2, b2 = right
  return a1 * a2, a2 * b1 + b2


def s4d_lin_init(p: int) -> tuple[np.ndarray, np.ndarray]:
  """S4D-Lin eigenvalues (log(-Re), Im) for P states: Lambda_p = -1/2 + i pi p."""
  return np.full(p, np.log(0.5), np.float32), (np.pi * np.arange(p)).astype(np.float32)


class DiagonalSSM(nn.Module):
  """A diagonal state-space layer: float[..., L, H] -> float32[..., L, H] (causal).

  Attributes:
    features: H, the width of the input and the output.
    state_size: P, complex states.
    step_range: (min, max) of the initial Delta, log-uniform per state.
  """
  features: int
  state_size: int = 16
  step_range: tuple[float, float] = (0.05, 1.0)

  def setup(self):
    p = self.state_size
    neg_real, imag = s4d_lin_init(p)
    self.log_neg_real = self.param("log_neg_real", lambda key: jnp.asarray(neg_real))
    self.imag = self.param("imag", lambda key: jnp.asarray(imag))
    lo, hi = np.log(self.step_range[0]), np.log(self.step_range[1])
    self.log_step = self.param("log_step", lambda key: jax.random.uniform(key, (p,), minval=lo, maxval=hi))
    h = self.features
    self.b_real = self.param("b_real", nn.initializers.normal(1.0 / np.sqrt(2 * h)), (p, h))
    self.b_imag = self.param("b_imag", nn.initializers.normal(1.0 / np.sqrt(2 * h)), (p, h))
    self.c_real = self.param("c_real", nn.initializers.normal(1.0 / np.sqrt(p)), (h, p))
    self.c_imag = self.param("c_imag", nn.initializers.normal(1.0 / np.sqrt(p)), (h, p))
    self.d = self.param("d", nn.initializers.normal(1.0), (h,))

  def _matrices(self):
    a, b = ssm_discretise(self.log_neg_real, self.imag, self.log_step, self.b_real, self.b_imag)
    return a, b, self.c_real + 1j * self.c_imag, self.d

  def __call__(self, u):
    """Run the recurrence from x_0 = 0 over axis -2 of u (one associative scan)."""
    u = jnp.asarray(u, jnp.float32)
    a, b, c, d = self._matrices()
    bu = u.astype(jnp.complex64) @ b.T                                # [..., L, P]
    _, x = jax.lax.associative_scan(_combine, (jnp.broadcast_to(a, bu.shape), bu), axis=-2)
    return (x @ c.T).real + d * u

  def step(self, state, u_t):
    """(state complex64[..., P], y float32[..., H]) after one input u_t float[..., H]."""
    u_t = jnp.asarray(u_t, jnp.float32)
    a, b, c, d = self._matrices()
    state = a * state + u_t.astype(jnp.complex64) @ b.T
    return state, (state @ c.T).real + d * u_t


class _S5Block(nn.Module):
  """x + Dense(gelu(SSM(LayerNorm(x)))), position-wise apart from the SSM."""
  hidden: int
  state_size: int
  dropout: float = 0.0

  def setup(self):
    from luce.models._scorer import Dropout  # the scorer module imports this one
    self.norm = nn.LayerNorm()
    self.ssm = DiagonalSSM(self.hidden, self.state_size)
    self.mix = nn.Dense(self.hidden)
    self.drop = Dropout(self.dropout)

  def __call__(self, x, deterministic: bool = True):
    y = self.ssm(self.norm(x))
    return x + self.drop(self.mix(nn.gelu(y)), deterministic=deterministic)

  def step(self, state, x_t):
    state, y = self.ssm.step(state, self.norm(x_t))
    return state, x_t + self.mix(nn.gelu(y))


class S5Stack(nn.Module):
  """Dense lift to `hidden`, `depth` SSM blocks, LayerNorm: float[..., L, c] -> [..., L, hidden]."""
  hidden: int = 64
  depth: int = 2
  state_size: int = 16
  dropout: float = 0.0

  def setup(self):
    self.lift = nn.Dense(self.hidden)
    self.blocks = [_S5Block(self.hidden, self.state_size, self.dropout) for _ in range(self.depth)]
    self.norm = nn.LayerNorm()

  def __call__(self, u, deterministic: bool = True):
    x = self.lift(jnp.asarray(u, jnp.float32))
    for block in self.blocks:
      x = block(x, deterministic)
    return self.norm(x)

  def initial_state(self, lead: tuple[int, ...]):
    """One complex64[..., P] state per block, all zero (no event seen)."""
    return tuple(jnp.zeros(lead + (self.state_size,), jnp.complex64) for _ in range(self.depth))

  def step(self, states, u_t):
    """(states, y float32[..., hidden]): the stack advanced by one event's input u_t[..., c]."""
    x = self.lift(jnp.asarray(u_t, jnp.float32))
    out = []
    for block, state in zip(self.blocks, states):
      state, x = block.step(state, x)
      out.append(state)
    return tuple(out), self.norm(x)


class GRUStack(nn.Module):
  """`depth` stacked GRU layers of width `hidden`: float[..., L, c] -> float32[..., L, hidden]."""
  hidden: int = 64
  depth: int = 2
  dropout: float = 0.0

  def setup(self):
    from luce.models._scorer import Dropout
    self.cells = [nn.GRUCell(self.hidden) for _ in range(self.depth)]
    self.drop = Dropout(self.dropout)

  def __call__(self, u, deterministic: bool = True):
    x = jnp.asarray(u, jnp.float32)
    lead = x.shape[:-2]
    for i, cell in enumerate(self.cells):
      carry = jnp.zeros(lead + (self.hidden,), jnp.float32)
      steps = jnp.moveaxis(x, -2, 0)                                  # [L, ..., c]
      outs = []
      for t in range(steps.shape[0]):  # L is small (the history window): unrolled
        carry, y = cell(carry, steps[t])
        outs.append(y)
      x = jnp.stack(outs, axis=-2)
      if i + 1 < len(self.cells):
        x = self.drop(x, deterministic=deterministic)
    return x

  def initial_state(self, lead: tuple[int, ...]):
    return tuple(jnp.zeros(lead + (self.hidden,), jnp.float32) for _ in range(self.depth))

  def step(self, states, u_t):
    x = jnp.asarray(u_t, jnp.float32)
    out = []
    for cell, state in zip(self.cells, states):
      state, x = cell(state, x)
      out.append(state)
    return tuple(out), x


def history_sequence(item, columns: tuple[tuple[int, ...], tuple[int, ...]]):
  """float32[B, n, L, c]: each item's last L outcomes, oldest first, from the feature columns.

  `columns` = `history_columns(item_names)`: the `in_last_1..L` columns and the
  `rank_last_1..L` ones (possibly none); lag L comes first, lag 1 last.
  """
  inclusion, ranks = columns
  if not inclusion:
    raise ConfigError("a sequence encoder (s5, deepar) reads the in_last_l history features; "
                      "set data.features.last >= 1.")
  channels = [item[..., list(inclusion[::-1])]]
  if ranks:
    channels.append(item[..., list(ranks[::-1])])
  return jnp.stack(channels, axis=-1)
