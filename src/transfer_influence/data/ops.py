"""Operations on whole :class:`LabeledImages`: combine, resize, channels, splits, sampling.

All randomness comes from an explicit ``seed`` (an int or a sequence of ints, as accepted by
:func:`numpy.random.default_rng`), so every split and sample is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .images import LabeledImages, select_classes

Seed = int | Sequence[int]

_RESIZE_BATCH = 4096


def rename(ds: LabeledImages, name: str) -> LabeledImages:
    """The same data under another ``name`` (arrays are shared, not copied)."""
    return replace(ds, name=name)


def combine(
    datasets: Sequence[LabeledImages], prefixes: Sequence[str] | None = None, name: str = "combined"
) -> LabeledImages:
    """Concatenate datasets, keeping their classes distinct as ``f"{prefix}/{class}"``.

    ``prefixes`` default to the datasets' names, e.g. ``fashion/Bag`` and ``mnist/3``. Labels of
    later datasets are shifted past the classes of earlier ones. Images must share one shape:
    call :func:`resize` / :func:`to_channels` first.
    """
    if not datasets:
        raise DataError("combine() needs at least one dataset.")
    prefixes = [ds.name for ds in datasets] if prefixes is None else list(prefixes)
    if len(prefixes) != len(datasets):
        raise DataError(f"combine(): {len(datasets)} datasets but {len(prefixes)} prefixes.")
    if len(set(prefixes)) != len(prefixes):
        raise DataError(
            f"combine(): prefixes {prefixes} repeat, which would merge class names; give each "
            "dataset its own prefix (or rename() the datasets)."
        )
    shapes = {ds.image_shape for ds in datasets}
    if len(shapes) > 1:
        detail = ", ".join(f"{p}: {ds.image_shape}" for p, ds in zip(prefixes, datasets))
        raise DataError(
            f"combine(): image shapes differ ({detail}); call resize(ds, size) and "
            "to_channels(ds, channels) so that all datasets share one (C, H, W)."
        )
    offsets = np.cumsum([0] + [ds.num_classes for ds in datasets])
    return LabeledImages(
        np.concatenate([ds.images for ds in datasets]),
        np.concatenate([ds.labels + offset for ds, offset in zip(datasets, offsets)]),
        tuple(f"{p}/{c}" for p, ds in zip(prefixes, datasets) for c in ds.class_names),
        name,
    )


def concatenate(datasets: Sequence[LabeledImages], name: str | None = None) -> LabeledImages:
    """Concatenate datasets of the *same* classes (e.g. a train and a test split)."""
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.class_names != first.class_names or ds.image_shape != first.image_shape:
            raise DataError(
                f"concatenate(): {ds.name!r} differs from {first.name!r} in classes or image "
                "shape; use combine() for datasets with different classes."
            )
    return LabeledImages(
        np.concatenate([ds.images for ds in datasets]),
        np.concatenate([ds.labels for ds in datasets]),
        first.class_names,
        name or first.name,
    )


def resize(ds: LabeledImages, size: int | tuple[int, int]) -> LabeledImages:
    """Resize every image to ``size`` (``int`` for square or ``(H, W)``), bilinear.

    Antialiased when shrinking; computed in float32 in batches of a few thousand images and
    rounded back to uint8 (60,000 MNIST images take about a second).
    """
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 1 or width < 1:
        raise DataError(f"resize(): size must be positive, got {size!r}.")
    if ds.image_shape[1:] == (height, width):
        return ds
    out = np.empty((len(ds), ds.image_shape[0], height, width), dtype=np.uint8)
    for start in range(0, len(ds), _RESIZE_BATCH):
        batch = torch.from_numpy(np.array(ds.images[start : start + _RESIZE_BATCH]))
        resized = F.interpolate(
            batch.float(), size=(height, width), mode="bilinear", align_corners=False,
            antialias=True,
        )  # fmt: skip
        out[start : start + len(batch)] = resized.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return LabeledImages(out, ds.labels, ds.class_names, ds.name)


def invert(ds: LabeledImages) -> LabeledImages:
    """``255 - pixel`` for every image: dark strokes on white (Omniglot) become white strokes on
    black (MNIST, Fashion-MNIST), so datasets mixed into one source share one polarity."""
    return LabeledImages(255 - ds.images, ds.labels, ds.class_names, ds.name)


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_channels(ds: LabeledImages, channels: int) -> LabeledImages:
    """Convert to 1 (grey, ITU-R 601 luma) or 3 (grey repeated) channels."""
    current = ds.image_shape[0]
    if channels not in (1, 3):
        raise DataError(f"to_channels(): channels must be 1 or 3, got {channels!r}.")
    if current == channels:
        return ds
    if current == 1:
        images = np.repeat(ds.images, 3, axis=1)
    elif current == 3:
        grey = np.einsum("nchw,c->nhw", ds.images.astype(np.float32), _LUMA)
        images = np.clip(np.round(grey), 0, 255).astype(np.uint8)[:, None]
    else:
        raise DataError(
            f"to_channels(): {ds.name!r} has {current} channels; only 1 or 3 can be converted."
        )
    return LabeledImages(images, ds.labels, ds.class_names, ds.name)


def _per_class_indices(ds: LabeledImages) -> list[np.ndarray]:
    order = np.argsort(ds.labels, kind="stable")
    return np.split(order, np.cumsum(ds.class_counts())[:-1])


def stratified_split(
    ds: LabeledImages, test_fraction: float, seed: Seed
) -> tuple[LabeledImages, LabeledImages]:
    """Split into ``(train, test)`` keeping each class's proportion; every class is in both.

    Each class puts ``round(test_fraction * n)`` examples (at least 1, at most ``n - 1``) into
    test, chosen by a seeded permutation; both parts keep the original example order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(
            f"stratified_split(): test_fraction must be in (0, 1), got {test_fraction}."
        )
    counts = ds.class_counts()
    too_small = [ds.class_names[k] for k in np.flatnonzero(counts < 2)]
    if too_small:
        raise DataError(
            f"stratified_split() of {ds.name!r}: classes {too_small[:10]} have a single example "
            "and cannot appear in both parts; drop them with select_classes()."
        )
    rng = np.random.default_rng(seed)
    test_parts = []
    for members in _per_class_indices(ds):
        n_test = int(np.clip(round(test_fraction * len(members)), 1, len(members) - 1))
        test_parts.append(rng.permutation(members)[:n_test])
    test_mask = np.zeros(len(ds), dtype=bool)
    test_mask[np.concatenate(test_parts)] = True
    return ds.take(np.flatnonzero(~test_mask)), ds.take(np.flatnonzero(test_mask))


def sample_per_class(
    ds: LabeledImages,
    n_per_class: int,
    seed: Seed,
    classes: Sequence[str | int] | None = None,
) -> LabeledImages:
    """Exactly ``n_per_class`` seeded random examples of each class (e.g. a few-shot target).

    With ``classes`` (names or indices) only those are kept, relabelled ``0..k-1`` in that order
    (see :func:`select_classes`). Examples keep the original order.
    """
    if classes is not None:
        ds = select_classes(ds, classes)
    if n_per_class < 1:
        raise DataError(f"sample_per_class(): n_per_class must be >= 1, got {n_per_class}.")
    counts = ds.class_counts()
    short = {ds.class_names[k]: int(counts[k]) for k in np.flatnonzero(counts < n_per_class)}
    if short:
        raise DataError(
            f"sample_per_class() of {ds.name!r}: {n_per_class} examples per class requested but "
            f"some classes have fewer {dict(list(short.items())[:10])}; lower n_per_class to "
            f"at most {int(counts.min())}."
        )
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(members, n_per_class, replace=False) for members in _per_class_indices(ds)]
    return ds.take(np.sort(np.concatenate(chosen)))
