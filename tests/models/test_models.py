"""Model zoo: shapes, parameter groups, seeded initialisation, errors."""

import pytest
import torch

from transfer_influence.errors import ModelError
from transfer_influence.models import (
    TransferModel,
    build_model,
    model_options,
    reset_parameters,
)

CASES = [
    ("mlp", {"width": 32, "depth": 2}, 32),
    ("small_cnn", {"width": 8}, 32),
    ("resnet18", {"width": 4}, 32),
]


@pytest.mark.parametrize(("name", "options", "feature_dim"), CASES)
def test_shapes_and_groups(name, options, feature_dim):
    model = build_model(name, in_channels=3, image_size=16, num_classes=7, **options)
    assert isinstance(model, TransferModel)
    x = torch.randn(5, 3, 16, 16)
    assert model.feature_dim == feature_dim
    assert model.features(x).shape == (5, feature_dim)
    assert model(x).shape == (5, 7)
    assert model.num_classes == 7
    names = [n for n, _ in model.named_parameters()]
    assert all(n.startswith(("backbone.", "head.")) for n in names)
    assert {"head.weight", "head.bias"} <= set(names)


def test_functional_call_by_group():
    model = build_model("small_cnn", in_channels=1, image_size=8, num_classes=3, width=4)
    x = torch.randn(2, 1, 8, 8)
    params = dict(model.named_parameters())
    backbone = {k.removeprefix("backbone."): v for k, v in params.items() if k.startswith("backbone.")}
    features = torch.func.functional_call(model.backbone, backbone, (x,))
    torch.testing.assert_close(features, model.features(x))


def test_seeded_reset_is_reproducible():
    def make(seed):
        model = build_model("resnet18", in_channels=1, image_size=8, num_classes=3, width=4)
        reset_parameters(model, torch.Generator().manual_seed(seed))
        return torch.cat([p.flatten() for p in model.parameters()])

    torch.testing.assert_close(make(1), make(1), rtol=0, atol=0)
    assert not torch.equal(make(1), make(2))


def test_replace_head():
    model = build_model("mlp", in_channels=1, image_size=4, num_classes=3, width=8, depth=1)
    model.replace_head(5, torch.Generator().manual_seed(0))
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ModelError, match="mlp, resnet18, small_cnn"):
        build_model("vgg", in_channels=1, image_size=8, num_classes=2)


def test_bad_options():
    with pytest.raises(ModelError, match="width"):
        build_model("mlp", in_channels=1, image_size=8, num_classes=2, widht=3)
    with pytest.raises(ModelError, match="positive integer"):
        build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, width=0)
    assert model_options("mlp") == {"width": 512, "depth": 2}
