"""The surrogate: one cheap model trained once on the whole source, whose predictions and
features score the source for pruning (DP4TL, Zhang et al. 2023, section 3).

The surrogate may be smaller than the experiment's model (``[prune.surrogate]``); it is trained
with the group trainer like every other model here, from its own seed, and cached beside the
sweep store as a state dict, named by a hash of everything that determines it, so every pruning
method and every later ``prune`` call reuses it. Its training time is saved with it: the time
table of a pruning run reports it as the cost of the method.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open
from ..config import ModelConfig, SurrogateConfig
from ..devices import resolve_device
from ..errors import ConfigError, StoreError
from ..models import build_model
from ..models.base import TransferModel
from ..sweep.plan import SweepPlan
from ..training import TrainRecipe, predict_logits, pretrain_group, recipe_uses_labels


@dataclass(frozen=True)
class Surrogate:
    """A trained surrogate: the model, how it was trained, and what training it cost."""

    model: TransferModel
    model_config: ModelConfig
    recipe: TrainRecipe
    train_seconds: float
    path: Path

    @property
    def labelled(self) -> bool:
        """Whether the surrogate learned the source labels (its head maps onto source classes);
        a self-supervised surrogate (an objective with ``uses_labels = False``, e.g. simclr) has
        features but no meaningful head."""
        return recipe_uses_labels(self.recipe)


def surrogate_spec(plan: SweepPlan) -> tuple[ModelConfig, TrainRecipe, int]:
    """The surrogate's model, recipe and seed: ``[prune.surrogate]``, else the experiment's."""
    config = plan.config
    spec: SurrogateConfig = config.prune.surrogate
    return spec.model or config.model, spec.pretrain or config.pretrain, spec.seed


def surrogate_path(plan: SweepPlan) -> Path:
    """``<store>.prune-surrogate-<hash>.pt``: the hash covers the source data, model, recipe and
    seed, so a changed surrogate setting trains a new one instead of reusing a stale file."""
    model, recipe, seed = surrogate_spec(plan)
    payload = {"source": plan.data.source.fingerprint(), "model": model.model_dump(mode="json"),
               "recipe": recipe.model_dump(mode="json"), "seed": seed}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return plan.config.artifact_path(f"prune-surrogate-{digest}.pt")


def _build(plan: SweepPlan, model: ModelConfig) -> TransferModel:
    source = plan.data.source
    channels, height, _ = source.image_shape
    return build_model(model.name, in_channels=channels, image_size=height,
                       num_classes=source.num_classes, **model.options)


def _check_fits_data(plan: SweepPlan, model: TransferModel, model_config: ModelConfig,
                     recipe: TrainRecipe) -> None:
    """Run the surrogate on one source and one target image: a model built for another image
    size or channel count fails here with a message instead of deep inside training."""
    for part in (plan.data.source, plan.data.target_train):
        try:
            predict_logits([model], part.images[:1], normalization=recipe.normalization)
        except RuntimeError as error:
            raise ConfigError(
                f"the surrogate model {model_config.name!r} does not accept the data's images"
                f" ({part.name!r}: [channels, height, width] = {list(part.image_shape)}): {error}."
                " Choose [prune.surrogate.model] options for this image size, or set the data's"
                " image_size / channels."
            ) from None


def train_surrogate(plan: SweepPlan, *, quiet: bool = True) -> Surrogate:
    """The experiment's surrogate, trained on the whole source (or loaded from its cache)."""
    model_config, recipe, seed = surrogate_spec(plan)
    path = surrogate_path(plan)
    model = _build(plan, model_config)
    _check_fits_data(plan, model, model_config, recipe)
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state_dict"])
        except (OSError, RuntimeError, KeyError) as error:
            raise StoreError(f"cannot read the cached surrogate {path} ({error}); delete it and"
                             " rerun transfer-influence prune to retrain it.") from error
        model.eval()
        return Surrogate(model, model_config, recipe, float(saved["train_seconds"]), path)
    everything = np.ones((1, plan.data.source.num_classes), dtype=bool)
    start = time.perf_counter()
    (model,) = pretrain_group(model_config.name, plan.data.source, everything, unit="class",
                              seeds=[seed], recipe=recipe, model_options=model_config.options,
                              device=resolve_device(plan.config.device),
                              progress=not quiet and sys.stderr.isatty())
    seconds = time.perf_counter() - start
    model.cpu()  # trained on the config's device, scored on the CPU
    with atomic_open(path, "wb") as file:
        torch.save({"state_dict": model.state_dict(), "train_seconds": seconds}, file)
    model.eval()
    return Surrogate(model, model_config, recipe, seconds, path)
