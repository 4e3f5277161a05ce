"""Model zoo and registry: shapes, parameter groups, seeded initialisation, user models, errors."""

import sys
from typing import Literal

import pytest
import torch
from torch import nn

from transfer_influence.errors import ModelError
from transfer_influence.models import (
    TransferModel,
    build_model,
    model_options,
    register_model,
    registered_models,
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
    with pytest.raises(ModelError, match="mlp, small_cnn, resnet18"):
        build_model("vgg", in_channels=1, image_size=8, num_classes=2)


def test_bad_options():
    with pytest.raises(ModelError, match="width"):
        build_model("mlp", in_channels=1, image_size=8, num_classes=2, widht=3)
    with pytest.raises(ModelError, match="option width = 0 is invalid: .*greater than 0"):
        build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, width=0)
    with pytest.raises(ModelError, match="option depth = 1.5 is invalid"):
        build_model("mlp", in_channels=1, image_size=8, num_classes=2, depth=1.5)
    with pytest.raises(ModelError, match="option width = '8' is invalid"):
        build_model("mlp", in_channels=1, image_size=8, num_classes=2, width="8")
    with pytest.raises(ModelError, match="num_classes must be a positive integer"):
        build_model("mlp", in_channels=1, image_size=8, num_classes=0)
    with pytest.raises(ModelError, match="at least 4x4"):
        build_model("small_cnn", in_channels=1, image_size=2, num_classes=2)
    assert model_options("mlp") == {"width": 512, "depth": 2, "activation": "relu"}


def test_small_cnn_activation_and_pooling_options():
    def layers(**options) -> set[type]:
        model = build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, width=2,
                            **options)
        return {type(m) for m in model.backbone}

    assert {nn.ReLU, nn.MaxPool2d} <= layers()  # the defaults are the original network
    assert not {nn.Softplus, nn.Tanh, nn.AvgPool2d} & layers()
    smooth = layers(activation="tanh", pool="avg")
    assert {nn.Tanh, nn.AvgPool2d} <= smooth and not {nn.ReLU, nn.MaxPool2d} & smooth
    assert nn.Softplus in layers(activation="softplus")
    with pytest.raises(ModelError, match="option activation = 'swish' is invalid"):
        layers(activation="swish")


def test_mlp_activation_option():
    def activations(**options) -> list[type]:
        model = build_model("mlp", in_channels=1, image_size=4, num_classes=2, width=3, depth=2,
                            **options)
        return [type(m) for m in model.backbone if not isinstance(m, (nn.Flatten, nn.Linear))]

    assert activations() == [nn.ReLU, nn.ReLU]  # the default is the original network
    assert activations(activation="tanh") == [nn.Tanh, nn.Tanh]
    with pytest.raises(ModelError, match="option activation = 'swish' is invalid"):
        activations(activation="swish")


class Scale(nn.Module):
    """A layer of its own with a parameter and reset_parameters (draws from the global RNG)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale)

    def forward(self, x):
        return x * self.scale


class NoReset(nn.Module):
    """Owns a parameter but has no reset_parameters."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x + self.offset


def custom_model(in_channels, image_size, num_classes, *, width: int = 6, dropout: float = 0.1,
                 activation: Literal["relu", "tanh"] = "relu", extra: list | None = None):
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]()
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, width),
                             nn.LayerNorm(width), Scale(width), act, nn.Dropout(dropout))
    return TransferModel(backbone, nn.Linear(width, num_classes), width)


def test_register_model_and_options_of_any_json_type(clean_registry):
    register_model("custom", custom_model)
    assert "custom" in registered_models() and {"mlp", "small_cnn", "resnet18"} <= set(
        registered_models())
    model = build_model("custom", in_channels=1, image_size=4, num_classes=3, width=5,
                        dropout=0.5, activation="tanh", extra=[1, "a", {"b": 2.5}])
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    assert model.backbone[5].p == 0.5 and isinstance(model.backbone[4], nn.Tanh)
    assert model_options("custom")["activation"] == "relu"
    with pytest.raises(ModelError, match="option activation = 'gelu' is invalid"):
        build_model("custom", in_channels=1, image_size=4, num_classes=3, activation="gelu")
    with pytest.raises(ModelError, match="option dropout = 'high' is invalid"):
        build_model("custom", in_channels=1, image_size=4, num_classes=3, dropout="high")
    with pytest.raises(ModelError, match="no option.*depth.*valid: width"):
        build_model("custom", in_channels=1, image_size=4, num_classes=3, depth=2)
    with pytest.raises(ModelError, match="already registered; pass replace=True"):
        register_model("mlp", custom_model)
    with pytest.raises(ModelError, match="without ':'"):
        register_model("a:b", custom_model)
    register_model("mlp", custom_model, replace=True)
    assert isinstance(build_model("mlp", in_channels=1, image_size=4, num_classes=3).backbone[3],
                      Scale)


def test_builder_with_var_keywords_takes_any_option(clean_registry):
    def flexible(in_channels, image_size, num_classes, **options):
        assert options == {"anything": [1, 2], "rate": 0.5}
        return custom_model(in_channels, image_size, num_classes)

    register_model("flexible", flexible)
    build_model("flexible", in_channels=1, image_size=4, num_classes=2, anything=[1, 2], rate=0.5)


def test_model_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "user_models_for_test.py").write_text(
        "from tests.models.test_models import custom_model\n"
        "def wrong(in_channels, image_size, num_classes):\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("user_models_for_test:custom_model", in_channels=1, image_size=4,
                        num_classes=3, dropout=0.0)
    assert isinstance(model, TransferModel)
    with pytest.raises(ModelError, match="returned 'int', not a TransferModel"):
        build_model("user_models_for_test:wrong", in_channels=1, image_size=4, num_classes=3)
    with pytest.raises(ModelError, match="has no function 'missing'"):
        build_model("user_models_for_test:missing", in_channels=1, image_size=4, num_classes=3)
    with pytest.raises(ModelError, match="cannot import module 'no_such_module_x'.*PYTHONPATH"):
        build_model("no_such_module_x:f", in_channels=1, image_size=4, num_classes=3)
    with pytest.raises(ModelError, match="unknown model 'vgg'.*register_model"):
        build_model("vgg", in_channels=1, image_size=4, num_classes=3)
    sys.modules.pop("user_models_for_test", None)


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_custom_layer_initialised_from_the_generator_only():
    """A layer with its own reset_parameters is initialised from the model's generator: the same
    seed gives the same parameters whatever the global RNG did before, different seeds differ,
    and the caller's global RNG state is left untouched."""
    def make(seed, global_seed):
        torch.manual_seed(global_seed)
        model = custom_model(1, 4, 3)
        state = torch.get_rng_state()
        reset_parameters(model, torch.Generator().manual_seed(seed))
        assert torch.equal(torch.get_rng_state(), state)
        return model

    a, b, c = make(1, 100), make(1, 200), make(2, 100)
    assert torch.equal(_flat(a), _flat(b))
    assert not torch.equal(a.backbone[3].scale, c.backbone[3].scale)
    # the custom draw really comes from the seed: not the constructor's global-RNG values
    torch.manual_seed(100)
    assert not torch.equal(custom_model(1, 4, 3).backbone[3].scale, a.backbone[3].scale)


def test_layer_without_reset_parameters_is_an_error():
    model = TransferModel(nn.Sequential(nn.Flatten(), NoReset(4)), nn.Linear(4, 2), 4)
    with pytest.raises(ModelError, match=r"layer 'backbone.1' \(NoReset\) owns parameters but has"
                                         r" no reset_parameters\(\)"):
        reset_parameters(model, torch.Generator().manual_seed(0))
