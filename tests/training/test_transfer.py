"""Transfer paths: fixed-feature heads and fine-tuning, reduced to the four stored numbers."""

import numpy as np
import pytest
import torch

from transfer_influence.data.images import LabeledImages
from transfer_influence.errors import TrainingError
from transfer_influence.models import build_model, reset_parameters
from transfer_influence.outputs import TargetOutputs
from transfer_influence.training import (
    Normalization,
    TrainRecipe,
    cross_entropy_objective,
    extract_features,
    finetune_group,
    fit_linear_heads,
    predict_logits,
    register_objective,
    transfer,
    transfer_fixed_feature,
)

NORM = Normalization(mean=(0.4,), std=(0.3,))


def target_split(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 80, (n, 1, 8, 8), dtype=np.uint8)
    images[np.arange(n), 0, 2 * labels, 2 * labels] = 255  # class-dependent bright pixel
    return LabeledImages(images, labels, ("x", "y", "z"), f"target{seed}")


@pytest.fixture(scope="module")
def models():
    out = []
    for seed in (0, 1):
        model = build_model("small_cnn", in_channels=1, image_size=8, num_classes=5, width=4)
        reset_parameters(model, torch.Generator().manual_seed(seed))
        out.append(model)
    return out


def test_extract_features_shape_and_batching(models):
    data = target_split(30, 0)
    full = extract_features(models, data, normalization=NORM)
    small_batches = extract_features(models, data, normalization=NORM, batch_size=7)
    assert full.shape == (2, 30, models[0].feature_dim)
    torch.testing.assert_close(full, small_batches)


def test_fixed_feature_outputs(models):
    train, test = target_split(60, 1), target_split(24, 2)
    outputs = transfer_fixed_feature(models, train, test, l2=1e-3, normalization=NORM)
    assert isinstance(outputs, TargetOutputs) and outputs.shape == (2, 24)
    # Same as fitting the heads by hand on the extracted features.
    feats = extract_features(models, train, normalization=NORM).double()
    w, b = fit_linear_heads(feats, torch.as_tensor(np.array(train.labels)), 3, l2=1e-3)
    test_feats = extract_features(models, test, normalization=NORM).double()
    logits = torch.baddbmm(b.unsqueeze(1), test_feats, w.transpose(1, 2))
    np.testing.assert_array_equal(outputs.predicted, logits.argmax(2).numpy())
    # softmax of the full logits equals exp(correct - logsumexp) from the stored numbers.
    probs = torch.softmax(logits, dim=2).gather(2, torch.as_tensor(np.array(test.labels)).view(1, -1, 1)
                                                .expand(2, -1, 1)).squeeze(2)
    np.testing.assert_allclose(outputs.variant("prob_correct"), probs.numpy(), atol=1e-5)


def test_finetune_group(models):
    train, test = target_split(60, 3), target_split(24, 4)
    recipe = TrainRecipe(epochs=3, batch_size=16, lr=0.05, normalization=NORM)
    before = [p.clone() for p in models[0].parameters()]
    outputs = finetune_group(models, train, test, recipe, seeds=[5, 6], strategy="vmap")
    assert outputs.shape == (2, 24)
    assert all(torch.equal(a, b) for a, b in zip(before, models[0].parameters()))
    alone = finetune_group(models[1:], train, test, recipe, seeds=[6], strategy="loop")
    np.testing.assert_allclose(outputs.correct_logit[1:], alone.correct_logit, atol=1e-5)


def _doubled_cross_entropy(features, head, x, y):
    """A user's labelled objective: twice the cross-entropy (under SGD with momentum and no
    weight decay, exactly cross-entropy at twice the learning rate)."""
    return 2 * cross_entropy_objective()(features, head, x, y)


class _LabelFree:
    """A user's self-supervised objective: declares that it ignores the labels."""

    uses_labels = False

    def __call__(self, features, head, x, y):
        return features(x).square().mean()


def test_finetuning_takes_any_labelled_objective_and_refuses_label_free_ones(models,
                                                                             clean_registry):
    """Fine-tuning asks the objective whether it learns from the labels (``uses_labels``), not
    whether it is called cross_entropy: a user's labelled objective trains, by name or given
    directly, and a label-free one is refused by name and given directly alike."""
    register_objective("doubled_ce", lambda recipe: _doubled_cross_entropy)
    register_objective("label_free", lambda recipe: _LabelFree())
    train, test = target_split(60, 3), target_split(24, 4)
    recipe = TrainRecipe(epochs=2, batch_size=16, lr=0.05, weight_decay=0.0, normalization=NORM)
    plain = finetune_group(models[:1], train, test, recipe, seeds=[5], strategy="loop")
    halved = recipe.model_copy(update={"lr": 0.025})
    by_name = finetune_group(models[:1], train, test,
                             halved.model_copy(update={"objective": "doubled_ce"}), seeds=[5],
                             strategy="loop")
    given = finetune_group(models[:1], train, test, halved, seeds=[5], strategy="loop",
                           objective=_doubled_cross_entropy)
    np.testing.assert_allclose(by_name.correct_logit, plain.correct_logit, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(by_name.correct_logit, given.correct_logit)
    with pytest.raises(TrainingError, match="objective 'label_free' declares uses_labels = False"):
        finetune_group(models[:1], train, test, recipe.model_copy(update={"objective":
                                                                          "label_free"}),
                       seeds=[5])
    with pytest.raises(TrainingError, match="the given objective declares uses_labels = False"):
        finetune_group(models[:1], train, test, recipe, seeds=[5], objective=_LabelFree())


def _tuned_backbone_drift(models, monkeypatch, **options) -> float:
    """How far full fine-tuning moves model 0's backbone (squared distance from pretrained)."""
    tuned = []
    original = transfer.predict_logits
    monkeypatch.setattr(transfer, "predict_logits",
                        lambda ms, *a, **k: tuned.extend(ms) or original(ms, *a, **k))
    recipe = TrainRecipe(epochs=3, batch_size=16, lr=0.05, normalization=NORM)
    finetune_group(models[:1], target_split(60, 3), target_split(24, 4), recipe, seeds=[5],
                   **options)
    return sum(float((a - b).detach().square().sum()) for a, b in
               zip(tuned[0].backbone.parameters(), models[0].backbone.parameters()))


def test_proximal_finetuning_ties_the_backbone_to_the_pretrained_one(models, monkeypatch):
    free = _tuned_backbone_drift(models, monkeypatch, strategy="loop")
    assert free > 0
    assert _tuned_backbone_drift(models, monkeypatch, proximal=1e-3) > 0.3 * free
    assert _tuned_backbone_drift(models, monkeypatch, proximal=5.0) < 0.05 * free
    with pytest.raises(TrainingError, match="strategy 'loop'"):
        _tuned_backbone_drift(models, monkeypatch, proximal=1.0, strategy="vmap")


def test_predict_logits_shape(models):
    assert predict_logits(models, target_split(10, 5)).shape == (2, 10, 5)


def test_mismatched_classes(models):
    train = target_split(12, 1)
    other = LabeledImages(train.images, train.labels, ("p", "q", "r"))
    with pytest.raises(TrainingError, match="class names"):
        transfer_fixed_feature(models, train, other, l2=1e-3)
