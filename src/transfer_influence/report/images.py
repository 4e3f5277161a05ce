"""Image grids and thumbnails for the report, as PNG data URIs.

Source and target images are often tiny (8x8 digits, 28x28 MNIST), so they are upscaled by an
integer factor with nearest-neighbour sampling: pixels stay sharp squares instead of being
blurred by the browser, and the PNG stays small because it compresses the repeated pixels.
"""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
from PIL import Image

from ..data.images import LabeledImages
from ..errors import DataError

_EXAMPLE_UNIT = re.compile(r"^(?P<cls>.*)#(?P<index>\d+)$")


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI embedding ``png`` in the page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_grid(images: np.ndarray, *, columns: int, min_side: int = 40, pad: int = 2
               ) -> np.ndarray:
    """Tile ``uint8 [N, C, H, W]`` images (C = 1 or 3) into one ``[rows, cols(, 3)]`` array.

    Each image is upscaled by the smallest integer factor that makes its shorter side at least
    ``min_side`` pixels; images are separated by ``pad`` white pixels.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise DataError(f"the report shows uint8 [N, C, H, W] images with N >= 1 and 1 or 3"
                        f" channels, got shape {list(images.shape)}.")
    count, channels, height, width = images.shape
    scale = max(1, math.ceil(min_side / min(height, width)))
    tiles = images.repeat(scale, axis=2).repeat(scale, axis=3).transpose(0, 2, 3, 1)
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    cell_h, cell_w = height * scale + pad, width * scale + pad
    canvas = np.full((rows * cell_h - pad, columns * cell_w - pad, channels), 255, np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        canvas[r * cell_h:r * cell_h + height * scale, c * cell_w:c * cell_w + width * scale] = tile
    return canvas[:, :, 0] if channels == 1 else canvas


def grid_data_uri(images: np.ndarray, *, columns: int, min_side: int = 40) -> str:
    """:func:`image_grid` of ``images`` encoded as a PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(image_grid(images, columns=columns, min_side=min_side)).save(
        buffer, format="PNG", optimize=True)
    return png_data_uri(buffer.getvalue())


def class_samples(dataset: LabeledImages, class_index: int, count: int) -> np.ndarray:
    """Up to ``count`` images of one class, evenly spread over its examples (deterministic,
    so a rebuilt report shows the same images)."""
    rows = dataset.examples_of(class_index)
    picks = rows[np.linspace(0, rows.size - 1, min(count, rows.size)).round().astype(int)]
    return dataset.images[np.unique(picks)]


def unit_samples(source: LabeledImages, unit_name: str, count: int) -> np.ndarray | None:
    """Images that show a source unit: samples of the class for a class unit, the example
    itself for an example unit named ``"<class>#<index>"``; None for a name matching neither."""
    if unit_name in source.class_names:
        return class_samples(source, source.class_names.index(unit_name), count)
    match = _EXAMPLE_UNIT.match(unit_name)
    if match and int(match["index"]) < len(source):
        index = int(match["index"])
        if source.class_names[source.labels[index]] == match["cls"]:
            return source.images[index:index + 1]
    return None
