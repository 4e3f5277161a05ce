"""Training objectives as functions, so the trainer is not tied to supervised cross-entropy.

An objective receives the model as two callables, ``features(x) -> [B, D]`` and
``head(features) -> [B, classes]``, plus a batch ``x`` and labels ``y``, and returns a scalar loss.
Under the ``loop`` strategy the callables are ``model.backbone`` and ``model.head``; under
``vmap`` they are ``torch.func.functional_call`` closures over one model's slice of the stacked
parameters. An objective must therefore be a pure function of its arguments (no in-place updates
of module state, no random draws: ``vmap`` rejects them); a self-supervised objective simply
ignores ``head`` and ``y`` (its two views can be built deterministically from ``x``, or the
augmentation done per model before the objective).

A **two-view objective** (:class:`SimCLRObjective`) carries a ``views`` attribute, a
:class:`~transfer_influence.data.transforms.ContrastiveViews`. The trainer then draws two views of
every example from the model's own generator, after the recipe's augmentation and outside
``vmap``, and passes ``x`` as ``[B, 2, C, H, W]``; the objective itself stays pure. So the views,
like everything else, are a function of the model's seed.

An objective that does not learn from the labels ``y`` (a self-supervised one, such as
:class:`SimCLRObjective`) says so with an attribute ``uses_labels = False``;
:func:`recipe_uses_labels` reads it for a recipe, and everything that needs a model trained on
the labels consults it (pruning's labelled surrogate and its score models). Objectives without
the attribute use the labels.

Objectives by name: ``recipe.objective`` (``pretrain.objective`` in the TOML) names an *objective
factory*, ``factory(recipe) -> Objective``, that reads the recipe's own settings. The built-ins,
``cross_entropy`` (``recipe.label_smoothing``) and ``simclr`` (``recipe.temperature``), are
registered with :func:`register_objective` like a user's; any other factory is given by import
path, ``"package.module:factory"``. As for models, a registered name lives in the process that
registered it, so sweeps run on Ray or as array jobs name their objective by import path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F

from ..data.transforms import ContrastiveViews
from ..errors import ConfigError, TrainingError
from ..recipe import TrainRecipe
from ..registry import Registry

Features = Callable[[torch.Tensor], torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]


class Objective(Protocol):
    """``objective(features, head, x, y) -> scalar loss`` (see module docstring)."""

    def __call__(self, features: Features, head: Head, x: torch.Tensor, y: torch.Tensor
                 ) -> torch.Tensor: ...


def cross_entropy_objective(label_smoothing: float = 0.0) -> Objective:
    """Mean cross-entropy of ``head(features(x))`` against ``y`` with optional label smoothing."""

    def objective(features: Features, head: Head, x: torch.Tensor, y: torch.Tensor
                  ) -> torch.Tensor:
        return F.cross_entropy(head(features(x)), y, label_smoothing=label_smoothing)

    return objective


def nt_xent(pairs: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of embeddings ``pairs [B, 2, D]`` (row ``i`` holds the two views of
    example ``i``).

    The ``2B`` embeddings are L2-normalised; each one is the anchor of a ``2B - 1``-way
    classification whose logits are its cosine similarities to all others divided by
    ``temperature``, and whose answer is the other view of its own example. Returns the mean
    cross-entropy over the ``2B`` anchors (Chen et al. 2020, eq. 1).
    """
    batch = pairs.shape[0]
    z = F.normalize(pairs.flatten(0, 1), dim=1)  # [2B, D]: example i's views at 2i and 2i + 1
    logits = z @ z.T / temperature
    self_pair = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))
    partner = torch.arange(2 * batch, device=z.device) ^ 1
    return F.cross_entropy(logits, partner)


@dataclass(frozen=True)
class SimCLRObjective:
    """SimCLR (Chen et al. 2020): NT-Xent (:func:`nt_xent`) between the two views of every
    example of the batch, the other ``2B - 2`` views being negatives, on ``head(features(x))``.

    The model's linear head plays SimCLR's projection head ``g``: the loss is taken after it, and
    transfer uses the backbone features before it (then replaces the head), as SimCLR does. On the
    planted problem (MLP width 16, 20 epochs, 3 problem seeds x 3 model seeds), linear-probe
    target accuracy was 0.70-0.90 with the head as projection and 0.42-0.83 with the loss on the
    features themselves. The projection has one output per source label; with an unlabelled
    source, give the source enough (pseudo-)labels for a projection of useful width. Labels are
    otherwise ignored. ``views`` makes the trainer pass two views (see module docstring).
    """

    temperature: float = 0.5
    views: ContrastiveViews = field(default_factory=ContrastiveViews)
    uses_labels: ClassVar[bool] = False

    def __call__(self, features: Features, head: Head, x: torch.Tensor, y: torch.Tensor
                 ) -> torch.Tensor:
        if x.ndim < 3 or x.shape[1] != 2:
            raise TrainingError(
                f"the SimCLR objective needs two views per example, x of shape [B, 2, C, H, W];"
                f" got {tuple(x.shape)}. Train it through the group trainer, which draws them."
            )
        batch = x.shape[0]
        return nt_xent(head(features(x.flatten(0, 1))).view(batch, 2, -1), self.temperature)


ObjectiveFactory = Callable[[TrainRecipe], Objective]
"""``factory(recipe) -> Objective``: builds the objective from the recipe's settings."""

_OBJECTIVES: Registry[ObjectiveFactory] = Registry("objective", ConfigError, "register_objective",
                                                 import_paths="factory")


def register_objective(name: str, factory: ObjectiveFactory, *, replace: bool = False) -> None:
    """Make ``factory`` available as objective ``name`` (in this process; see module docstring).
    Registering another factory under a taken name needs ``replace=True``."""
    _OBJECTIVES.register(name, factory, replace=replace)


def registered_objectives() -> list[str]:
    """Names of the registered objectives (the built-ins and any added in this process)."""
    return sorted(_OBJECTIVES.names())


def objective_factory(name: str) -> ObjectiveFactory:
    """The factory of objective ``name``: a registered name or ``"package.module:factory"``."""
    return _OBJECTIVES.get(name)


def recipe_objective(recipe: TrainRecipe) -> Objective:
    """The objective ``recipe.objective`` names, built from the recipe by its factory."""
    objective = objective_factory(recipe.objective)(recipe)
    if not callable(objective):
        raise ConfigError(f"objective {recipe.objective!r}: its factory returned"
                          f" {type(objective).__name__!r}, not a function"
                          " objective(features, head, x, y) -> loss.")
    return objective


def uses_labels(objective: Objective) -> bool:
    """Whether ``objective`` learns from the labels: False only when it declares
    ``uses_labels = False`` (see module docstring)."""
    return bool(getattr(objective, "uses_labels", True))


def recipe_uses_labels(recipe: TrainRecipe) -> bool:
    """Whether the objective ``recipe.objective`` names learns from the labels (it is built from
    the recipe to ask it, so a user's objective is judged by its own declaration)."""
    return uses_labels(recipe_objective(recipe))


def objective_views(objective: Objective) -> ContrastiveViews | None:
    """The view augmentation of a two-view objective, None for single-view objectives."""
    return getattr(objective, "views", None)


register_objective("cross_entropy", lambda recipe: cross_entropy_objective(recipe.label_smoothing))
register_objective("simclr", lambda recipe: SimCLRObjective(recipe.temperature))
