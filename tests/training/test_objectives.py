"""Objectives by name: the built-ins through the registry, a user's own by registered name or
import path (trained exactly as when passed in), config hashes unchanged, clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transfer_influence.config import ModelConfig, parse_config
from transfer_influence.errors import ConfigError
from transfer_influence.pruning.baselines import ScoreTraining
from transfer_influence.pruning.surrogate import Surrogate
from transfer_influence.training import (
    SimCLRObjective,
    TrainRecipe,
    pretrain_group,
    recipe_objective,
    recipe_uses_labels,
    register_objective,
    registered_objectives,
    uses_labels,
)

RECIPE = TrainRecipe(epochs=1, batch_size=16, lr=0.05)


def squared_error(recipe: TrainRecipe):
    """A user's factory: squared error between softmax and one-hot labels, scaled by lr (so the
    factory demonstrably reads the recipe)."""

    def objective(features, head, x, y):
        p = F.softmax(head(features(x)), dim=1)  # |p - e_y|^2 = |p|^2 - 2 p_y + 1 (vmap-safe)
        return recipe.lr * ((p**2).sum(1) - 2 * p.gather(1, y[:, None]).squeeze(1) + 1).mean()

    return objective


def not_a_factory(recipe):
    return 3


def test_cross_entropy_by_name_is_smoothed_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    smoothing = 0.2
    objective = recipe_objective(RECIPE.model_copy(update={"label_smoothing": smoothing}))
    loss = objective(lambda x: x, lambda f: f, logits, y)
    log_p = torch.log_softmax(logits, dim=1)
    target = torch.full_like(log_p, smoothing / 3)
    target[torch.arange(2), y] += 1 - smoothing
    torch.testing.assert_close(loss, -(target * log_p).sum(1).mean())


def test_simclr_by_name_carries_the_recipe_temperature():
    objective = recipe_objective(TrainRecipe(epochs=1, lr=0.1, objective="simclr",
                                             temperature=0.2))
    assert objective == SimCLRObjective(0.2)
    assert {"cross_entropy", "simclr"} <= set(registered_objectives())


@pytest.fixture(scope="module")
def source():
    from transfer_influence.data.images import LabeledImages

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 20)
    images = rng.integers(0, 256, (len(labels), 1, 6, 6), dtype=np.uint8)
    return LabeledImages(images, labels, tuple("abcd"), "toy")


def _train(source, recipe, objective=None):
    models = pretrain_group("mlp", source, np.ones((2, 4), bool), unit="class", seeds=[3, 4],
                            recipe=recipe, model_options={"width": 8}, objective=objective)
    return [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models]


@pytest.mark.parametrize("how", ["registered", "import path"])
def test_own_objective_by_name_trains_as_when_passed_in(source, clean_registry, how):
    name = "squared_error"
    if how == "registered":
        register_objective(name, squared_error)
    else:
        name = f"{__name__}:squared_error"
    recipe = RECIPE.model_copy(update={"objective": name})
    by_name = _train(source, recipe)
    passed = _train(source, RECIPE, squared_error(RECIPE))
    default = _train(source, RECIPE)
    for a, b, c in zip(by_name, passed, default):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)  # and it is not the default cross-entropy


def test_hash_of_existing_configs_is_unchanged():
    raw = {"data": {"suite": "planted"}, "pretrain": {"epochs": 1, "lr": 0.1},
           "sweep": {"num_models": 2}}
    spelled = {**raw, "pretrain": {**raw["pretrain"], "objective": "cross_entropy"}}
    assert parse_config(spelled).config_hash() == parse_config(raw).config_hash()
    own = {**raw, "pretrain": {**raw["pretrain"], "objective": "pkg.mod:loss"}}
    assert parse_config(own).config_hash() != parse_config(raw).config_hash()


def test_bad_objectives_are_refused_with_what_to_do(clean_registry):
    with pytest.raises(ConfigError, match="unknown objective 'moco'.*cross_entropy"):
        recipe_objective(RECIPE.model_copy(update={"objective": "moco"}))
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        recipe_objective(RECIPE.model_copy(update={"objective": "no_such_module:f"}))
    with pytest.raises(ConfigError, match="has no function 'missing'"):
        recipe_objective(RECIPE.model_copy(update={"objective": f"{__name__}:missing"}))
    with pytest.raises(ConfigError, match="returned 'int', not a function"):
        recipe_objective(RECIPE.model_copy(update={"objective": f"{__name__}:not_a_factory"}))
    with pytest.raises(ConfigError, match="already registered; pass replace=True"):
        register_objective("cross_entropy", squared_error)
    with pytest.raises(ConfigError, match="without ':'"):
        register_objective("a:b", squared_error)
    with pytest.raises(ConfigError, match="objective"):
        parse_config({"pretrain": {"epochs": 1, "lr": 0.1, "objective": ""},
                      "sweep": {"num_models": 2}})


class _Rotation:
    """A user's self-supervised objective (it ignores ``y``), declaring so."""

    uses_labels = False

    def __call__(self, features, head, x, y):
        return (features(x) - features(x.flip(-1))).square().mean()


def test_uses_labels_is_the_objectives_own_declaration(clean_registry):
    """One property, read by pruning's surrogate and its score models: the built-ins, a
    user's labelled objective (no declaration) and a user's self-supervised one (declared)."""
    register_objective("squared", squared_error)
    register_objective("rotation", lambda recipe: _Rotation())
    labels = {name: recipe_uses_labels(RECIPE.model_copy(update={"objective": name}))
              for name in ("cross_entropy", "simclr", "squared", "rotation")}
    assert labels == {"cross_entropy": True, "simclr": False, "squared": True, "rotation": False}
    assert uses_labels(SimCLRObjective()) is False and uses_labels(squared_error(RECIPE))

    def surrogate(objective: str) -> Surrogate:
        return Surrogate(model=None, model_config=ModelConfig(),
                         recipe=RECIPE.model_copy(update={"objective": objective}),
                         train_seconds=0.0, path=None)

    assert surrogate("squared").labelled and not surrogate("rotation").labelled
    assert ScoreTraining(recipe=RECIPE.model_copy(update={"objective": "squared"}), seeds=(0,))
    with pytest.raises(ValueError, match="recipe.objective 'rotation' does not use them"):
        ScoreTraining(recipe=RECIPE.model_copy(update={"objective": "rotation"}), seeds=(0,))
