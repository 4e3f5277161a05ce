"""LM and FM scores against brute-force counts and scikit-learn's k-means."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from transfer_influence.errors import ConfigError
from transfer_influence.pruning import (
    feature_mapping_scores,
    label_mapping_scores,
    multi_target_scores,
    score_source,
    train_surrogate,
)
from transfer_influence.training import extract_features, predict_logits


def test_lm_counts_equal_a_brute_force_count_of_argmax_predictions(pruning_plan):
    surrogate = train_surrogate(pruning_plan)
    target = pruning_plan.data.target_train
    counts = label_mapping_scores(surrogate, target)
    logits = predict_logits([surrogate.model], target,
                            normalization=surrogate.recipe.normalization)[0]
    brute = np.zeros(pruning_plan.data.source.num_classes)
    for row in logits:
        brute[int(np.argmax(row.numpy()))] += 1
    np.testing.assert_array_equal(counts, brute)
    assert counts.sum() == len(target)


def test_fm_assignment_equals_sklearn_kmeans_predict(pruning_plan):
    surrogate = train_surrogate(pruning_plan)
    source, target = pruning_plan.data.source, pruning_plan.data.target_train
    fm = feature_mapping_scores(surrogate, source, target, clusters=6, seed=3)
    features = extract_features([surrogate.model], source)[0].double().numpy()
    target_features = extract_features([surrogate.model], target)[0].double().numpy()
    kmeans = KMeans(n_clusters=6, n_init=1, max_iter=40, random_state=3).fit(features)
    np.testing.assert_allclose(fm.centroids, kmeans.cluster_centers_)
    np.testing.assert_array_equal(fm.assignment, kmeans.predict(features))
    again = feature_mapping_scores(surrogate, source, target, clusters=6, seed=3)
    np.testing.assert_array_equal(again.centroids, fm.centroids)  # seeded
    nearest = kmeans.predict(target_features)
    np.testing.assert_array_equal(fm.scores, np.bincount(nearest, minlength=6))
    np.testing.assert_array_equal(fm.example_scores(), fm.scores[fm.assignment])


def test_fm_rejects_more_clusters_than_source_examples(pruning_plan):
    surrogate = train_surrogate(pruning_plan)
    with pytest.raises(ConfigError, match=r"K <= the number of source examples \(800\)"):
        feature_mapping_scores(surrogate, pruning_plan.data.source,
                               pruning_plan.data.target_train, clusters=801, seed=0)


def test_multi_target_scores_sum_normalised_counts():
    combined = multi_target_scores([np.array([2.0, 0, 2]), np.array([0.0, 10, 0])], [4, 10])
    np.testing.assert_allclose(combined, [0.5, 1.0, 0.5])
    with pytest.raises(ConfigError, match="one target size per target"):
        multi_target_scores([np.ones(3)], [1, 2])


def test_surrogate_is_trained_once_and_cached(pruning_plan, monkeypatch):
    first = train_surrogate(pruning_plan)
    assert first.path.exists()
    import transfer_influence.pruning.surrogate as module

    monkeypatch.setattr(module, "pretrain_group", lambda *a, **k: pytest.fail("retrained"))
    again = train_surrogate(pruning_plan)
    assert again.train_seconds == first.train_seconds
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_unknown_method_and_influence_without_sweep_are_refused(pruning_plan):
    surrogate = train_surrogate(pruning_plan)
    with pytest.raises(ConfigError, match="unknown pruning method 'lmm'"):
        score_source(pruning_plan, "lmm", surrogate)
    with pytest.raises(ConfigError, match="no sweep store was found"):
        score_source(pruning_plan, "influence", surrogate)
