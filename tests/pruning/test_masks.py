"""Ratios to pruned units: counts, order, ties and bad ratios."""

import numpy as np
import pytest

from transfer_influence.errors import ConfigError
from transfer_influence.pruning import check_ratios, pruned_units, pruning_order
from transfer_influence.pruning.masks import pruned_count


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5])
def test_ratios_outside_the_open_unit_interval_are_refused(bad):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        check_ratios([0.5, bad])


def test_lowest_scores_are_pruned_first_and_ties_are_seeded():
    scores = np.array([5.0, 0.0, 3.0, 0.0, 1.0, 0.0])
    assert pruned_count(6, 0.5) == 3 and pruned_count(6, 0.01) == 1 and pruned_count(6, 0.99) == 5
    np.testing.assert_array_equal(pruned_units(scores, 0.5, [0, 5]), [1, 3, 5])
    two = [tuple(pruned_units(scores, 1 / 3, [0, seed])) for seed in range(20)]
    assert all(set(pair) <= {1, 3, 5} and len(pair) == 2 for pair in two)
    assert len(set(two)) > 1  # ties broken differently by different seeds ...
    assert pruned_units(scores, 1 / 3, [0, 7]).tolist() == pruned_units(scores, 1 / 3,
                                                                        [0, 7]).tolist()
    order = pruning_order(scores, [1])
    assert order[-2:].tolist() == [2, 0]  # ... never across different scores
