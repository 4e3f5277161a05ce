"""Batch transforms: float conversion, normalisation, seeded crops and flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transfer_influence.data import (
    Augment,
    LabeledImages,
    channel_stats,
    normalize,
    random_crop,
    random_hflip,
    to_float,
)
from transfer_influence.errors import DataError


def batch() -> torch.Tensor:
    return torch.rand(16, 3, 6, 5, generator=torch.Generator().manual_seed(0))


def test_to_float_and_normalize():
    x = to_float(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert x.dtype == torch.float32 and x.tolist() == [[[[0.0, 1.0]]]]
    y = normalize(torch.ones(2, 2, 3, 3), [0.5, 1.0], [0.25, 1.0])
    assert torch.allclose(y[:, 0], torch.tensor(2.0)) and torch.allclose(y[:, 1], torch.tensor(0.0))
    with pytest.raises(DataError, match="one value per channel"):
        normalize(torch.ones(2, 2, 3, 3), [0.5], [1.0])
    with pytest.raises(DataError, match="expects uint8"):
        to_float(torch.ones(1))


def test_random_crop_shapes_identity_and_seeding():
    x = batch()
    assert random_crop(x, 0, torch.Generator()) is x
    a = random_crop(x, 2, torch.Generator().manual_seed(3))
    b = random_crop(x, 2, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, random_crop(x, 2, torch.Generator().manual_seed(4)))


def test_random_crop_is_a_shift_with_zero_fill():
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5).repeat(64, 1, 1, 1)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    for image in out[:, 0]:
        nonzero = image[image > 0]
        # every crop keeps a contiguous 4x4..5x5 block of the original, shifted by <= 1 pixel
        assert nonzero.numel() in (16, 20, 25)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 9  # all 3x3 offsets occur


def test_random_hflip_twice_is_identity_and_flips_some():
    x = batch()
    once = random_hflip(x, torch.Generator().manual_seed(7))
    twice = random_hflip(once, torch.Generator().manual_seed(7))
    assert torch.equal(twice, x)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(once, x)]
    assert 0 < sum(flipped) < len(x)


def test_augment():
    x = batch()
    assert torch.equal(Augment()(x, torch.Generator()), x)
    aug = Augment(crop_padding=2, hflip=True)
    assert torch.equal(
        aug(x, torch.Generator().manual_seed(1)), aug(x, torch.Generator().manual_seed(1))
    )


def test_channel_stats():
    images = np.stack([np.full((2, 3, 3), v, np.uint8) for v in (0, 255)])
    images[:, 1] = 51
    mean, std = channel_stats(LabeledImages(images, [0, 0], ("a",)))
    np.testing.assert_allclose(mean, [0.5, 0.2])
    np.testing.assert_allclose(std, [0.5, 0.0], atol=1e-6)
