"""TrainRecipe validation and learning-rate schedules."""

import math

import pytest
from pydantic import ValidationError

from transfer_influence.training import Normalization, TrainRecipe


def test_defaults_and_frozen():
    recipe = TrainRecipe(epochs=1, lr=0.1)
    assert (recipe.batch_size, recipe.momentum, recipe.weight_decay) == (256, 0.9, 5e-4)
    with pytest.raises(ValidationError):
        recipe.lr = 0.2
    with pytest.raises(ValidationError, match="extra"):
        TrainRecipe(epochs=1, lr=0.1, learning_rate=0.1)


def test_invalid_values():
    with pytest.raises(ValidationError, match="warmup_epochs"):
        TrainRecipe(epochs=1, lr=0.1, warmup_epochs=2)
    with pytest.raises(ValidationError, match="std"):
        Normalization(mean=(0.5, 0.5), std=(0.2,))


def test_warmup_then_cosine():
    # 1000 examples / batch 100 = 10 steps per epoch; 4 epochs = 40 steps, 10 of them warm-up.
    recipe = TrainRecipe(epochs=4, batch_size=100, lr=0.4, warmup_epochs=1, schedule="cosine")
    lrs = [recipe.learning_rate(step, 1000) for step in range(recipe.total_steps(1000))]
    assert len(lrs) == 40
    assert lrs[:10] == pytest.approx([0.04 * (i + 1) for i in range(10)])
    expected = [0.2 * (1 + math.cos(math.pi * i / 30)) for i in range(30)]
    assert lrs[10:] == pytest.approx(expected)
    assert max(lrs) == pytest.approx(0.4) and lrs[-1] > 0


def test_triangular_and_constant():
    tri = TrainRecipe(epochs=2, batch_size=10, lr=1.0, warmup_epochs=1, schedule="triangular")
    assert [tri.learning_rate(s, 20) for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    const = TrainRecipe(epochs=1, batch_size=10, lr=0.3, schedule="constant")
    assert {const.learning_rate(s, 55) for s in range(const.total_steps(55))} == {0.3}
    assert const.total_steps(55) == 6
