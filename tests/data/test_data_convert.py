"""In-memory datasets of (image, label) pairs become LabeledImages: tensors, PIL, numpy."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from transfer_influence.data import LabeledImages, as_labeled_images
from transfer_influence.errors import DataError

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (6, 3, 5, 4), dtype=np.uint8)  # [N, C, H, W], H != W
LABELS = np.array([0, 1, 2, 0, 1, 2])


class Pairs(Dataset):
    """A custom Dataset returning (image, label) with the image made by ``convert``."""

    def __init__(self, convert, labels=LABELS):
        self.convert, self.labels = convert, labels
        self.classes = ["cat", "dog", "emu"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.convert(PIXELS[i]), self.labels[i]


@pytest.mark.parametrize("convert", [
    lambda x: torch.from_numpy(x).float() / 255,        # ToTensor: float CHW in [0, 1]
    lambda x: torch.from_numpy(x),                      # uint8 CHW tensor
    lambda x: Image.fromarray(x.transpose(1, 2, 0)),    # PIL RGB
    lambda x: x.transpose(1, 2, 0),                     # numpy HWC
    lambda x: x.astype(np.int32),                       # numpy CHW, integers 0..255
])
def test_custom_dataset_of_any_image_type(convert):
    ds = as_labeled_images(Pairs(convert), name="mine")
    np.testing.assert_array_equal(ds.images, PIXELS)
    np.testing.assert_array_equal(ds.labels, LABELS)
    assert ds.class_names == ("cat", "dog", "emu") and ds.name == "mine"


def test_tensor_dataset_grey_images_and_default_names():
    grey = torch.from_numpy(PIXELS[:, 0]).float() / 255  # [N, H, W]
    ds = as_labeled_images(TensorDataset(grey, torch.from_numpy(LABELS)))
    assert ds.image_shape == (1, 5, 4) and ds.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(ds.images[:, 0], PIXELS[:, 0])
    named = as_labeled_images(TensorDataset(grey, torch.from_numpy(LABELS)),
                              class_names=["a", "b", "c"])
    assert named.class_names == ("a", "b", "c")
    original = LabeledImages(PIXELS, LABELS, ("a", "b", "c"))
    assert as_labeled_images(original) is original


@pytest.mark.parametrize(("dataset", "message"), [
    (Pairs(lambda x: (torch.from_numpy(x).float() - 128) / 64),
     r"float pixels must lie in \[0, 1\].*before any normalising"),
    (Pairs(lambda x: x.astype(np.int32) * 4), "pixels must be uint8"),
    (Pairs(lambda x: x[:2]), "1 or 3 channels"),
    (Pairs(lambda x: x, labels=[0, 1, 2, 0, 1, 2.5]), "example 5: a label must be one integer"),
    (Pairs(lambda x: x[:, : 1 + int(x[0, 0, 0]) % 3]), "different sizes"),
    (Pairs(lambda x: x, labels=[]), "empty"),
    ([PIXELS[0]], "example 0: the dataset must return \\(image, label\\) pairs"),
    (3, "expected LabeledImages or an indexable dataset"),
])
def test_bad_datasets_are_rejected(dataset, message):
    with pytest.raises(DataError, match=message):
        as_labeled_images(dataset)
