"""Multi-stage influence functions on an experiment config: pretrain one model on the whole
source, train both stages to their optima, score every pretraining example against the target
test set (summed, eq. 8, and per test example), optionally validate by real leave-one-out
retraining, and save everything beside the sweep's store, resumably.

Saved files (``<store>.influence-function.*``): ``args.json`` (the arguments and config hash;
another run with different ones is refused rather than mixed in), ``models.pt`` (both converged
stages, reused by reruns), ``scores.npz`` and ``validation.json`` (with its checkpoint
``validation-checkpoint.json``, so a killed validation resumes).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open, write_json
from ..config import ExperimentConfig
from ..data.images import LabeledImages
from ..errors import ConfigError, StoreError
from ..models import build_model
from ..models.base import TransferModel
from ..ranking import top_indices
from ..sweep.plan import SweepPlan, model_seed
from ..training import pretrain_group
from ..training.preprocess import to_inputs
from ..training.trainer import model_generator
from .multistage import (
    SOLVERS,
    FixedFeature,
    MultiStageProblem,
    Proximal,
    SolverOptions,
    is_solver,
)
from .validate import Validation, validate


@dataclass(frozen=True)
class InfluenceArgs:
    """What a run computes; saved next to its results."""

    config_hash: str
    tests: int = 5
    validate: int = 0
    solver: str = "cg"
    damping: float = 0.0
    cg_tol: float = 1e-6
    train_tol: float = 1e-6
    seed: int = 0


def _tensors(data: LabeledImages, config: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_inputs(torch.as_tensor(np.array(data.images)), config.pretrain.normalization)
    return x.double(), torch.as_tensor(np.array(data.labels)).long()


def build_problem(plan: SweepPlan, *, tol: float = 1e-6, cache: Path | None = None
                  ) -> MultiStageProblem:
    """The experiment's two stages at their optima: one model pretrained on the whole source
    with the config's recipe (seed ``model_seed(sweep.seed, 0)``), then both stages polished to
    ``||grad|| <= tol`` in float64. ``cache`` saves the converged models and reloads them on
    reruns."""
    config = plan.config
    finetune = _finetune_case(config)
    data = plan.data
    seed = model_seed(config.sweep.seed, 0)
    models = pretrain_group(config.model.name, data.source,
                            np.ones((1, data.source.num_classes), dtype=bool), unit="class",
                            seeds=[seed], recipe=config.pretrain,
                            model_options=config.model.options) if cache is None or not \
        cache.exists() else None
    pretrained = (models[0] if models else _empty_model(plan)).double().eval()
    finetuned = copy.deepcopy(pretrained)
    finetuned.replace_head(data.target_train.num_classes, model_generator(seed))
    finetuned.double()
    source_x, source_y = _tensors(data.source, config)
    target_x, target_y = _tensors(data.target_train, config)
    if models is None:
        assert cache is not None  # models are None only when the cache holds them
        state = torch.load(cache, weights_only=True)
        pretrained.load_state_dict(state["pretrained"])
        finetuned.load_state_dict(state["finetuned"])
    problem = MultiStageProblem(pretrained, finetuned, source_x, source_y, target_x, target_y,
                                finetune, pretrain_decay=config.pretrain.weight_decay)
    if models is not None:
        problem.converge(tol=tol)
        if cache is not None:
            with atomic_open(cache, "wb") as file:
                torch.save({"pretrained": pretrained.state_dict(),
                            "finetuned": finetuned.state_dict()}, file)
    return problem


def _finetune_case(config: ExperimentConfig) -> FixedFeature | Proximal:
    """The config's transfer as a multi-stage case: ``fixed_feature`` is case 1
    (``FixedFeature(transfer.l2)``); ``finetune`` with ``transfer.proximal = alpha > 0`` is case 2
    (``Proximal(alpha, transfer.recipe.weight_decay)``, the objective ``finetune_group``
    trains). Full fine-tuning without a proximal term is refused: its optimum does not depend
    on the pretrained backbone, so every influence would be 0."""
    transfer = config.transfer
    if transfer.mode == "fixed_feature":
        return FixedFeature(transfer.l2)
    if not transfer.proximal:
        raise ConfigError(
            "influence-function on full fine-tuning needs the proximal term of Chen et al.'s"
            " case 2: set transfer.proximal = alpha > 0 (e.g. 0.01), which ties the fine-tuned"
            " backbone to the pretrained one; without it the fine-tuned optimum does not depend"
            " on the pretraining data. Or use transfer.mode = 'fixed_feature' (case 1).")
    recipe = transfer.recipe
    if recipe is not None and recipe.label_smoothing:
        raise ConfigError("influence-function fine-tunes with plain cross-entropy; set"
                          " transfer.recipe.label_smoothing = 0.")
    return Proximal(transfer.proximal, recipe.weight_decay if recipe is not None else 0.0)


def _empty_model(plan: SweepPlan) -> TransferModel:
    """The config's architecture, to load cached converged parameters into."""
    channels, size, _ = plan.data.source.image_shape
    return build_model(plan.config.model.name, in_channels=channels, image_size=size,
                       num_classes=plan.data.source.num_classes, **plan.config.model.options)


def validation_indices(total: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The ``count`` pretraining examples ``--validate`` removes, as in Chen et al. (Fig. 2/3):
    the ``count // 2`` with the largest ``|influence|`` on the summed test loss (the effects
    large enough to stand out of the retraining noise) and the rest drawn at random (seeded)
    from the others, so typical examples are checked too. Sorted."""
    count = min(count, len(total))
    largest = top_indices(np.abs(total), count // 2)
    others = np.setdiff1d(np.arange(len(total)), largest)
    rng = np.random.default_rng([seed, 12])
    return np.sort(np.concatenate([largest, rng.choice(others, size=count - len(largest),
                                                       replace=False)]))


@dataclass
class InfluenceFunctionResult:
    """Influences of every pretraining example: on the summed target test loss (``total``,
    ``[m]``) and on each of the first test examples (``per_test``, ``[m, tests]``); positive =
    harmful. ``validation`` when a validation ran; ``args`` are the saved run's arguments."""

    unit_names: list[str]
    total: np.ndarray
    per_test: np.ndarray
    test_indices: np.ndarray
    validation: Validation | None = None
    args: dict = field(default_factory=dict)

    def top(self, k: int, *, harmful: bool, test: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` most harmful (largest) or helpful (smallest) examples, overall or for
        column ``test`` of ``per_test``."""
        scores = self.total if test is None else self.per_test[:, test]
        return [(self.unit_names[i], float(scores[i]))
                for i in top_indices(scores, k, largest=harmful)]


def example_names(source: LabeledImages) -> list[str]:
    """``"<class>#<index>"`` of every source example: the example-unit names of a sweep, which
    the report's image helpers resolve to the example's image."""
    return [f"{source.class_names[y]}#{i}" for i, y in enumerate(source.labels)]


def saved_influence_function(plan: SweepPlan) -> InfluenceFunctionResult | None:
    """The influences ``transfer-influence influence-function`` saved beside ``plan``'s store
    (with the validation when one was run), or None when it has not run. A run of another
    configuration is refused rather than shown as this one's."""
    config = plan.config
    prefix = "influence-function"
    scores_path = config.artifact_path(f"{prefix}.scores.npz")
    if not scores_path.exists():
        return None
    args_path = config.artifact_path(f"{prefix}.args.json")
    saved = json.loads(args_path.read_text()) if args_path.exists() else {}
    if saved.get("config_hash") != config.config_hash():
        raise StoreError(f"{scores_path} was computed for another configuration (hash"
                         f" {saved.get('config_hash')}, this one {config.config_hash()}); rerun"
                         " `transfer-influence influence-function` on this config, overwriting"
                         " it.")
    with np.load(scores_path) as scores:
        total, per_test, tests = (scores[k] for k in ("total", "per_test", "tests"))
    if total.shape != (len(plan.data.source),):
        raise StoreError(f"{scores_path} scores {total.shape[0]} pretraining examples, the"
                         f" source has {len(plan.data.source)}; rerun the influence function,"
                         " overwriting it.")
    validation_path = config.artifact_path(f"{prefix}.validation.json")
    validation = None
    if validation_path.exists():
        validation = Validation.from_summary(json.loads(validation_path.read_text()))
    return InfluenceFunctionResult(example_names(plan.data.source), total, per_test, tests,
                                   validation, saved)


def required_influence_function(plan: SweepPlan) -> InfluenceFunctionResult:
    """:func:`saved_influence_function` for the methods that cannot go on without it (data
    cleansing by influence): a missing run is an error saying which command makes it."""
    result = saved_influence_function(plan)
    if result is None:
        raise ConfigError("no saved influence-function scores beside the store; run"
                          " `transfer-influence influence-function CONFIG` on this config first.")
    return result


# What each saved file depends on: the converged models and the true leave-one-out changes
# (the validation checkpoint) only on the config and the training tolerance; the scores also on
# the solver settings; the validation summary on everything.
_FILE_DEPENDS_ON = {
    "models.pt": ("config_hash", "train_tol"),
    "validation-checkpoint.json": ("config_hash", "train_tol"),
    "scores.npz": ("config_hash", "train_tol", "tests", "solver", "damping", "cg_tol"),
}


def _invalidated(saved: dict, wanted: dict) -> list[str]:
    """The saved files a run with ``wanted`` arguments cannot reuse from one with ``saved``: a
    new solver or validation size keeps the converged models and the retrainings already done."""
    stale = [name for name, keys in _FILE_DEPENDS_ON.items()
             if any(saved.get(key) != wanted.get(key) for key in keys)]
    return [*stale, "validation.json"]


def run_influence_function(config: ExperimentConfig, args: InfluenceArgs, *,
                           overwrite: bool = False) -> InfluenceFunctionResult:
    """Compute (or resume) the influences of an experiment; see the module docstring."""
    if not is_solver(args.solver):  # before any training
        raise ConfigError(f"unknown solver {args.solver!r}; choose one of {', '.join(SOLVERS)}.")
    _finetune_case(config)  # an unsupported transfer is refused before anything is written
    prefix = "influence-function"
    args_path = config.artifact_path(f"{prefix}.args.json")
    saved = json.loads(args_path.read_text()) if args_path.exists() else None
    if saved is not None and saved != asdict(args) and not overwrite:
        raise StoreError(f"{args_path} holds a run with other arguments or another configuration"
                         f" ({saved}); overwrite it (overwrite=True) or use another store.")
    if saved != asdict(args):
        for name in _invalidated(saved or {}, asdict(args)):
            config.artifact_path(f"{prefix}.{name}").unlink(missing_ok=True)
        write_json(args_path, asdict(args))
    plan = SweepPlan.from_config(config)
    problem = build_problem(plan, tol=args.train_tol,
                            cache=config.artifact_path(f"{prefix}.models.pt"))
    options = SolverOptions(args.solver, args.damping, args.cg_tol)
    x_test, y_test = _tensors(plan.data.target_test, config)
    scores_path = config.artifact_path(f"{prefix}.scores.npz")
    names = example_names(plan.data.source)
    if scores_path.exists():
        with np.load(scores_path) as saved_scores:
            total, per_test, tests = (saved_scores[k] for k in ("total", "per_test", "tests"))
    else:
        tests = np.arange(min(args.tests, len(x_test)))
        vectors = [problem.test_vector(x_test, y_test, options)]
        vectors += [problem.test_vector(x_test[i:i + 1], y_test[i:i + 1], options)
                    for i in tests]
        scores = problem.scores(torch.stack(vectors)).numpy()
        total, per_test = scores[:, 0], scores[:, 1:]
        with atomic_open(scores_path, "wb") as file:
            np.savez(file, total=total, per_test=per_test, tests=tests)
    validation = None
    if args.validate:
        chosen = validation_indices(total, args.validate, args.seed)
        validation = validate(problem, x_test, y_test, chosen, options=options,
                              tol=args.train_tol,
                              checkpoint=config.artifact_path(
                                  f"{prefix}.validation-checkpoint.json"))
        write_json(config.artifact_path(f"{prefix}.validation.json"), validation.summary())
    return InfluenceFunctionResult(names, total, per_test, tests, validation)
