"""The four stored numbers reproduce every output variant computed from full logits."""

import numpy as np
import pytest
import torch

from transfer_influence import DataError, TargetOutputs, output_variant


@pytest.fixture()
def logits_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, 7, generator=gen) * 3.0
    labels = torch.randint(0, 7, (50,), generator=gen)
    return logits, labels


def test_prob_correct_equals_full_softmax(logits_and_labels):
    logits, labels = logits_and_labels
    out = TargetOutputs.from_logits(logits, labels)
    expected = torch.softmax(logits.double(), dim=2)[:, torch.arange(50), labels].numpy()
    np.testing.assert_allclose(out.variant("prob_correct"), expected, rtol=1e-5, atol=1e-7)


def test_other_variants_match_full_logits(logits_and_labels):
    logits, labels = logits_and_labels
    out = TargetOutputs.from_logits(logits, labels)
    full = logits.double().numpy()
    correct = full[:, np.arange(50), labels.numpy()]
    others = full.copy()
    others[:, np.arange(50), labels.numpy()] = -np.inf
    margin = correct - others.max(axis=2)
    prob = np.exp(correct) / np.exp(full).sum(axis=2)
    np.testing.assert_allclose(out.variant("margin"), margin, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.variant("is_correct"), (full.argmax(2) == labels.numpy()))
    # log(1 - p) from float32-stored numbers loses digits as p -> 1 (relative error ~ eps/(1-p)).
    np.testing.assert_allclose(
        out.variant("softmax_margin"), np.log(prob) - np.log1p(-prob), rtol=1e-3, atol=1e-4
    )
    np.testing.assert_array_equal(out.predicted, full.argmax(2))


def test_bad_inputs_are_rejected(logits_and_labels):
    logits, labels = logits_and_labels
    with pytest.raises(DataError, match="labels must lie"):
        TargetOutputs.from_logits(logits, labels + 7)
    with pytest.raises(DataError, match="do not match"):
        TargetOutputs.from_logits(logits, labels[:10])
    out = TargetOutputs.from_logits(logits, labels)
    with pytest.raises(DataError, match="unknown output variant"):
        output_variant("accuracy", out.correct_logit, out.max_other_logit, out.logsumexp,
                       out.predicted)
