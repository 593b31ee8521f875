"""The train state, the optimizer from a config and the jitted train step."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from luce.errors import ConfigError

# Codes of `TrainState.bad_metric`: which metric first went non-finite.
BAD_METRICS = {0: "none", 1: "loss", 2: "grad_norm"}


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; a pytree of arrays.

  Attributes:
    step: int32[] steps taken.
    params: the model's parameter pytree.
    opt_state: the optax state.
    bad_step: int32[] the first step whose loss or gradient was NaN/inf, -1 if
      none. Once set, later steps leave params unchanged (the last good ones).
    bad_metric: int32[] which metric it was (BAD_METRICS).
  """
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  bad_step: jax.Array
  bad_metric: jax.Array


def make_optimizer(config, *, learning_rate=None, weight_decay=None) -> optax.GradientTransformation:
  """AdamW with warmup and a cosine (or constant) schedule, after global-norm clipping.

  `config` is the `optimizer` section; `num_steps` comes from `train`.
  `learning_rate` and `weight_decay` replace the config's values with arrays
  (traced: one per member of a vmapped population); the schedule is then the
  config's schedule shape at peak 1 times `learning_rate`.
  """
  opt, num_steps = config.optimizer, config.train.num_steps
  if learning_rate is None:
    schedule = _schedule(opt, num_steps, opt.learning_rate)
  else:
    unit = _schedule(opt, num_steps, 1.0)
    schedule = lambda count: learning_rate * unit(count)
  decay = opt.weight_decay if weight_decay is None else weight_decay
  parts = [optax.clip_by_global_norm(opt.clip_norm)] if opt.clip_norm > 0 else []
  parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=decay))
  return optax.chain(*parts)


def _schedule(opt, num_steps: int, peak: float):
  warmup = min(opt.warmup_steps, max(num_steps - 1, 0))
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(num_steps, warmup + 1), peak * 0.05)
  if opt.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)),
                                 optax.constant_schedule(peak)], [max(warmup, 1)])
  raise ConfigError(f"optimizer.schedule={opt.schedule!r}; valid: cosine, constant.")


def init_state(model, optimizer, example_batch, key) -> TrainState:
  """A fresh TrainState: model.init on `example_batch` (shapes only matter)."""
  params = model.init({"params": key}, example_batch)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    bad_step=jnp.full((), -1, jnp.int32), bad_metric=jnp.zeros((), jnp.int32))


def make_mesh(data_devices: int = -1, devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis "data" over `data_devices` devices (-1: all).

  Axis type Auto: the step states its input and output shardings and XLA
  places the rest (the Flax layers need no sharding annotations).
  """
  devices = list(devices if devices is not None else jax.devices())
  count = len(devices) if data_devices == -1 else data_devices
  if not 1 <= count <= len(devices):
    raise ConfigError(f"mesh.data={data_devices}: there are {len(devices)} devices; use -1 for all "
                      f"or a number from 1 to {len(devices)}.")
  return jax.make_mesh((count,), ("data",), axis_types=(AxisType.Auto,), devices=devices[:count])


def batch_sharding(mesh) -> NamedSharding:
  """Batches are split over the data axis along their leading (event) axis."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def make_train_step(model, optimizer: optax.GradientTransformation, loss: Callable, *,
                    mesh=None, donate: bool = True):
  """The jitted pure step `(state, batch, rng) -> (state, metrics)`.

  One step: scores = model(batch), objective = weighted mean of loss(scores,
  batch) over the batch's events, one optimizer update. `rng` is the run's
  base key; the step folds in `state.step`, so dropout noise depends only on
  (seed, step) and a resumed run draws what an uninterrupted one would.

  NaN/inf guard: when the loss or the gradient norm is not finite the update
  is skipped and `state.bad_step` / `bad_metric` record it; every later step
  also leaves the parameters alone, so the state stays the last good one and
  the loop stops with a message at its next check.

  Args:
    model: a Flax module whose `apply({"params": p}, batch, deterministic=...)`
      returns float[B, n] scores.
    optimizer: an optax transformation.
    loss: `(output, batch) -> float[B]` per-event loss (a family's `loss`, e.g.
      `luce.losses.pl_loss(kind)`).
    mesh: a Mesh with a "data" axis (`make_mesh`); batches are sharded over it
      and the state replicated. None: the default device.
    donate: donate the input state's buffers to the output (saves a copy of
      params and optimizer state per step).

  Returns:
    A jitted function; metrics are float32 scalars `loss`, `grad_norm`,
    `events` (sum of the batch's event weights) and `finite` (1 or 0).
  """
  step = train_step_fn(model, optimizer, loss)
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(step, donate_argnums=donate_argnums)
  rep, data = replicated(mesh), batch_sharding(mesh)
  return jax.jit(step, donate_argnums=donate_argnums, in_shardings=(rep, data, rep),
                 out_shardings=(rep, rep))


def train_step_fn(model, optimizer: optax.GradientTransformation, loss: Callable):
  """The un-jitted step of `make_train_step` (what a vmapped population maps)."""
  def step(state: TrainState, batch: dict, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    weights = batch["weights"].astype(jnp.float32)
    total = jnp.maximum(jnp.sum(weights), 1e-12)

    def objective(params):
      scores = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
      return jnp.sum(loss(scores, batch) * weights) / total

    value, grads = jax.value_and_grad(objective)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    good = finite & (state.bad_step < 0)
    keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(good, new, old))
    first_bad = ~finite & (state.bad_step < 0)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        bad_step=jnp.where(first_bad, state.step, state.bad_step),
        bad_metric=jnp.where(first_bad, jnp.where(jnp.isfinite(value), 2, 1), state.bad_metric))
    metrics = {"loss": value, "grad_norm": grad_norm, "events": total,
               "finite": finite.astype(jnp.float32)}
    return new_state, metrics

  return step


def host_copy(tree):
  """A numpy copy of a replicated pytree (works when other processes hold
  shards too: every process has a full replica)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(one, tree)
