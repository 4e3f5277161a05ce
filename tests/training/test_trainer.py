"""Group trainer: group == alone for every strategy, reproducibility, SGD semantics, errors."""

import contextlib
import threading

import numpy as np
import pytest
import torch

from transfer_influence.data.images import LabeledImages
from transfer_influence.errors import TrainingError
from transfer_influence.models import TransferModel, build_model
from transfer_influence.training import (
    DivergenceLog,
    Normalization,
    TrainRecipe,
    choose_strategy,
    conv_layout,
    conv_numerics,
    fit_models,
    model_generator,
    one_intra_op_thread,
    pretrain_group,
    random_layers,
    subset_indices,
    train_group,
    trainer,
)

from ..sweep.conftest import overflow_saturated_inputs

RECIPE = TrainRecipe(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5, crop_padding=1,
                     hflip=True, label_smoothing=0.1,
                     normalization=Normalization(mean=(0.5,), std=(0.25,)))
# Class sizes differ, so the three models below see subsets of different sizes and take
# different numbers of steps.
MASKS = np.array([[1, 1, 0, 1, 1], [1, 0, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=bool)
SEEDS = [11, 12, 13]


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [40, 25, 30, 50, 35])
    images = rng.integers(0, 256, (len(labels), 1, 8, 8), dtype=np.uint8)
    return LabeledImages(images, labels, tuple("abcde"), "toy")


def builder(name):
    width = {"mlp": 16, "small_cnn": 4}[name]
    return lambda: build_model(name, in_channels=1, image_size=8, num_classes=5, width=width)


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_subset_sizes_differ(source):
    sizes = [len(s) for s in subset_indices(source, MASKS, "class")]
    assert sizes == [150, 70, 140]
    assert len({RECIPE.total_steps(n) for n in sizes}) == 3


@pytest.mark.parametrize(("name", "strategy"), [("mlp", "loop"), ("mlp", "vmap"), ("mlp", "bmm"),
                                               ("small_cnn", "loop"), ("small_cnn", "vmap"),
                                               ("small_cnn", "threads")])
def test_group_equals_alone(source, name, strategy):
    group = train_group(builder(name), source, MASKS, unit="class", seeds=SEEDS, recipe=RECIPE,
                        strategy=strategy)
    for g in range(len(SEEDS)):
        alone = train_group(builder(name), source, MASKS[g:g + 1], unit="class",
                            seeds=SEEDS[g:g + 1], recipe=RECIPE, strategy="loop")[0]
        torch.testing.assert_close(flat(group[g]), flat(alone), rtol=1e-5, atol=1e-5)


def test_cnn_group_trainer_equals_plain_nchw_loop(source, monkeypatch):
    """The group trainer's CNN path (channels-last convolutions) trains the models a plain NCHW
    loop trains, to float tolerance; and a CNN's result is the same bit for bit whichever group
    it trains in, so stores do not depend on the group size."""
    kwargs = {"unit": "class", "recipe": RECIPE, "strategy": "loop"}
    group = train_group(builder("small_cnn"), source, MASKS, seeds=SEEDS, **kwargs)
    for g in range(len(SEEDS)):
        alone = train_group(builder("small_cnn"), source, MASKS[g:g + 1], seeds=SEEDS[g:g + 1],
                            **kwargs)[0]
        assert torch.equal(flat(group[g]), flat(alone))
    layouts = []

    def nchw(model):  # the plain loop: convolutions left in PyTorch's default NCHW layout
        layouts.append(model.backbone[0].weight.is_contiguous())
        return contextlib.nullcontext()

    monkeypatch.setattr(trainer, "conv_layout", nchw)
    plain = train_group(builder("small_cnn"), source, MASKS, seeds=SEEDS, **kwargs)
    assert layouts == [True] * len(SEEDS)
    for a, b in zip(group, plain):
        assert not torch.equal(flat(a), flat(b))  # the layout is a real numeric change...
        torch.testing.assert_close(flat(a), flat(b), rtol=1e-4, atol=1e-5)  # ...at rounding


def fit_threads():
    return [t for t in threading.enumerate() if t.name.startswith("transfer-influence-fit")]


@pytest.fixture
def two_threads():
    """The caller's intra-op threads set to 2 (the threads strategy's pool size), restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threaded_cnn_is_bit_identical_to_alone_and_to_the_loop(source, two_threads):
    """A CNN trained in a threaded group equals the same CNN trained alone, in the loop, and in
    a pool of one worker, bit for bit (each trains on one intra-op thread whatever the pool); the
    caller's thread count is restored and no worker thread outlives the call."""
    kwargs = {"unit": "class", "recipe": RECIPE}
    group = train_group(builder("small_cnn"), source, MASKS, seeds=SEEDS, strategy="threads",
                        **kwargs)
    assert torch.get_num_threads() == 2 and not fit_threads()
    looped = train_group(builder("small_cnn"), source, MASKS, seeds=SEEDS, strategy="loop",
                         **kwargs)
    torch.set_num_threads(1)  # a pool of one worker
    one_worker = train_group(builder("small_cnn"), source, MASKS, seeds=SEEDS,
                             strategy="threads", **kwargs)
    assert torch.get_num_threads() == 1
    for g in range(len(SEEDS)):
        alone = train_group(builder("small_cnn"), source, MASKS[g:g + 1], seeds=SEEDS[g:g + 1],
                            strategy="threads", **kwargs)[0]
        for other in (alone, looped[g], one_worker[g]):
            assert torch.equal(flat(group[g]), flat(other))
    assert not torch.equal(flat(group[0]), flat(group[1]))


def test_one_intra_op_thread_changes_cnn_numerics(source, two_threads, monkeypatch):
    """CNNs on the CPU train on one intra-op thread (what ``conv_threads`` records); on the
    caller's two threads the same CNN agrees to float rounding (oneDNN may sum its convolution
    gradients in another order, so the two are never mixed in a store: bit equality between
    them is hardware-dependent and not asserted); MLPs and other devices are left alone."""
    kwargs = {"unit": "class", "recipe": RECIPE, "seeds": SEEDS[:1], "strategy": "loop"}
    one = train_group(builder("small_cnn"), source, MASKS[:1], **kwargs)[0]
    monkeypatch.setattr(trainer, "one_intra_op_thread", lambda model, device:
                        contextlib.nullcontext())
    two = train_group(builder("small_cnn"), source, MASKS[:1], **kwargs)[0]
    torch.testing.assert_close(flat(one), flat(two), rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    for model, device, inside in [(builder("small_cnn")(), "cpu", 1), (builder("mlp")(), "cpu", 2),
                                  (builder("small_cnn")(), "meta", 2)]:
        with one_intra_op_thread(model, torch.device(device)):
            assert torch.get_num_threads() == inside
        assert torch.get_num_threads() == 2


def test_threads_propagate_errors_and_show_progress(source, two_threads, monkeypatch, capsys):
    """A model failing in a worker raises its error in the caller (the models not yet started
    are cancelled, none is left running); every model's progress bar is drawn."""
    started = []
    original = trainer._fit_loop

    def failing(model, stream, batcher, n, recipe, objective, progress, index, *args, **kw):
        started.append(index)
        if index == 0:
            raise RuntimeError("planted failure in model 0")
        return original(model, stream, batcher, n, recipe, objective, progress, index, *args,
                        **kw)

    monkeypatch.setattr(trainer, "_fit_loop", failing)
    masks = np.repeat(MASKS[:1], 20, axis=0)
    with pytest.raises(RuntimeError, match="planted failure in model 0"):
        train_group(builder("small_cnn"), source, masks, unit="class", seeds=range(20),
                    recipe=RECIPE, strategy="threads")
    assert 0 in started and len(started) < 20 and not fit_threads()
    assert torch.get_num_threads() == 2
    monkeypatch.undo()
    train_group(builder("small_cnn"), source, MASKS, unit="class", seeds=SEEDS, recipe=RECIPE,
                strategy="threads", progress=True)
    err = capsys.readouterr().err
    assert all(f"model {g}: 100%" in err for g in range(len(SEEDS)))


def test_conv_layout_is_channels_last_inside_and_restored():
    cnn = builder("small_cnn")()
    before = flat(cnn)
    with conv_layout(cnn):
        convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
        assert not any(m.weight.is_contiguous() for m in convs if m.in_channels > 1)
    assert all(p.is_contiguous() for p in cnn.parameters())
    assert torch.equal(flat(cnn), before)
    assert conv_numerics(cnn) == {"conv_layout": "channels_last", "conv_threads": "1"}
    assert conv_numerics(builder("mlp")()) is None

    class Scale(torch.nn.Module):  # a user's layer, which may view its input as NCHW
        def forward(self, x):
            return x.view(x.shape[0], -1).view(x.shape)

    cnn.backbone.insert(1, Scale())
    assert conv_numerics(cnn) is None
    with conv_layout(cnn):
        assert all(p.is_contiguous() for p in cnn.parameters())
        cnn(torch.zeros(2, 1, 8, 8))


def test_bmm_matches_loop_without_smoothing_at_depth_two(source):
    recipe = RECIPE.model_copy(update={"label_smoothing": 0.0})

    def build():
        return build_model("mlp", in_channels=1, image_size=8, num_classes=5, width=16, depth=2)

    kwargs = {"unit": "class", "seeds": SEEDS[:2], "recipe": recipe}
    looped = train_group(build, source, MASKS[:2], strategy="loop", **kwargs)
    batched = train_group(build, source, MASKS[:2], strategy="bmm", **kwargs)
    for a, b in zip(looped, batched):
        torch.testing.assert_close(flat(a), flat(b), rtol=1e-5, atol=1e-5)


def test_vmap_matches_torch_sgd_without_momentum_or_decay(source):
    recipe = RECIPE.model_copy(update={"momentum": 0.0, "weight_decay": 0.0})
    kwargs = {"unit": "class", "seeds": SEEDS[:2], "recipe": recipe}
    looped = train_group(builder("mlp"), source, MASKS[:2], strategy="loop", **kwargs)
    vmapped = train_group(builder("mlp"), source, MASKS[:2], strategy="vmap", **kwargs)
    for a, b in zip(looped, vmapped):
        torch.testing.assert_close(flat(a), flat(b), rtol=1e-5, atol=1e-5)


def test_example_masks_and_reproducibility(source):
    rng = np.random.default_rng(1)
    masks = rng.random((2, len(source))) < 0.5

    def run(seeds):
        return train_group(builder("mlp"), source, masks, unit="example", seeds=seeds,
                           recipe=RECIPE)

    first, again, other = run([1, 2]), run([1, 2]), run([3, 2])
    assert torch.equal(flat(first[0]), flat(again[0]))
    assert not torch.equal(flat(first[0]), flat(other[0]))
    assert torch.equal(flat(first[1]), flat(other[1]))


def test_result_independent_of_global_rng(source):
    def run():
        return train_group(builder("mlp"), source, MASKS[:1], unit="class", seeds=[0],
                           recipe=RECIPE)[0]

    torch.manual_seed(0)
    a = run()
    torch.manual_seed(123)
    assert torch.equal(flat(a), flat(run()))


def test_training_reduces_loss_on_learnable_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 60)
    images = rng.integers(0, 60, (180, 1, 8, 8), dtype=np.uint8)
    images[np.arange(180), 0, labels, 0] = 255  # a bright pixel whose row tells the class
    data = LabeledImages(images, labels, ("a", "b", "c"))
    recipe = TrainRecipe(epochs=15, batch_size=32, lr=0.1, schedule="triangular")
    model = pretrain_group("mlp", data, np.ones((1, 3), bool), unit="class", seeds=[0],
                           recipe=recipe, model_options={"width": 32, "depth": 1})[0]
    x = torch.as_tensor(images, dtype=torch.float32) / 255
    accuracy = (model(x).argmax(1).numpy() == labels).mean()
    assert accuracy > 0.9


def test_empty_mask_raises(source):
    masks = MASKS.copy()
    masks[1] = False
    with pytest.raises(TrainingError, match="model 1 .* no source class"):
        train_group(builder("mlp"), source, masks, unit="class", seeds=SEEDS, recipe=RECIPE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masks": MASKS[:, :4]}, "bool array"),
        ({"masks": MASKS.astype(int)}, "bool array"),
        ({"seeds": [1]}, "one per model"),
        ({"unit": "pixel"}, "unit must be"),
        ({"strategy": "magic"}, "strategy must be"),
    ],
)
def test_bad_inputs(source, kwargs, message):
    args = {"masks": MASKS, "unit": "class", "seeds": SEEDS, "strategy": "auto"} | kwargs
    with pytest.raises(TrainingError, match=message):
        train_group(builder("mlp"), source, args["masks"], unit=args["unit"], seeds=args["seeds"],
                    recipe=RECIPE, strategy=args["strategy"])


def test_divergence_raises(source):
    recipe = RECIPE.model_copy(update={"lr": 1e12, "warmup_epochs": 0.0})
    with pytest.raises(TrainingError, match="diverged"):
        train_group(builder("mlp"), source, MASKS, unit="class", seeds=SEEDS, recipe=recipe,
                    strategy="vmap")


def test_custom_objective_runs_under_both_strategies(source):
    def feature_norm(features, head, x, y):  # label-free, ignores the head
        return (features(x).square().mean() - 1.0).square()

    trained = [
        train_group(builder("small_cnn"), source, MASKS[:2], unit="class", seeds=[1, 2],
                    recipe=RECIPE, objective=feature_norm, strategy=strategy)
        for strategy in ("loop", "vmap")
    ]
    for a, b in zip(*trained):
        torch.testing.assert_close(flat(a), flat(b), rtol=1e-5, atol=1e-5)


def test_auto_strategy():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    small_mlp = build_model("mlp", in_channels=1, image_size=28, num_classes=20, width=32, depth=1)
    big_mlp = build_model("mlp", in_channels=1, image_size=28, num_classes=20, width=512)
    cnn = build_model("small_cnn", in_channels=1, image_size=28, num_classes=20, width=8)
    custom = lambda *a: 0  # any objective other than the default
    assert choose_strategy("auto", cpu, small_mlp) == "bmm"
    assert choose_strategy("auto", cpu, big_mlp) == "bmm"  # hand-batched MLPs win at any size
    assert choose_strategy("auto", cpu, small_mlp, objective=custom) == "vmap"
    with pytest.raises(TrainingError, match="'bmm' needs a plain MLP"):
        choose_strategy("bmm", cpu, cnn)
    assert choose_strategy("auto", cpu, big_mlp, objective=custom) == "loop"
    assert choose_strategy("auto", cpu, cnn) == "threads"
    assert choose_strategy("auto", cuda, cnn) == "vmap"
    with pytest.raises(TrainingError, match="'threads' trains on the CPU, got device 'cuda'"):
        choose_strategy("threads", cuda, cnn)
    assert choose_strategy("vmap", cpu, big_mlp) == "vmap"
    assert choose_strategy("loop", cpu, small_mlp) == "loop"


def test_float_cache_gives_the_same_models(source, monkeypatch):
    """Converting all images once (the CPU cache) and converting each batch after gathering
    (large data, GPUs) feed the model bit-identical inputs."""
    from transfer_influence.training import trainer

    kwargs = {"unit": "class", "seeds": SEEDS, "recipe": RECIPE, "strategy": "bmm"}
    cached = train_group(builder("mlp"), source, MASKS, **kwargs)
    monkeypatch.setattr(trainer, "FLOAT_CACHE_BYTES", 0)
    batcher = trainer._Batcher(source, RECIPE, torch.device("cpu"))
    assert batcher.rows.dtype == torch.uint8  # the per-batch path is the one under test
    per_batch = train_group(builder("mlp"), source, MASKS, **kwargs)
    for a, b in zip(cached, per_batch):
        assert torch.equal(flat(a), flat(b))


class _Shift(torch.nn.Module):
    """A deterministic layer defined outside torch.nn and the package."""

    def forward(self, x):
        return x + 1.0


def dropout_mlp(dropout=0.3):
    def build():
        layers = [torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                  torch.nn.Dropout(dropout)]
        return TransferModel(torch.nn.Sequential(*layers), torch.nn.Linear(16, 5), 16)

    return build


def test_auto_strategy_for_user_models():
    """Random layers (dropout) or layers of unknown classes train in the loop on every device;
    vmap is refused for random layers, allowed (on request) for deterministic unknown ones."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with_dropout = dropout_mlp()()
    unknown = TransferModel(torch.nn.Sequential(torch.nn.Flatten(), _Shift()),
                            torch.nn.Linear(64, 5), 64)
    assert random_layers(with_dropout) == ["backbone.3"]
    assert random_layers(dropout_mlp(0.0)()) == []
    attention = torch.nn.MultiheadAttention(8, 2, dropout=0.1)
    assert random_layers(torch.nn.Sequential(attention)) == ["0"]
    for device in (cpu, cuda):
        assert choose_strategy("auto", device, with_dropout) == "loop"
        assert choose_strategy("auto", device, unknown) == "loop"
    assert choose_strategy("auto", cpu, dropout_mlp(0.0)()) == "vmap"  # plain torch.nn, small
    assert choose_strategy("vmap", cpu, unknown) == "vmap"
    with pytest.raises(TrainingError, match=r"'vmap' cannot train a model with random layers"
                                            r" \(backbone.3\).*use 'loop'"):
        choose_strategy("vmap", cpu, with_dropout)
    with pytest.raises(TrainingError, match="'bmm' needs a plain MLP"):
        choose_strategy("bmm", cpu, with_dropout)
    with pytest.raises(TrainingError, match=r"'threads' cannot train a model with random layers"):
        choose_strategy("threads", cpu, with_dropout)


def test_dropout_is_seeded_per_model(source):
    """Dropout draws come from the model's seed: a model trained in a group equals the same model
    trained alone, whatever the global RNG; the global RNG is left as it was; and the dropout
    is really active (rate 0 trains a different model)."""
    kwargs = {"unit": "class", "recipe": RECIPE}
    torch.manual_seed(0)
    group = train_group(dropout_mlp(), source, MASKS, seeds=SEEDS, **kwargs)
    torch.manual_seed(99)
    alone = train_group(dropout_mlp(), source, MASKS[1:2], seeds=SEEDS[1:2], **kwargs)[0]
    assert torch.equal(flat(group[1]), flat(alone))
    without = train_group(dropout_mlp(0.0), source, MASKS[1:2], seeds=SEEDS[1:2], **kwargs)[0]
    assert not torch.allclose(flat(without), flat(alone), atol=1e-3)
    models = [dropout_mlp()() for _ in SEEDS]  # constructors draw from the global RNG; fit does not
    state = torch.get_rng_state()
    fit_models(models, source, subset_indices(source, MASKS, "class"),
               [model_generator(s) for s in SEEDS], RECIPE)
    assert torch.equal(torch.get_rng_state(), state)
def test_observer_sees_every_presentation_and_needs_the_loop(source):
    seen = []

    def observe(model, step, index, logits):
        seen.append((model, step, index.copy(), logits.shape))

    recipe = RECIPE.model_copy(update={"epochs": 1.0})
    train_group(builder("mlp"), source, MASKS[:2], unit="class", seeds=SEEDS[:2], recipe=recipe,
                strategy="loop", observe=observe)
    for g, n in enumerate((150, 70)):
        steps = [s for m, s, _, _ in seen if m == g]
        assert steps == list(range(recipe.total_steps(n)))
        index = np.concatenate([i for m, _, i, _ in seen if m == g])
        kept = subset_indices(source, MASKS[g:g + 1], "class")[0]
        assert set(index[:n]) == set(kept)  # the first epoch is one permutation of the subset
    assert all(shape == (RECIPE.batch_size, 5) for *_, shape in seen)
    with pytest.raises(TrainingError, match="needs strategy='loop'"):
        train_group(builder("mlp"), source, MASKS[:1], unit="class", seeds=SEEDS[:1],
                    recipe=recipe, observe=observe)


@pytest.mark.parametrize("strategy", ["loop", "vmap", "bmm", "threads"])
def test_divergence_is_recorded_and_spares_the_rest_of_the_group(source, strategy, monkeypatch):
    """Class "c" (kept by models 1 and 2) has saturated images whose inputs are scaled by 1e30:
    those models diverge; with a DivergenceLog they are recorded and model 0 trains exactly as
    alone, without one the group raises."""
    images = source.images.copy()
    images[source.labels == 2] = 255
    planted = LabeledImages(images, source.labels, source.class_names, "planted")
    overflow_saturated_inputs(monkeypatch)
    log = DivergenceLog.empty(3)
    group = train_group(builder("mlp"), planted, MASKS, unit="class", seeds=SEEDS, recipe=RECIPE,
                        strategy=strategy, divergence=log)
    assert log.diverged.tolist() == [False, True, True]
    assert (log.step[1:] >= 0).all() and log.step[0] == -1
    alone = train_group(builder("mlp"), planted, MASKS[:1], unit="class", seeds=SEEDS[:1],
                        recipe=RECIPE, strategy="loop")[0]
    torch.testing.assert_close(flat(group[0]), flat(alone), rtol=1e-5, atol=1e-5)
    with pytest.raises(TrainingError, match=r"training diverged at step \d+: .* \[1(, 2)?\]"):
        train_group(builder("mlp"), planted, MASKS, unit="class", seeds=SEEDS, recipe=RECIPE,
                    strategy=strategy)
