"""Your own in-memory data as :class:`LabeledImages`: any indexable dataset of ``(image, label)``
pairs, such as a ``torch.utils.data.Dataset`` (``TensorDataset``, a torchvision dataset or your
own class).

Images may be torch tensors (``[H, W]`` or ``[C, H, W]``, the torchvision convention), Pillow
images, or numpy arrays (``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``; a last axis of 1 or 3
entries, and a first one of neither, means ``[H, W, C]``). Pixel values are uint8 0..255,
integers in that range, or floats in ``[0, 1]`` (what ``ToTensor`` gives); they are stored as
uint8, and the pipeline normalises them itself (``pretrain.normalization``), so pass images
*before* any normalising transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..errors import DataError
from .formats import pil_array, stack_images
from .images import LabeledImages


class ImageDataset(Protocol):
    """Anything with ``len(ds)`` and ``ds[i] -> (image, label)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def _pixels(image: Any, where: str) -> np.ndarray:
    """One image as ``uint8 [H, W]`` or ``[H, W, C]``."""
    if isinstance(image, Image.Image):
        return pil_array(image)
    channels_first = hasattr(image, "detach")  # a torch tensor: [C, H, W] by convention
    array = np.asarray(image.detach().cpu()) if channels_first else np.asarray(image)
    if array.ndim == 3:
        hwc = not channels_first and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3)
        array = array if hwc else array.transpose(1, 2, 0)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3)):
        raise DataError(f"{where}: an image must be [H, W] or have 1 or 3 channels, got shape"
                        f" {array.shape}.")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(
                f"{where}: float pixels must lie in [0, 1], got range [{array.min():.3g},"
                f" {array.max():.3g}]; pass the images before any normalising transform (the"
                " pipeline normalises them with pretrain.normalization)."
            )
        return np.round(array * 255).astype(np.uint8)
    if array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= 0 and array.max() <= 255)):
        return array.astype(np.uint8)
    raise DataError(f"{where}: pixels must be uint8, integers in 0..255 or floats in [0, 1]; got"
                    f" dtype {array.dtype}.")


def _label(label: Any, where: str) -> int:
    """One label as a Python int (ints, numpy integers, one-element integer tensors)."""
    value = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
    if value.size != 1 or value.dtype.kind not in "iu":
        raise DataError(f"{where}: a label must be one integer class index, got {label!r}.")
    return int(value.reshape(()))


def as_labeled_images(data: LabeledImages | ImageDataset, *,
                      class_names: Sequence[str] | None = None, name: str = "dataset"
                      ) -> LabeledImages:
    """``data`` as :class:`LabeledImages` (returned unchanged if it already is one).

    ``class_names`` name the labels ``0..K-1``; by default the dataset's ``classes`` attribute
    (as torchvision datasets have), else ``"0" .. str(K-1)``. All images must share one shape
    (resize them in the dataset, or afterwards with :func:`~transfer_influence.data.resize`).
    """
    if isinstance(data, LabeledImages):
        return data
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise DataError(f"{name}: expected LabeledImages or an indexable dataset of (image, label)"
                        f" pairs with a length, got {type(data).__name__}.")
    images, labels = [], []
    for i in range(len(data)):
        item = data[i]
        where = f"{name}, example {i}"
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{where}: the dataset must return (image, label) pairs, got"
                            f" {type(item).__name__}.")
        images.append(_pixels(item[0], where))
        labels.append(_label(item[1], where))
    if not images:
        raise DataError(f"{name}: the dataset is empty.")
    if class_names is None:
        class_names = getattr(data, "classes", None) or [str(k) for k in range(max(labels) + 1)]
    return LabeledImages(stack_images(images, name), np.array(labels, dtype=np.int64),
                         tuple(class_names), name)
