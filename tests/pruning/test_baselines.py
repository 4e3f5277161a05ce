"""Example-level baselines against hand computations: a tiny MLP trained full-batch by plain
``torch.optim.SGD`` in the test, its scores computed example by example; moderate on toy
features; seeds; bad input."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from transfer_influence.data import LabeledImages
from transfer_influence.errors import ConfigError, DataError, ModelError
from transfer_influence.models import build_model
from transfer_influence.models.base import reset_parameters
from transfer_influence.pruning import (
    ForgettingCounter,
    ScoreTraining,
    class_mean_scores,
    class_median_distances,
    el2n_scores,
    forgetting_scores,
    gradient_norms,
    grand_scores,
    moderate_scores,
)
from transfer_influence.training import TrainRecipe

N, WIDTH = 12, 4
OPTIMIZER = {"lr": 1.0, "momentum": 0.9, "weight_decay": 5e-4}


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), N // 3)
    images = rng.integers(0, 256, (N, 1, 3, 3), dtype=np.uint8)
    return LabeledImages(images, labels, ("a", "b", "c"), "tiny")


def config(epochs: float, seeds=(0, 1)) -> ScoreTraining:
    """Full-batch training: every step presents every example once."""
    recipe = TrainRecipe(epochs=epochs, batch_size=N, schedule="constant", **OPTIMIZER)
    return ScoreTraining(model={"name": "mlp", "options": {"width": WIDTH, "depth": 1}},
                         recipe=recipe, seeds=seeds)


def hand_train(data: LabeledImages, seed: int, steps: int, record=None):
    """The same model trained by hand: init from the seed, full-batch SGD on the mean loss."""
    model = build_model("mlp", in_channels=1, image_size=3, num_classes=3, width=WIDTH, depth=1)
    reset_parameters(model, torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), **OPTIMIZER)
    x = torch.as_tensor(np.array(data.images), dtype=torch.float32) / 255
    y = torch.as_tensor(np.array(data.labels))
    for _ in range(steps):
        logits = model(x)
        if record is not None:
            record.append((logits.argmax(1) == y).numpy())
        optimizer.zero_grad()
        F.cross_entropy(logits, y).backward()
        optimizer.step()
    return model, x, y


def test_el2n_matches_hand_computation(tiny):
    expected = []
    for seed in (0, 1):
        model, x, _ = hand_train(tiny, seed, steps=2)
        logits = model(x).detach().double().numpy()
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        expected.append(np.linalg.norm(p - np.eye(3)[tiny.labels], axis=1))
    scores = el2n_scores(tiny, config(epochs=2))
    assert scores.shape == (N,) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, np.mean(expected, axis=0), rtol=1e-4, atol=1e-6)


def test_grand_matches_hand_computation(tiny):
    expected = []
    for seed in (0, 1):
        model, x, y = hand_train(tiny, seed, steps=2)
        norms = []
        for i in range(N):  # one backward pass per example
            model.zero_grad()
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            norms.append(np.sqrt(sum(p.grad.double().square().sum().item()
                                     for p in model.parameters())))
        expected.append(norms)
    np.testing.assert_allclose(grand_scores(tiny, config(epochs=2)), np.mean(expected, axis=0),
                               rtol=1e-4, atol=1e-6)


def test_gradient_norms_do_not_depend_on_chunking(tiny, monkeypatch):
    from transfer_influence.pruning import baselines

    model, _, _ = hand_train(tiny, 0, steps=1)
    whole = gradient_norms(model, tiny.images, tiny.labels)
    size = sum(p.numel() for p in model.parameters())
    monkeypatch.setattr(baselines, "_GRADIENT_BUDGET_BYTES", 5 * 4 * size)  # chunks of 5
    np.testing.assert_allclose(gradient_norms(model, tiny.images, tiny.labels), whole, rtol=1e-6)


def hand_forgetting(history: list[np.ndarray]) -> np.ndarray:
    """Forgetting events from a [presentations, examples] correctness history, one example and
    one presentation at a time; never-learned examples count one per presentation."""
    history = np.array(history)
    counts = []
    for column in history.T:
        if not column.any():
            counts.append(len(column))
            continue
        counts.append(sum(1 for a, b in pairwise(column) if a and not b))
    return np.array(counts)


def test_forgetting_matches_hand_computation(tiny):
    per_seed = []
    for seed in (0, 1):
        history: list[np.ndarray] = []
        hand_train(tiny, seed, steps=10, record=history)
        per_seed.append(hand_forgetting(history))
    expected = np.mean(per_seed, axis=0)
    # the hand histories have both forgetting events and never-learned examples
    assert (np.array(per_seed) == 10).any() and np.isin(np.array(per_seed), (1, 2, 3)).any()
    np.testing.assert_array_equal(forgetting_scores(tiny, config(epochs=10)), expected)


def test_forgetting_counter_handles_repeats_in_one_batch():
    counter = ForgettingCounter(np.array([0, 1, 1]), num_models=2)

    def logits(predicted):  # one-hot logits whose argmax is `predicted`
        return torch.eye(2)[torch.as_tensor(predicted)]

    # model 1: example 0 presented twice in a batch, right then wrong (one event); example 1
    # right, wrong, right, wrong over three batches (two events); example 2 never right.
    counter(1, 0, np.array([0, 1, 0, 2]), logits([0, 1, 1, 0]))
    counter(1, 1, np.array([1, 2]), logits([0, 0]))
    counter(1, 2, np.array([1, 0]), logits([1, 0]))
    counter(1, 3, np.array([1]), logits([0]))
    np.testing.assert_array_equal(counter.counts(), [[0, 0, 0], [1, 2, 2]])
    np.testing.assert_array_equal(counter.presentations[1], [3, 4, 2])


def test_scores_are_seeded(tiny):
    a = el2n_scores(tiny, config(epochs=2, seeds=(3,)))
    assert np.array_equal(a, el2n_scores(tiny, config(epochs=2, seeds=(3,))))
    assert not np.allclose(a, el2n_scores(tiny, config(epochs=2, seeds=(4,))))
    single = [el2n_scores(tiny, config(epochs=2, seeds=(s,))) for s in (3, 4)]
    np.testing.assert_allclose(el2n_scores(tiny, config(epochs=2, seeds=(3, 4))),
                               np.mean(single, axis=0), rtol=1e-6)


def test_moderate_matches_hand_computation():
    features = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 7.0],  # class 0
                         [10.0, 10.0], [10.0, 12.0], [10.0, 16.0]])     # class 1
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    # class 0 median (0.5, 0): distances 0.5, 0.5, 2.5, sqrt(49.25); class 1 median (10, 12)
    expected = np.array([0.5, 0.5, 2.5, np.sqrt(0.25 + 49), 2.0, 0.0, 4.0])
    np.testing.assert_allclose(class_median_distances(features, labels), expected)
    # ranks by distance (ties by index): 5, 0, 1, 4, 2, 6, 3 -> the middle rank 3 is example 4
    scores = moderate_scores(features, labels)
    np.testing.assert_allclose(scores, [-2, -1, -1, -3, 0, -3, -2])
    keep3 = set(np.argsort(-scores, kind="stable")[:3])
    assert keep3 == {4, 1, 2}  # the band around the median distance 2.0


def test_class_mean_scores():
    np.testing.assert_allclose(class_mean_scores([1.0, 3.0, 5.0], np.array([1, 1, 0]), 2),
                               [5.0, 2.0])
    with pytest.raises(DataError, match=r"classes \[2\] have no scored example"):
        class_mean_scores([1.0, 2.0], np.array([0, 1]), 3)


def test_bad_input_is_rejected(tiny):
    recipe = TrainRecipe(epochs=2, lr=0.1)
    with pytest.raises(ValidationError, match="seeds must be distinct"):
        ScoreTraining(recipe=recipe, seeds=(1, 1))
    with pytest.raises(ValidationError, match="seeds"):
        ScoreTraining(recipe=recipe, seeds=())
    with pytest.raises(ValidationError, match="need a model trained on the labels"):
        ScoreTraining(recipe=TrainRecipe(epochs=2, lr=0.1, objective="simclr"), seeds=(0,))
    with pytest.raises(ConfigError, match="at least 2 epochs"):
        forgetting_scores(tiny, config(epochs=1))
    with pytest.raises(ModelError, match="unknown model"):
        el2n_scores(tiny, ScoreTraining(model={"name": "vgg"}, recipe=recipe, seeds=(0,)))
    with pytest.raises(DataError, match="one per feature row"):
        moderate_scores(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(DataError, match="NaN"):
        moderate_scores(np.array([[np.nan], [0.0]]), np.array([0, 1]))
    with pytest.raises(DataError, match="numeric array"):
        moderate_scores(np.zeros(3), np.array([0, 1, 2]))


def test_config_round_trips_as_json():
    saved = config(epochs=2).model_dump_json()
    assert ScoreTraining.model_validate_json(saved) == config(epochs=2)
