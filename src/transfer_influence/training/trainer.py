"""The ensemble trainer: train a group of models, each on its own masked subset, in one call.

Every model's training is a pure function of ``(seed, subset, recipe, objective)``:

- its initialisation, shuffling and augmentation come from one ``torch.Generator`` seeded with
  the model's seed (no global seeding);
- its data is an endless stream of fresh permutations of its own subset, cut into full-size
  batches (a batch may straddle two epochs), so models with different subset sizes can still be
  stacked under ``vmap``;
- it takes ``recipe.total_steps(n)`` = ``ceil(epochs * n / batch_size)`` steps, with the learning
  rate schedule computed from its own ``n`` (or from a given ``schedule_examples``, the same for
  every model: equal-steps retraining gives a model without some source classes as many steps
  as one trained on the whole source). Models of a group step together; a model whose steps
  are done gets learning rate 0 (its parameters stop changing) while the rest finish. Under
  ``vmap`` this wastes ``max_g steps_g - steps_g`` model-steps, which is small when subsets have
  similar sizes (class masks keeping the same number of equally sized classes); ``loop`` wastes
  nothing.

Hence a model trained inside a group equals the same model trained alone, whichever other models
share its group (results never depend on scheduling: docs/architecture.md, "Conventions"). Steps
per epoch taken from the group's largest subset were rejected because they would make a model
depend on its group.

Four strategies compute the same thing:

- ``loop``: one model after another with ``torch.optim.SGD`` (the plain PyTorch way);
- ``threads`` (CPU): the loop's per-model training, run for several models at once in a pool of
  Python threads (PyTorch releases the GIL inside its ops), as many as the caller's intra-op
  threads (``torch.get_num_threads()``), each model on one intra-op thread;
- ``vmap``: parameters stacked with ``torch.func.stack_module_state``, per-model gradients from
  ``vmap(grad_and_value(functional_call ...))``, and PyTorch's own (fused) SGD kernel applied to
  the stacked tensors, one learning rate per model;
- ``bmm``: for plain MLPs under the default cross-entropy, the forward and backward passes
  written out as batched matrix products over the stacked weights (no autograd), with the same
  SGD update as ``vmap``.

The objective (``recipe.objective``, or one passed in) may be self-supervised: for a two-view
objective such as SimCLR the batcher draws two augmented views of every example from the model's
generator before the (pure) objective sees them, so views, like batches, follow the model's seed
under every strategy; ``bmm`` handles cross-entropy only. An optional observer sees every step's
batch and logits under ``loop`` (per-presentation statistics such as forgetting events).

``auto`` picks ``loop`` for a model with random layers (dropout: under ``vmap`` a model's
draws would depend on which models share its group, see :func:`random_layers`; under
``threads`` they would come from one process-wide generator) or with layers defined outside
``torch.nn`` and this package (a user's model, which may not run under ``vmap`` or be
thread-safe); otherwise ``vmap`` on CUDA. On CPU it picks ``bmm`` for plain MLPs with the default
objective, ``threads`` for models with convolutions, ``vmap`` for other small models (at most
``SMALL_MODEL_PARAMETERS`` parameters, where per-step overhead, not arithmetic, bounds the loop),
``loop`` otherwise. In the
loop, a model's global-RNG draws (dropout) come from a seed derived from its own seed, inside
:func:`~transfer_influence.models.base.forked_rng`, so they too are reproducible and do not
depend on the other models of the group.

Models of library layers with 2-D convolutions run them channels-last (:func:`conv_layout`)
wherever they train in the loop or extract features, and train (``loop`` and ``threads``, CPU)
on one intra-op thread per model (:func:`one_intra_op_thread`: oneDNN's convolution gradients
are summed in another order on two threads, 1e-8 apart after one epoch), so a model's numbers
never depend on which group, path, worker count or machine computed them; both are deliberate
changes at float rounding, recorded in sweep stores (:func:`conv_numerics`). Under ``vmap``
(CUDA) they stay NCHW.

Measured on a 2-core CPU (torch 2.13, ``benchmarks/ensemble_throughput.py``, idle machine),
speed against the plain one-model loop and share of the float32 matmul peak:

- the quickstart's pretraining (``--quickstart``: MLP 784-32-20, batch 64, 16 models):
  bmm 3.5-3.8x, 44-46% of peak; vmap 1.9x. The batched matmuls themselves run at 75-85% of
  peak; gathering each model's batch (about 150 us of a 1.1 ms step, memory-bound) and the
  optimizer's pass over parameters, gradients and momentum take most of the rest;
- MLP 784-512-512-20, batch 256, 8 models (``--quick``): bmm 1.2-1.3x, 79-83% of peak (loop
  60-70%);
- MLP 784-128-20 / 784-256-20 / 784-1024-20, batch 64: bmm 2.0x / 1.3x / 1.2x;
- small CNN (width 16, batch 64, 8 models): the loop in channels-last 1.1-3.0x the NCHW loop
  (NCHW max-pooling alone took 30% of a step); vmapped or grouped convolutions and
  ``torch.compile`` were no faster than the loop; one model per core (``threads``) beats two
  intra-op threads per model, whose small parallel regions (oneDNN, OpenMP) scale poorly and
  collapse when another job holds a core. ResNet-18 (batch 16, 32x32): channels-last and NCHW
  indistinguishable (medians 2.80 s and 2.86 s a step).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.optim.sgd import sgd
from tqdm.auto import tqdm

from ..data.images import LabeledImages
from ..data.transforms import Augment, ContrastiveViews
from ..errors import TrainingError
from ..models.base import TransferModel, forked_rng, reset_parameters
from ..models.registry import build_model
from ..recipe import TrainRecipe
from .objectives import Objective, objective_views, recipe_objective
from .preprocess import to_inputs

Strategy = Literal["auto", "vmap", "loop", "bmm", "threads"]
Unit = Literal["class", "example"]
Observer = Callable[[int, int, np.ndarray, torch.Tensor], None]
"""``observe(model, step, index, logits)``: model ``model`` of the group is about to take
optimizer step ``step`` on examples ``index`` (``int64 [B]``, indices into the training data);
``logits [B, classes]`` are its outputs on that batch's inputs (augmented as in training), before
the step. Training statistics that need every presentation of every example (forgetting events)
are built from these calls."""

_CHECK_EVERY = 50  # steps between divergence checks (each check synchronises a GPU)
_CONVERT_ROWS = 1024  # images converted per chunk when caching a float copy


@dataclass
class DivergenceLog:
    """Which models of a group diverged, filled in by the trainer instead of raising.

    ``step[g]`` is the first step at which model ``g``'s loss was seen NaN or infinite (-1 while
    it never was) and ``last_loss[g]`` its loss at the last check before that (NaN if the very
    first check failed). Losses are checked every ``_CHECK_EVERY`` steps and at a model's last
    step. A diverged model keeps drawing its batches (so nothing else changes) but its numbers
    are garbage: callers keep no outputs for it.
    """

    step: np.ndarray  # int64 [models]
    last_loss: np.ndarray  # float64 [models]

    @classmethod
    def empty(cls, num_models: int) -> DivergenceLog:
        """A log of ``num_models`` models none of which has diverged yet."""
        return cls(np.full(num_models, -1, dtype=np.int64), np.full(num_models, np.nan))

    @property
    def diverged(self) -> np.ndarray:
        """bool ``[models]``: which models diverged."""
        return self.step >= 0

    def take(self, models: np.ndarray) -> DivergenceLog:
        """The log of group positions ``models`` (indices or bool mask)."""
        return DivergenceLog(self.step[models], self.last_loss[models])

    def record(self, loss: np.ndarray, steps: np.ndarray, models: np.ndarray) -> None:
        """Note the losses ``[len(models)]`` of group positions ``models`` at their ``steps``."""
        for g, value, step in zip(models.tolist(), loss.tolist(), steps.tolist()):
            if self.step[g] >= 0:
                continue
            if np.isfinite(value):
                self.last_loss[g] = value
            else:
                self.step[g] = step

    def merge(self, other: DivergenceLog, models: np.ndarray, offset: np.ndarray) -> None:
        """Take in ``other``, the log of a later stage run on group positions ``models``, whose
        steps count from ``offset[i]`` (the steps model ``models[i]`` took before it)."""
        later = other.diverged
        self.step[models[later]] = offset[later] + other.step[later]
        self.last_loss[models] = np.where(np.isnan(other.last_loss), self.last_loss[models],
                                          other.last_loss)


def subset_indices(data: LabeledImages, masks: np.ndarray, unit: Unit) -> list[np.ndarray]:
    """Example indices kept by each row of ``masks`` (``bool [models, units]``).

    ``unit="class"``: mask columns are source classes; ``unit="example"``: source examples.
    Raises TrainingError for a malformed mask or a model that would see no data.
    """
    masks = np.asarray(masks)
    if unit not in ("class", "example"):
        raise TrainingError(f"unit must be 'class' or 'example', got {unit!r}.")
    units = data.num_classes if unit == "class" else len(data)
    if masks.dtype != np.bool_ or masks.ndim != 2 or masks.shape[1] != units:
        raise TrainingError(
            f"masks must be a bool array [models, {units}] over the source {unit}s of "
            f"{data.name!r}, got dtype {masks.dtype} and shape {masks.shape}."
        )
    subsets = []
    for g, row in enumerate(masks):
        kept = np.flatnonzero(row)
        index = data.examples_of(kept) if unit == "class" else kept
        if index.size == 0:
            raise TrainingError(
                f"model {g} of the group keeps no source {unit}s, so it has no data to train on;"
                " keep at least one unit in every mask (e.g. a larger alpha)."
            )
        subsets.append(index.astype(np.int64))
    return subsets


def model_generator(seed: int) -> torch.Generator:
    """The CPU generator from which one model draws its init, shuffling and augmentation."""
    return torch.Generator().manual_seed(int(seed))


def train_group(
    build: Callable[[], TransferModel],
    data: LabeledImages,
    masks: np.ndarray,
    *,
    unit: Unit,
    seeds: Sequence[int],
    recipe: TrainRecipe,
    objective: Objective | None = None,
    strategy: Strategy = "auto",
    device: str | torch.device = "cpu",
    progress: bool = False,
    schedule_examples: int | None = None,
    observe: Observer | None = None,
    divergence: DivergenceLog | None = None,
) -> list[TransferModel]:
    """Train ``len(seeds)`` models from scratch, model ``g`` on the units kept by ``masks[g]``.

    Args:
        build: returns a fresh model (its parameters are re-initialised from the model's seed).
        data: the training set; labels index the head's outputs.
        masks: ``bool [models, units]`` (units = classes or examples of ``data``, see ``unit``).
        seeds: one seed per model; determines init, shuffling and augmentation.
        recipe: optimiser, schedule and augmentation.
        objective: loss function (default: the one ``recipe.objective`` names).
        strategy: ``loop``, ``vmap``, ``bmm`` or ``auto`` (see module docstring).
        observe: called before every step with the batch and its logits (see
            :data:`Observer`); needs ``strategy="loop"``.
        schedule_examples: see :func:`fit_models`.
        divergence: see :func:`fit_models`.

    Returns:
        The trained models, in the order of ``seeds``, on ``device``.
    """
    subsets = subset_indices(data, masks, unit)
    if len(seeds) != len(subsets):
        raise TrainingError(f"got {len(seeds)} seeds for {len(subsets)} masks; give one per model.")
    generators = [model_generator(s) for s in seeds]
    models = []
    for generator in generators:
        model = build()
        reset_parameters(model, generator)
        models.append(model)
    return fit_models(models, data, subsets, generators, recipe, objective=objective,
                      strategy=strategy, device=device, progress=progress,
                      schedule_examples=schedule_examples, observe=observe,
                      divergence=divergence)


def pretrain_group(
    model_name: str,
    source: LabeledImages,
    masks: np.ndarray,
    *,
    unit: Unit,
    seeds: Sequence[int],
    recipe: TrainRecipe,
    model_options: dict | None = None,
    objective: Objective | None = None,
    strategy: Strategy = "auto",
    device: str | torch.device = "cpu",
    progress: bool = False,
    schedule_examples: int | None = None,
    observe: Observer | None = None,
    divergence: DivergenceLog | None = None,
) -> list[TransferModel]:
    """:func:`train_group` on the masked source with its labels; the head has one output per
    source class (removed classes included, so every model shares one label space)."""
    return train_group(source_builder(model_name, source, model_options), source, masks,
                       unit=unit, seeds=seeds, recipe=recipe, objective=objective,
                       strategy=strategy, device=device, progress=progress,
                       schedule_examples=schedule_examples, observe=observe,
                       divergence=divergence)


def source_builder(model_name: str, source: LabeledImages, model_options: dict | None = None
                   ) -> Callable[[], TransferModel]:
    """A function returning fresh ``model_name`` models for ``source``'s images, with one output
    per source class (what :func:`pretrain_group` trains)."""
    channels, height, _ = source.image_shape

    def build() -> TransferModel:
        return build_model(model_name, in_channels=channels, image_size=height,
                           num_classes=source.num_classes, **(model_options or {}))

    return build


SMALL_MODEL_PARAMETERS = 150_000


def mlp_layers(model: TransferModel) -> list[torch.nn.Linear] | None:
    """The linear layers of a plain MLP (``Flatten``, then ``Linear`` + ``ReLU`` blocks, then a
    linear head), in order, or None for any other architecture."""
    backbone = list(model.backbone.children())
    if not backbone or not isinstance(backbone[0], torch.nn.Flatten):
        return None
    blocks = backbone[1:]
    pairs = list(zip(blocks[::2], blocks[1::2]))
    if len(blocks) % 2 or not all(isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.ReLU)
                                  for a, b in pairs):
        return None
    return [a for a, _ in pairs if isinstance(a, torch.nn.Linear)] + [model.head]


def random_layers(model: torch.nn.Module) -> list[str]:
    """Names of the layers that draw random numbers in training mode: dropout layers with a
    positive rate, and layers with a positive ``dropout`` rate of their own
    (``nn.MultiheadAttention``, recurrent layers)."""
    names = []
    for name, layer in model.named_modules():
        is_dropout = isinstance(layer, torch.nn.modules.dropout._DropoutNd)
        rate = layer.p if is_dropout else getattr(layer, "dropout", 0)
        if isinstance(rate, (int, float)) and rate > 0:
            names.append(name)
    return names


def _library_layers_only(model: torch.nn.Module) -> bool:
    """Whether every layer's class comes from ``torch.nn`` or this package."""
    return all(type(layer).__module__.startswith(("torch.nn.", "transfer_influence."))
               for layer in model.modules())


def choose_strategy(strategy: Strategy, device: torch.device, model: TransferModel,
                    objective: Objective | None = None
                    ) -> Literal["vmap", "loop", "bmm", "threads"]:
    """Resolve ``auto`` (see module docstring): ``loop`` for a model with random layers or
    layers from outside ``torch.nn`` and this package; else ``vmap`` on CUDA; on CPU, ``bmm``
    for a plain MLP trained with the default cross-entropy objective (whatever its size),
    ``threads`` for a model with convolutions, ``vmap`` for other small models, ``loop`` for the
    rest. The choice depends only on the model, objective and device (not on the number of
    cores: ``threads`` gives the same numbers on any), so results stay a pure function of the
    configuration. ``vmap`` and ``threads`` are refused for a model with random layers,
    ``threads`` off the CPU."""
    if strategy not in ("auto", "vmap", "loop", "bmm", "threads"):
        raise TrainingError("strategy must be 'auto', 'vmap', 'loop', 'bmm' or 'threads', got"
                            f" {strategy!r}.")
    hand_batchable = objective is None and mlp_layers(model) is not None
    if strategy == "bmm" and not hand_batchable:
        raise TrainingError("strategy 'bmm' needs a plain MLP (model name 'mlp') and the default"
                            " cross-entropy objective; use 'vmap' or 'loop' for this model.")
    random = random_layers(model)
    if strategy in ("vmap", "threads") and random:
        raise TrainingError(
            f"strategy {strategy!r} cannot train a model with random layers"
            f" ({', '.join(random)}): each model's draws would depend on the other models of"
            " its group; use 'loop' (what 'auto' picks)."
        )
    if strategy == "threads" and device.type != "cpu":
        raise TrainingError(f"strategy 'threads' trains on the CPU, got device {str(device)!r};"
                            " use 'auto' (or 'vmap' or 'loop') on other devices.")
    if strategy != "auto":
        return strategy
    if random or not _library_layers_only(model):
        return "loop"
    if device.type == "cuda":
        return "vmap"
    if hand_batchable:
        return "bmm"
    if any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules()):
        return "threads"
    small = sum(p.numel() for p in model.parameters()) <= SMALL_MODEL_PARAMETERS
    return "vmap" if small else "loop"


class _IndexStream:
    """One model's example indices as endless full-size batches of successive permutations."""

    def __init__(self, indices: np.ndarray, generator: torch.Generator, batch_size: int) -> None:
        self.indices = indices
        self.generator = generator
        self.batch_size = batch_size
        self._perm = indices[:0]
        self._pos = 0

    def next(self) -> np.ndarray:
        """The next ``batch_size`` example indices (a batch may straddle two permutations)."""
        parts, need = [], self.batch_size
        while need:
            if self._pos == len(self._perm):
                order = torch.randperm(len(self.indices), generator=self.generator).numpy()
                self._perm, self._pos = self.indices[order], 0
            take = min(need, len(self._perm) - self._pos)
            parts.append(self._perm[self._pos:self._pos + take])
            self._pos += take
            need -= take
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


FLOAT_CACHE_BYTES = 1 << 30


class _Batcher:
    """The training images on the device, turning index batches into model inputs.

    On CPU, a training set whose float32 copy fits in ``FLOAT_CACHE_BYTES`` is converted and
    normalised once, so a batch is a single row gather: for the small models batched training
    is for, converting and normalising every batch cost as much as the model's own matmuls.
    Otherwise (and on GPUs, where memory is scarcer and element-wise work cheap) images stay
    uint8 and each batch is converted after gathering; both give bit-identical inputs.

    With ``views`` (a two-view objective), every augmented batch becomes two views per example,
    ``[B, 2, C, H, W]``, drawn from the model's generator after the recipe's augmentation.
    """

    def __init__(self, data: LabeledImages, recipe: TrainRecipe, device: torch.device,
                 views: ContrastiveViews | None = None) -> None:
        self.device = device
        self.image_shape = data.image_shape
        self.normalization = recipe.normalization
        if device.type == "cpu" and data.images.size * 4 <= FLOAT_CACHE_BYTES:
            self.rows = torch.empty((len(data), int(np.prod(self.image_shape))))
            for start in range(0, len(data), _CONVERT_ROWS):
                chunk = torch.from_numpy(np.array(data.images[start:start + _CONVERT_ROWS]))
                self.rows[start:start + _CONVERT_ROWS] = self._inputs(chunk.flatten(1))
        else:
            self.rows = torch.as_tensor(np.array(data.images), device=device).flatten(1)
        self.labels = torch.as_tensor(np.array(data.labels), device=device)
        self.augment = Augment(crop_padding=recipe.crop_padding, hflip=recipe.hflip)
        self.views = views

    def _inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 rows ``[n, C*H*W]`` -> normalised float32 rows of the same shape."""
        return to_inputs(rows.unflatten(1, self.image_shape), self.normalization).flatten(1)

    def __call__(self, streams: Sequence[_IndexStream]
                 ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Next batch of every stream: inputs ``[G, B, C, H, W]`` float32 (``[G, B, 2, C, H, W]``
        with ``views``), labels ``[G, B]`` and the example indices ``int64 [G, B]``, gathered in
        one go; each stream's augmentation uses its own generator."""
        index = np.stack([stream.next() for stream in streams])
        flat = torch.from_numpy(index).flatten().to(self.device)
        rows = torch.index_select(self.rows, 0, flat)
        if not rows.is_floating_point():
            rows = self._inputs(rows)
        x = rows.view(*index.shape, *self.image_shape)
        if self.augment != Augment():
            x = torch.stack([self.augment(x_g, s.generator) for x_g, s in zip(x, streams)])
        if self.views is not None:
            x = torch.stack([self.views.pair(x_g, s.generator) for x_g, s in zip(x, streams)])
        return x, self.labels[flat].view(index.shape), index


def fit_models(
    models: list[TransferModel],
    data: LabeledImages,
    subsets: Sequence[np.ndarray],
    generators: Sequence[torch.Generator],
    recipe: TrainRecipe,
    *,
    objective: Objective | None = None,
    strategy: Strategy = "auto",
    device: str | torch.device = "cpu",
    progress: bool = False,
    schedule_examples: int | None = None,
    observe: Observer | None = None,
    divergence: DivergenceLog | None = None,
) -> list[TransferModel]:
    """Train already-initialised ``models`` in place (model ``g`` on example indices
    ``subsets[g]``, drawing shuffles and augmentations from ``generators[g]``); the shared engine
    of pretraining and fine-tuning. Returns the models.

    Each model takes ``recipe.total_steps(n)`` steps on the learning-rate schedule of ``n``
    examples, ``n`` being its own subset's size, or ``schedule_examples`` for every model when
    given (batches still come from its own subset only).

    ``objective`` defaults to the one ``recipe.objective`` names. ``observe`` (see
    :data:`Observer`) needs the ``loop`` strategy, the only one that holds each model's logits as
    it steps; choose it explicitly.

    A model whose loss becomes NaN or infinite raises :class:`TrainingError` without
    ``divergence``; with a :class:`DivergenceLog` of ``len(models)`` models it is recorded there
    instead and the other models train on unchanged (sweeps with ``on_divergence = "record"``).
    """
    if not (len(models) == len(subsets) == len(generators)) or not models:
        raise TrainingError(
            f"got {len(models)} models, {len(subsets)} subsets and {len(generators)} generators;"
            " give one of each per model (and at least one model)."
        )
    device = torch.device(device)
    builtin = objective is None and recipe.objective == "cross_entropy"  # ``bmm`` batches it
    objective = objective or recipe_objective(recipe)
    chosen = choose_strategy(strategy, device, models[0], None if builtin else objective)
    if observe is not None and chosen != "loop":
        raise TrainingError(f"observing training steps needs strategy='loop', got {chosen!r}"
                            f" (from {strategy!r}); pass strategy='loop'.")
    batcher = _Batcher(data, recipe, device, objective_views(objective))
    streams = [_IndexStream(s, g, recipe.batch_size) for s, g in zip(subsets, generators)]
    sizes = [len(s) if schedule_examples is None else int(schedule_examples) for s in subsets]
    if divergence is not None and divergence.step.shape != (len(models),):
        raise TrainingError(f"the divergence log has {divergence.step.size} models for"
                            f" {len(models)} models; give DivergenceLog.empty({len(models)}).")
    models = [m.to(device).train() for m in models]
    if chosen == "bmm":
        _fit_bmm(models, streams, batcher, sizes, recipe, progress, divergence)
    elif chosen == "vmap":
        _fit_vmap(models, streams, batcher, sizes, recipe, objective, progress, divergence)
    elif chosen == "threads":
        _fit_threads(models, streams, batcher, sizes, recipe, objective, progress, divergence)
    else:
        for g, (model, stream, n) in enumerate(zip(models, streams, sizes)):
            # dropout draws seeded; convolutions in the layout and threading every CNN path uses
            with (forked_rng(_global_draws_seed(stream.generator), device), conv_layout(model),
                  one_intra_op_thread(model, device)):
                _fit_loop(model, stream, batcher, n, recipe, objective, progress, g, observe,
                          divergence)
    return models


CONV_THREADS = "1"
"""Intra-op threads a model with 2-D convolutions trains on (CPU, ``loop`` and ``threads``):
recorded beside :data:`CONV_LAYOUT`, because the number of threads changes the order in which
oneDNN sums a convolution's gradients, hence the results at float rounding."""

CONV_LAYOUT = "channels_last"
"""The memory layout in which models with 2-D convolutions train (``loop``) and extract
features: recorded in every sweep store of such a model (see :func:`conv_numerics`), because it
changes their results at float rounding (oneDNN sums a convolution in another order)."""


def runs_channels_last(model: torch.nn.Module) -> bool:
    """Whether :data:`CONV_LAYOUT` applies to ``model``: it has a 2-D convolution and only layers
    from ``torch.nn`` and this package (a user's own layer may ``view`` its input as NCHW, which
    fails on channels-last memory, so such models keep PyTorch's default)."""
    return (any(isinstance(layer, torch.nn.Conv2d) for layer in model.modules())
            and _library_layers_only(model))


def conv_numerics(model: torch.nn.Module) -> dict[str, str] | None:
    """``{"conv_layout": CONV_LAYOUT, "conv_threads": CONV_THREADS}`` for a model they apply to
    (:func:`runs_channels_last`), None for any other: what a sweep store records and checks so
    that models computed otherwise (earlier versions trained CNNs in NCHW, then channels-last on
    all intra-op threads) are never mixed into one store."""
    if not runs_channels_last(model):
        return None
    return {"conv_layout": CONV_LAYOUT, "conv_threads": CONV_THREADS}


@contextmanager
def one_intra_op_thread(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Run the block (one model's training) on :data:`CONV_THREADS` intra-op thread when the
    model is one :func:`conv_numerics` applies to and trains on the CPU, then give the calling
    thread back its thread count.

    ``torch.set_num_threads`` sets the calling thread's OpenMP thread count (each Python thread
    has its own) and the default of threads PyTorch starts later (one for the whole process), so
    the count is restored afterwards in every thread that set it.
    """
    if device.type != "cpu" or not runs_channels_last(model):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(int(CONV_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def conv_layout(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with the 4-D weights of a model with 2-D convolutions (and library layers
    only, :func:`runs_channels_last`) in channels-last memory, then give them back their
    contiguous layout (values unchanged either way).

    PyTorch runs a convolution channels-last when its weight is, whatever its input's layout, so
    the model alone decides. On a CPU this is what makes small CNNs fast: NCHW max-pooling and
    ReLU backward took half of a step (``benchmarks/ensemble_throughput.py``). Every path that
    trains one model or extracts its features goes through here, so a model's results do not
    depend on which group or path computed them.
    """
    if not runs_channels_last(model):
        yield
        return
    # torch's stubs omit Module.to's documented memory_format keyword
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def _check_finite(loss: torch.Tensor, steps: np.ndarray, models: np.ndarray,
                  divergence: DivergenceLog | None) -> None:
    """Record the losses ``[len(models)]`` of group positions ``models`` at their ``steps`` in
    ``divergence``, or without a log raise TrainingError when any is NaN or infinite."""
    values = loss.detach().reshape(-1).cpu().double().numpy()  # mps has no float64
    if divergence is not None:
        divergence.record(values, steps, models)
        return
    bad = ~np.isfinite(values)
    if bad.any():
        raise TrainingError(
            f"training diverged at step {steps[bad].max()}: loss is not finite for model(s)"
            f" {models[bad].tolist()} of the group; lower the learning rate, lengthen the"
            " warm-up or check the inputs for NaNs (or set sweep.on_divergence = \"record\" to"
            " record diverged models and train on)."
        )


def _fit_loop(model: TransferModel, stream: _IndexStream, batcher: _Batcher, n: int,
              recipe: TrainRecipe, objective: Objective, progress: bool, index: int,
              observe: Observer | None = None,
              divergence: DivergenceLog | None = None) -> None:
    """Train one model with ``torch.optim.SGD``.

    Gradients start as zeros rather than ``None`` so that parameters the objective does not use
    (e.g. the head under a self-supervised objective) still get weight decay and momentum, exactly
    as in the vmap path, where every parameter has a gradient.
    """
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    for p in parameters:
        p.grad = torch.zeros_like(p)
    total = recipe.total_steps(n)
    for step in tqdm(range(total), desc=f"model {index}", disable=not progress):
        for param_group in optimizer.param_groups:
            param_group["lr"] = recipe.learning_rate(step, n)
        x, y, examples = batcher([stream])
        x, y = x[0], y[0]
        if observe is not None:
            with torch.no_grad():
                observe(index, step, examples[0], model(x))
        loss = objective(model.backbone, model.head, x, y)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        if step % _CHECK_EVERY == 0 or step == total - 1:
            _check_finite(loss, np.array([step]), np.array([index]), divergence)
            if divergence is not None and divergence.diverged[index]:
                return  # recorded; its remaining steps would only compute NaNs


def _fit_threads(models: list[TransferModel], streams: list[_IndexStream], batcher: _Batcher,
                 sizes: list[int], recipe: TrainRecipe, objective: Objective, progress: bool,
                 divergence: DivergenceLog | None) -> None:
    """Train the models as the loop does, several at once: a pool of as many Python threads as
    the caller's intra-op threads (at most one per model), each model on one intra-op thread
    (:func:`one_intra_op_thread`, whatever the pool's size, so a model's numbers do not depend
    on it). Small convolutions split over two intra-op threads keep both cores only partly busy
    (oneDNN's and OpenMP's per-op synchronisation), while one model per core keeps each busy.

    Models share only the read-only batcher; each draws from its own generator and writes its own
    entries of ``divergence``. Models without random layers only (:func:`choose_strategy`), so
    no global-RNG draws are forked. The first error raised in a worker cancels the models not yet
    started, waits for the running ones and is raised here; the pool's threads have ended when
    this returns or raises.
    """
    threads = torch.get_num_threads()
    workers = min(len(models), threads)
    device = torch.device("cpu")

    def fit(g: int) -> None:
        with conv_layout(models[g]), one_intra_op_thread(models[g], device):
            _fit_loop(models[g], streams[g], batcher, sizes[g], recipe, objective, progress, g,
                      divergence=divergence)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="transfer-influence-fit") as pool:
            futures = [pool.submit(fit, g) for g in range(len(models))]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                failed[0].result()
    finally:  # a worker may have left PyTorch's default for new threads at one
        torch.set_num_threads(threads)


def _global_draws_seed(generator: torch.Generator) -> int:
    """Seed of the global-RNG draws (dropout) a model makes while it trains in the loop: derived
    from its generator's seed without drawing from it, so its shuffles and augmentations stay
    exactly those of the batched strategies."""
    return int(np.random.default_rng([generator.initial_seed(), 2]).integers(2**62))


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _learning_rates(recipe: TrainRecipe, sizes: Sequence[int]) -> np.ndarray:
    """``[steps, models]`` learning rate of each model at each step of a group, 0 once the model
    has taken its ``recipe.total_steps`` (computed once per distinct subset size)."""
    schedules = {n: [recipe.learning_rate(step, n) for step in range(recipe.total_steps(n))]
                 for n in set(sizes)}
    table = np.zeros((max(map(len, schedules.values())), len(sizes)))
    for g, n in enumerate(sizes):
        table[:len(schedules[n]), g] = schedules[n]
    return table


def _fit_vmap(models: list[TransferModel], streams: list[_IndexStream], batcher: _Batcher,
              sizes: list[int], recipe: TrainRecipe, objective: Objective, progress: bool,
              divergence: DivergenceLog | None) -> None:
    """Train all models together on stacked parameters (see module docstring)."""
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def loss_fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        def features(inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(base.backbone, (_strip(p, "backbone."),
                                                   _strip(b, "backbone.")), (inputs,))

        def head(feats: torch.Tensor) -> torch.Tensor:
            return functional_call(base.head, (_strip(p, "head."), _strip(b, "head.")), (feats,))

        return objective(features, head, x, y)

    step_fn = vmap(grad_and_value(loss_fn))
    names = list(params)

    def gradients(xs: torch.Tensor, ys: torch.Tensor, with_loss: bool
                  ) -> tuple[list[torch.Tensor], torch.Tensor]:
        grads, loss = step_fn(params, buffers, xs, ys)
        return [grads[k] for k in names], loss

    _step_group([params[k] for k in names], gradients, streams, batcher, sizes, recipe, progress,
                divergence)
    with torch.no_grad():
        for g, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][g])


def _fit_bmm(models: list[TransferModel], streams: list[_IndexStream], batcher: _Batcher,
             sizes: list[int], recipe: TrainRecipe, progress: bool,
             divergence: DivergenceLog | None) -> None:
    """Train plain MLPs together with hand-written batched forward and backward passes
    (``torch.baddbmm`` over the stacked weights ``[G, out, in]``) under mean cross-entropy with
    ``recipe.label_smoothing``, and the same SGD update as ``vmap``. Computes the gradients
    autograd would, without its per-step overhead, which dominates small MLPs on a CPU."""
    layers = []
    for model in models:
        linear = mlp_layers(model)
        assert linear is not None  # only plain MLPs are trained here (hand_batchable)
        layers.append(linear)
    params: list[torch.Tensor] = []
    for i in range(len(layers[0])):
        params += [torch.stack([ls[i].weight.detach() for ls in layers]),
                   torch.stack([ls[i].bias.detach() for ls in layers])]
    smoothing = recipe.label_smoothing

    def gradients(xs: torch.Tensor, ys: torch.Tensor, with_loss: bool
                  ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        activations = [xs.flatten(2)]  # [G, B, features] entering each layer
        for w, b in zip(params[:-2:2], params[1:-2:2]):
            activations.append(torch.baddbmm(b.unsqueeze(1), activations[-1],
                                             w.transpose(1, 2)).relu_())
        logits = torch.baddbmm(params[-1].unsqueeze(1), activations[-1], params[-2].transpose(1, 2))
        # d mean-loss / d logits = (softmax - smoothed one-hot) / B
        classes, batch = logits.shape[2], ys.shape[1]
        delta = torch.softmax(logits, dim=2).sub_(smoothing / classes)
        delta.scatter_add_(2, ys.unsqueeze(2), delta.new_full(ys.unsqueeze(2).shape,
                                                              smoothing - 1.0)).div_(batch)
        grads: list[torch.Tensor] = []
        for layer in range(len(params) // 2 - 1, -1, -1):
            inputs = activations[layer]
            grads = [torch.bmm(delta.transpose(1, 2), inputs), delta.sum(1)] + grads
            if layer:
                delta = torch.bmm(delta, params[2 * layer]).mul_(inputs > 0)
        if not with_loss:
            return grads, None
        log_p = torch.log_softmax(logits, dim=2)
        loss = -((1.0 - smoothing) * log_p.gather(2, ys.unsqueeze(2)).squeeze(2)
                 + smoothing / classes * log_p.sum(2)).mean(1)
        return grads, loss

    _step_group(params, gradients, streams, batcher, sizes, recipe, progress, divergence)
    with torch.no_grad():
        for g, ls in enumerate(layers):
            for i, layer in enumerate(ls):
                layer.weight.copy_(params[2 * i][g])
                layer.bias.copy_(params[2 * i + 1][g])


Gradients = Callable[[torch.Tensor, torch.Tensor, bool],
                     tuple[list[torch.Tensor], "torch.Tensor | None"]]


def _step_group(params: list[torch.Tensor], gradients: Gradients, streams: list[_IndexStream],
                batcher: _Batcher, sizes: list[int], recipe: TrainRecipe, progress: bool,
                divergence: DivergenceLog | None) -> None:
    """Drive stacked parameters ``[G, ...]`` through the group's steps: draw every model's
    batch, get per-model gradients (and, every ``_CHECK_EVERY`` steps, the per-model loss ``[G]``
    to check for divergence) from ``gradients(xs, ys, with_loss)``, then take one SGD step.

    Finished models still draw batches (from their own generators, so nothing else changes) but
    take learning rate 0; their loss, checked on those batches, is that of their final
    parameters (reported at their last step), so a model finishing between two checks is still
    checked. A diverged model (recorded in ``divergence``) keeps stepping: its NaNs stay in its
    own slices of the stacked tensors.
    """
    momentum = [torch.zeros_like(p) for p in params]
    rates = _learning_rates(recipe, sizes)
    last_steps = np.array([recipe.total_steps(n) for n in sizes]) - 1
    models = np.arange(len(sizes))
    for step, lrs in enumerate(tqdm(rates.tolist(), desc=f"{len(sizes)} models",
                                    disable=not progress)):
        xs, ys, _ = batcher(streams)
        check = step % _CHECK_EVERY == 0 or step == len(rates) - 1
        grads, loss = gradients(xs, ys, check)
        with torch.no_grad():
            _sgd_update(params, grads, momentum, lrs, recipe)
        if loss is not None:  # gradients() returns the loss exactly when `check` asks for it
            _check_finite(loss, np.minimum(step, last_steps), models, divergence)


def _sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor],
                momentum: list[torch.Tensor], lrs: list[float], recipe: TrainRecipe) -> None:
    """One ``torch.optim.SGD`` step (dampening 0, no Nesterov) on stacked parameters
    ``[G, ...]`` with one learning rate per model; updates in place.

    Uses PyTorch's fused SGD kernel (one pass over parameters, gradients and momentum instead of
    four), once for all models when they share a learning rate, else once per distinct rate on
    the slices of the models that have it.
    """
    step = partial(sgd, weight_decay=recipe.weight_decay, momentum=recipe.momentum,
                   dampening=0.0, nesterov=False, maximize=False, fused=True)
    if len(set(lrs)) == 1:
        step(params, grads, [*momentum], lr=lrs[0])  # sgd takes list[Tensor | None] buffers
        return
    for lr in set(lrs):
        models = [g for g, rate in enumerate(lrs) if rate == lr]
        p, d, m = ([t[g] for t in tensors for g in models] for tensors in (params, grads, momentum))
        step(p, d, [*m], lr=lr)
