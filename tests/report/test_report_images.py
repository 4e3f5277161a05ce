"""Image grids, unit samples and figures of the report."""

from __future__ import annotations

import numpy as np
import pytest

from transfer_influence.data.images import LabeledImages
from transfer_influence.errors import DataError
from transfer_influence.report.figures import _label, convergence_png, heatmap_png
from transfer_influence.report.images import image_grid, unit_samples
from transfer_influence.report.inputs import ConvergenceSeries

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_grid_upscales_tiny_images_by_nearest_neighbour_and_pads_white():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (3, 1, 8, 8), dtype=np.uint8)
    grid = image_grid(images, columns=2, min_side=40, pad=2)
    assert grid.shape == (2 * 40 + 2, 2 * 40 + 2)  # scale 5, 2 rows x 2 columns
    np.testing.assert_array_equal(grid[:40, 42:], np.kron(images[1, 0], np.ones((5, 5))))
    np.testing.assert_array_equal(grid[42:, :40], np.kron(images[2, 0], np.ones((5, 5))))
    assert (grid[40:42] == 255).all() and (grid[42:, 42:] == 255).all()  # pad, empty cell


def test_grid_keeps_colour_and_large_images_unscaled():
    images = np.zeros((2, 3, 50, 60), dtype=np.uint8)
    images[1, 0] = 255  # red
    grid = image_grid(images, columns=4, min_side=40, pad=1)
    assert grid.shape == (50, 121, 3)
    assert (grid[:, 61:, 0] == 255).all() and (grid[:, 61:, 1:] == 0).all()
    with pytest.raises(DataError, match="1 or 3"):
        image_grid(np.zeros((1, 2, 8, 8), np.uint8), columns=1)


def test_unit_samples_for_class_and_example_units():
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(4, 2).repeat(4, 3)
    source = LabeledImages(images, np.array([0, 1, 0, 1, 0, 0]), ("cat", "dog"), "s")
    cats = unit_samples(source, "cat", 3)
    assert [int(i[0, 0, 0]) for i in cats] == [0, 4, 5]  # spread over the class
    assert len(unit_samples(source, "cat", 10)) == 4
    assert int(unit_samples(source, "dog#3", 5)[0, 0, 0, 0]) == 3
    assert unit_samples(source, "cat#3", 5) is None  # example 3 is a dog
    assert unit_samples(source, "dog#9", 5) is None
    assert unit_samples(source, "wolf", 5) is None


def test_figures_render_awkward_values_and_labels():
    values = np.array([[0.1, np.nan], [-0.3, 0.0]])
    # "$\\nope{$" would be a mathtext syntax error if it were not escaped.
    png = heatmap_png(values, ["$\\nope{$", "a" * 60], ["$5 bill", "y"], colorbar_label="m$")
    assert png.startswith(PNG_MAGIC)
    assert heatmap_png(np.full((2, 2), np.nan), ["a", "b"], ["c", "d"],
                       colorbar_label="x").startswith(PNG_MAGIC)
    assert convergence_png(ConvergenceSeries((10,), (0.1,))).startswith(PNG_MAGIC)
    assert convergence_png(ConvergenceSeries((0, 10), (0.0, 0.1))).startswith(PNG_MAGIC)


def test_long_labels_keep_their_distinctive_end():
    label = _label("omniglot/Early_Aramaic/character05")
    assert len(label) == 28 and label.endswith("/character05") and label.startswith("omniglot/")
    assert _label("mnist/3") == "mnist/3"
