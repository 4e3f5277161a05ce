"""Leakage detection: planted copies of target test images are found by example-level influence."""

import numpy as np
import pytest
import torch

from transfer_influence.analysis import find_leakage, pixel_similarity, recall_at_k
from transfer_influence.data import planted_transfer_problem
from transfer_influence.data.images import LabeledImages
from transfer_influence.errors import DataError
from transfer_influence.estimators import difference_in_means
from transfer_influence.recipe import TrainRecipe
from transfer_influence.sweep.masks import subset_masks
from transfer_influence.training import pretrain_group, transfer_fixed_feature

MODELS = 1024
K = 5


def _leaky_sweep(seed: int):
    """An example-level sweep whose source contains copies of 4 target test images of the
    planted class t, labelled with the source class that resembles t (as a web-scraped
    pretraining set would contain a test photo under its matching label). The planted shortcut
    cue is switched off: it is a class-level effect this test does not need."""
    data, truth = planted_transfer_problem(seed, n_per_class=20, cue=0.0)
    source, test = data.source, data.target_test
    leaked = np.flatnonzero(np.asarray(test.labels) == truth.target_class)[:4]
    leaky = LabeledImages(np.concatenate([source.images, test.images[leaked]]),
                          np.concatenate([source.labels,
                                          np.full(leaked.size, truth.helpful_source_class)]),
                          source.class_names, "leaky-source")
    masks = subset_masks(seed, np.arange(MODELS), len(leaky), 0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread overhead dominates
    try:
        models = pretrain_group("mlp", leaky, masks, unit="example", seeds=list(range(MODELS)),
                                recipe=TrainRecipe(epochs=40, lr=0.05, batch_size=32),
                                model_options={"width": 16, "depth": 1})
        outputs = transfer_fixed_feature(models, data.target_train, test, l2=1e-2)
    finally:
        torch.set_num_threads(threads)
    # The margin does not saturate like a probability near 1, so a copy's effect on an already
    # well-classified example still shows.
    influence = difference_in_means(masks, outputs.variant("margin"))
    planted = {int(t): len(source) + i for i, t in enumerate(leaked)}
    return influence, leaky, test, planted


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_copies_are_found_among_the_top_candidates(seed):
    influence, leaky, test, planted = _leaky_sweep(seed)
    names = [f"{leaky.class_names[c]}#{i}" for i, c in enumerate(leaky.labels)]
    found = find_leakage(influence, names, test.labels, test.class_names, k=K,
                         targets=list(planted), source=leaky, target_images=test)
    recall = recall_at_k(found, planted)
    print(f"seed {seed}: recall@{K} of {len(planted)} planted leaks among {len(leaky)} source"
          f" examples = {recall:.2f}")
    assert recall >= 0.75
    for item in found:  # the pixel check confirms the copies
        copy = [c for c in item.leaks if c.source_index == planted[item.target_index]]
        others = [c.similarity for c in item.leaks if c.source_index != planted[item.target_index]]
        if copy:
            assert copy[0].similarity == pytest.approx(1.0)
            assert max(others) < 0.99


def test_pixel_similarity_is_one_for_copies_and_invariant_to_contrast():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (1, 6, 6))
    images = np.stack([reference, reference * 0.5 + 20, rng.integers(0, 255, (1, 6, 6))])
    similarity = pixel_similarity(images, reference)
    assert similarity[:2] == pytest.approx([1.0, 1.0])
    assert abs(similarity[2]) < 0.6
    with pytest.raises(DataError, match="resize"):
        pixel_similarity(images[:, :, :3], reference)


def test_find_leakage_lists_extremes_and_rejects_bad_input():
    influence = np.array([[0.5, -0.1], [-0.4, 0.2], [0.1, 0.3], [0.0, -0.6]])
    found = find_leakage(influence, list("abcd"), np.array([0, 1]), ["x", "y"], k=2)
    assert [c.source_name for c in found[0].leaks] == ["a", "c"]
    assert [c.source_name for c in found[0].misleading] == ["b", "d"]
    assert [c.source_name for c in found[1].misleading] == ["d", "a"]
    with pytest.raises(DataError, match="k must lie"):
        find_leakage(influence, list("abcd"), np.array([0, 1]), ["x", "y"], k=5)
    with pytest.raises(DataError, match="example-level sweep"):
        source = LabeledImages(np.zeros((3, 1, 4, 4), np.uint8), np.array([0, 1, 1]),
                               ("p", "q"), "s")
        find_leakage(influence, list("abcd"), np.array([0, 1]), ["x", "y"], k=2, source=source,
                     target_images=source)
