"""Transfer a group of pretrained models to a target task and reduce the results to the four
stored numbers per (model, target test example) (:class:`~transfer_influence.TargetOutputs`).

Two transfer modes, both returning ``TargetOutputs`` of shape ``[models, targets]``:

- :func:`transfer_fixed_feature`: freeze each backbone, extract features once, fit all linear heads
  as one batched convex problem (:func:`~.linear_heads.fit_linear_heads`);
- :func:`finetune_group`: train backbone and a fresh target head with the group trainer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch

from ..data.images import LabeledImages
from ..devices import float64_device
from ..errors import TrainingError
from ..models.base import TransferModel
from ..outputs import TargetOutputs
from ..recipe import Normalization, TrainRecipe
from .linear_heads import fit_linear_heads
from .objectives import Features, Head, Objective, recipe_objective, uses_labels
from .preprocess import to_inputs
from .trainer import DivergenceLog, Strategy, conv_layout, fit_models, model_generator

_FEATURE_BUDGET_BYTES = 256 * 2**20  # float64 features of one model chunk in fixed-feature fits


def _apply(models: Sequence[TransferModel], images: LabeledImages | np.ndarray,
           normalization: Normalization | None, batch_size: int, device: torch.device,
           features_only: bool) -> torch.Tensor:
    """Run every model (eval mode, no grad, convolutions in :func:`~.trainer.conv_layout`) over
    ``images`` in batches -> ``[G, N, out]``."""
    array = images.images if isinstance(images, LabeledImages) else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise TrainingError(
            f"images must be uint8 [N, C, H, W], got dtype {array.dtype} and shape {array.shape};"
            " pass a LabeledImages or its .images."
        )
    outputs: list[list[torch.Tensor]] = [[] for _ in models]
    with torch.no_grad():
        for start in range(0, len(array), batch_size):
            batch = torch.as_tensor(np.array(array[start:start + batch_size]), device=device)
            x = to_inputs(batch, normalization)
            for out, model in zip(outputs, models):
                model.eval()
                with conv_layout(model):
                    out.append(model.features(x) if features_only else model(x))
    return torch.stack([torch.cat(out) for out in outputs])


def extract_features(models: Sequence[TransferModel], images: LabeledImages | np.ndarray, *,
                     normalization: Normalization | None = None, batch_size: int = 1024,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Backbone features ``[G, N, D]`` (float32) of every model for uint8 images ``[N, C, H, W]``,
    preprocessed like training (scale to [0, 1], then ``normalization``, no augmentation)."""
    return _apply(models, images, normalization, batch_size, torch.device(device), True)


def predict_logits(models: Sequence[TransferModel], images: LabeledImages | np.ndarray, *,
                   normalization: Normalization | None = None, batch_size: int = 1024,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits ``[G, N, classes]`` of every model (eval mode, no grad, no augmentation)."""
    return _apply(models, images, normalization, batch_size, torch.device(device), False)


def transfer_fixed_feature(
    models: Sequence[TransferModel],
    target_train: LabeledImages,
    target_test: LabeledImages,
    *,
    l2: float,
    normalization: Normalization | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> TargetOutputs:
    """Fixed-feature transfer: fit a linear head per frozen backbone on ``target_train`` (batched
    L2 multinomial logistic regression on standardised features, solved in float64: on ``device``,
    or on the CPU for ``mps``, see :func:`~transfer_influence.devices.float64_device`) and return
    the stored outputs on ``target_test``, ``[models, targets]``.

    ``normalization`` must be the one used in pretraining. Models are processed in chunks so that
    the float64 training features of a chunk stay within ~256 MiB.
    """
    _check_inputs(models, target_train, target_test)
    d = models[0].feature_dim
    chunk = max(1, _FEATURE_BUDGET_BYTES // (8 * len(target_train) * d))
    labels = torch.as_tensor(np.array(target_train.labels))
    head_device = float64_device(device)  # the CPU for mps, which has no float64
    logits = []
    for start in range(0, len(models), chunk):
        group = models[start:start + chunk]
        extract = partial(extract_features, normalization=normalization, batch_size=batch_size,
                          device=device)
        train_features = extract(group, target_train).to(head_device).double()
        w, b = fit_linear_heads(train_features, labels.to(head_device),
                                target_train.num_classes, l2=l2, max_iter=max_iter, tol=tol)
        test_features = extract(group, target_test).to(head_device).double()
        logits.append(torch.baddbmm(b.unsqueeze(1), test_features, w.transpose(1, 2)).cpu())
    return TargetOutputs.from_logits(torch.cat(logits), np.array(target_test.labels))


def finetune_group(
    models: Sequence[TransferModel],
    target_train: LabeledImages,
    target_test: LabeledImages,
    recipe: TrainRecipe,
    seeds: Sequence[int],
    *,
    objective: Objective | None = None,
    strategy: Strategy = "auto",
    device: str | torch.device = "cpu",
    progress: bool = False,
    divergence: DivergenceLog | None = None,
    proximal: float = 0.0,
) -> TargetOutputs:
    """Full fine-tuning: copy each pretrained model, give it a fresh head with one output per
    target class (initialised from its seed), train backbone and head on all of ``target_train``
    with ``recipe`` (same group trainer and guarantees as pretraining), and return the stored
    outputs on ``target_test``, ``[models, targets]``. The input models are left unchanged.
    ``divergence`` records diverged models instead of raising (see :func:`fit_models`); their
    outputs are then not finite. The objective (``objective``, else the one ``recipe.objective``
    names) must learn from the labels: one that declares ``uses_labels = False`` is refused.

    ``proximal`` (alpha > 0) adds ``alpha ||W - W_pretrained||^2`` over the backbone parameters
    to every step's loss (Chen et al. 2020's proximal fine-tuning); it trains each model in the
    ``loop`` strategy, where the objective sees the model's own backbone. ``0`` leaves training
    exactly as without the option."""
    _check_inputs(models, target_train, target_test)
    if not uses_labels(recipe_objective(recipe) if objective is None else objective):
        named = f"objective {recipe.objective!r}" if objective is None else "the given objective"
        raise TrainingError(
            f"fine-tuning trains on the target labels, but {named} declares uses_labels ="
            " False; give it an objective that learns from the labels (cross_entropy or your"
            " own); self-supervised objectives are for pretraining."
        )
    if len(seeds) != len(models):
        raise TrainingError(f"got {len(seeds)} seeds for {len(models)} models; give one per model.")
    generators = [model_generator(s) for s in seeds]
    tuned = []
    for model, generator in zip(models, generators):
        copied = copy.deepcopy(model)
        copied.replace_head(target_train.num_classes, generator)
        tuned.append(copied)
    if proximal:
        if strategy not in ("auto", "loop"):
            raise TrainingError(f"proximal fine-tuning trains with strategy 'loop' (the objective"
                                f" needs each model's backbone), got {strategy!r}; pass 'auto'.")
        strategy = "loop"
        objective = _Proximal(objective or recipe_objective(recipe), tuned, proximal)
    everything = np.arange(len(target_train), dtype=np.int64)
    fit_models(tuned, target_train, [everything] * len(tuned), generators, recipe,
               objective=objective, strategy=strategy, device=device, progress=progress,
               divergence=divergence)
    logits = predict_logits(tuned, target_test, normalization=recipe.normalization, device=device)
    return TargetOutputs.from_logits(logits.cpu(), np.array(target_test.labels))


class _Proximal:
    """``objective + alpha ||W - W_pretrained||^2``: the anchors are each model's backbone
    parameters when the objective is made, looked up by the backbone module the ``loop``
    strategy passes in."""

    def __init__(self, objective: Objective, models: Sequence[TransferModel], alpha: float
                 ) -> None:
        self.objective, self.alpha = objective, alpha
        self.anchors = {id(m.backbone): [p.detach().clone() for p in m.backbone.parameters()]
                        for m in models}

    def __call__(self, features: Features, head: Head, x: torch.Tensor, y: torch.Tensor
                 ) -> torch.Tensor:
        if not isinstance(features, torch.nn.Module):
            raise TrainingError("proximal fine-tuning needs each model's backbone module; it"
                                " trains with strategy 'loop'.")
        anchors = self.anchors[id(features)]
        penalty = sum((p - a.to(p.device)).square().sum()
                      for p, a in zip(features.parameters(), anchors))
        return self.objective(features, head, x, y) + self.alpha * penalty


def _check_inputs(models: Sequence[TransferModel], target_train: LabeledImages,
                  target_test: LabeledImages) -> None:
    """At least one model; train and test splits must share their classes."""
    if not models:
        raise TrainingError("no models to transfer; pass at least one pretrained model.")
    if target_train.class_names != target_test.class_names:
        raise TrainingError(
            f"target train ({target_train.name!r}) and test ({target_test.name!r}) have different"
            " class names; split one target dataset so both share its classes in the same order."
        )
