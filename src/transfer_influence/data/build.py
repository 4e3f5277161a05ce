"""Turn the data section of an experiment config into source and target datasets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import DataConfig, DatasetSpec
from ..errors import ConfigError
from .formats import load_cifar_pickle, load_image_folder, load_mnist_idx, load_npz
from .images import LabeledImages, select_classes
from .ops import combine, resize, sample_per_class, to_channels
from .planted_pruning import planted_pruning_problem
from .registry import load_dataset
from .suites import TransferData, fashion_digits_suite, many_class_suite, split_fashion_suite
from .synthetic import planted_transfer_problem


def load_spec(spec: DatasetSpec, *, seed: int, base_dir: Path = Path(".")) -> LabeledImages:
    """Load one dataset spec: shipped by name or the user's file, then select classes/examples."""
    if spec.name is not None:
        ds = load_dataset(spec.name, spec.split, seed=seed)
    else:
        assert spec.path is not None  # DatasetSpec requires a name or a path
        path = Path(spec.path)
        path = path if path.is_absolute() else base_dir / path
        if spec.format == "npz":
            ds = load_npz(path)
        elif spec.format == "image_folder":
            ds = load_image_folder(path)
        elif spec.format == "cifar_pickle":
            ds = load_cifar_pickle(path, split=spec.split, label=spec.label)
        else:
            assert spec.labels_path is not None  # DatasetSpec requires it for idx
            labels = Path(spec.labels_path)
            ds = load_mnist_idx(
                path, labels if labels.is_absolute() else base_dir / labels, name=path.stem
            )
    if spec.classes is not None:
        ds = select_classes(ds, spec.classes)
    if spec.per_class is not None:
        ds = sample_per_class(ds, spec.per_class, seed=seed)
    return ds


def _harmonise(ds: LabeledImages, config: DataConfig) -> LabeledImages:
    if config.channels is not None and ds.image_shape[0] != config.channels:
        ds = to_channels(ds, config.channels)
    if config.image_size is not None and ds.image_shape[1:] != (config.image_size,) * 2:
        ds = resize(ds, config.image_size)
    return ds


def build_transfer_data(config: DataConfig, *, base_dir: Path = Path(".")) -> TransferData:
    """Source, target-train and target-test datasets described by ``config``.

    Every random choice (splits, few-shot sampling, synthetic data) is seeded by ``config.seed``.
    """
    if config.suite is not None:
        builders: dict[str, Callable[..., TransferData]] = {
            "fashion_digits": fashion_digits_suite,
            "split_fashion": split_fashion_suite,
            "many_class": many_class_suite,
            "planted": lambda seed, **options: planted_transfer_problem(seed, **options)[0],
            "planted_pruning": lambda seed, **options: planted_pruning_problem(seed,
                                                                               **options)[0],
        }
        try:
            data = builders[config.suite](seed=config.seed, **config.options)
        except TypeError as error:
            raise ConfigError(f"data.options do not fit suite {config.suite!r}: {error}") from None
        return TransferData(
            source=_harmonise(data.source, config),
            target_train=_harmonise(data.target_train, config),
            target_test=_harmonise(data.target_test, config),
        )
    parts = [
        _harmonise(load_spec(spec, seed=config.seed, base_dir=base_dir), config)
        for spec in config.source
    ]
    prefixes = [spec.prefix or spec.name or Path(spec.path or "").stem for spec in config.source]
    source = (
        parts[0]
        if len(parts) == 1 and config.source[0].prefix is None
        else combine(parts, prefixes=prefixes)
    )
    # DataConfig requires both targets when there is no suite.
    assert config.target_train is not None and config.target_test is not None
    target_train = _harmonise(
        load_spec(config.target_train, seed=config.seed, base_dir=base_dir), config
    )
    target_test = _harmonise(
        load_spec(config.target_test, seed=config.seed, base_dir=base_dir), config
    )
    if target_train.class_names != target_test.class_names:
        raise ConfigError(
            f"target_train classes {list(target_train.class_names)} differ from target_test"
            f" classes {list(target_test.class_names)}; select the same classes in both."
        )
    return TransferData(source=source, target_train=target_train, target_test=target_test)
