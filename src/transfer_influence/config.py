"""An experiment as a TOML file, validated by pydantic.

One :class:`ExperimentConfig` says everything that determines a sweep's results: which source and
target data, which model, how to pretrain, how to transfer, and how the sweep draws its subsets.
Its :meth:`~ExperimentConfig.config_hash` stamps the result store, so a store can never be
resumed or read under a configuration that did not write it. Where results are written
(``store``), how the work is scheduled (``group_size``), where it runs (``device``) and how many
models the sweep trains (``num_models``: a sweep grows) do not enter the hash, nor does any
setting left at its default.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .recipe import TrainRecipe

DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?|mps)$"
"""``device`` names (resolved by ``transfer_influence.devices``, which needs torch)."""

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """One dataset on disk or shipped with the project.

    ``name`` is a shipped dataset (see ``transfer_influence.data.load_dataset``) when ``path`` is
    not given; otherwise ``path`` is read in ``format`` (``idx`` also needs ``labels_path``; for
    ``image_folder`` the path is the folder of the wanted split). ``classes`` keeps only those classes (in
    that order) and ``per_class`` draws that many examples of each, seeded by the data seed.
    """

    name: str | None = None
    path: str | None = None
    labels_path: str | None = None
    format: Literal["shipped", "npz", "image_folder", "cifar_pickle", "idx"] = "shipped"
    split: Literal["train", "test"] = "train"
    label: Literal["fine", "coarse", "fine+coarse"] = "fine"
    prefix: str | None = None
    classes: list[str] | None = None
    per_class: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _name_or_path(self) -> DatasetSpec:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a shipped dataset) or `path` (your file)")
        if self.path is not None and self.format == "shipped":
            raise ValueError("a `path` needs its `format`: npz, image_folder, cifar_pickle or idx")
        if (self.format == "idx") != (self.labels_path is not None):
            raise ValueError("`labels_path` is needed with format = 'idx' and only there")
        return self


class DataConfig(_Strict):
    """Source and target data: a built-in suite, or explicit datasets.

    Suites are the experiments suggested in the shipped data's MANIFEST (``fashion_digits``,
    ``split_fashion``, ``many_class`` with 262 source classes), a planted synthetic problem with
    known helpful/harmful classes (``planted``) and one with known related and unrelated source
    classes for pruning (``planted_pruning``); ``options`` go to the suite builder. Without a
    suite, ``source`` lists datasets combined into one source (class names prefixed),
    ``target_train``/``target_test`` give the target; images are resized to ``image_size`` and converted to ``channels``.
    """

    suite: Literal["fashion_digits", "split_fashion", "many_class", "planted",
                   "planted_pruning"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    source: list[DatasetSpec] = Field(default_factory=list)
    target_train: DatasetSpec | None = None
    target_test: DatasetSpec | None = None
    image_size: int | None = Field(None, ge=4)
    channels: Literal[1, 3] | None = None

    @model_validator(mode="after")
    def _suite_or_datasets(self) -> DataConfig:
        explicit = bool(self.source) or self.target_train is not None
        if self.suite is not None and explicit:
            raise ValueError("give either `suite` or `source`/`target_train`/`target_test`, not both")
        if self.suite is None:
            if not self.source or self.target_train is None or self.target_test is None:
                raise ValueError(
                    "without a `suite`, give `source` (a list of datasets), `target_train` and"
                    " `target_test`"
                )
            if self.options:
                raise ValueError("`options` only apply to a `suite`")
        return self


class ModelConfig(_Strict):
    """Architecture by name (``mlp``, ``small_cnn``, ``resnet18``) and its options."""

    name: str = "small_cnn"
    options: dict[str, Any] = Field(default_factory=dict)


class TransferConfig(_Strict):
    """How each pretrained model is transferred to the target.

    ``fixed_feature``: frozen backbone, a new linear head fit to convergence with L2 strength
    ``l2`` (multinomial logistic regression). ``finetune``: backbone and a new head trained
    together with ``recipe``; ``proximal`` (alpha, default 0 = off) adds
    ``alpha ||W - W_pretrained||^2`` on the backbone to its loss, tying the fine-tuned backbone
    to the pretrained one (Chen et al. 2020's case 2, which ``influence-function`` needs for
    fine-tuning).
    """

    mode: Literal["fixed_feature", "finetune"] = "fixed_feature"
    l2: float = Field(1e-3, gt=0)
    recipe: TrainRecipe | None = None
    proximal: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _recipe_for_finetune(self) -> TransferConfig:
        if self.mode == "finetune" and self.recipe is None:
            raise ValueError("transfer.mode = 'finetune' needs a [transfer.recipe] table")
        if self.proximal and self.mode != "finetune":
            raise ValueError("transfer.proximal ties a fine-tuned backbone to the pretrained one;"
                             " it needs transfer.mode = 'finetune' (remove it for fixed_feature)")
        # The config layer does not build objectives (a user's is imported where models train,
        # where finetune_group refuses any that declares uses_labels = False); the built-in
        # self-supervised one is refused here, before any work.
        if self.recipe is not None and self.recipe.objective == "simclr":
            raise ValueError("transfer.recipe.objective must learn from the labels: fine-tuning"
                             " learns the target labels (use simclr in [pretrain] instead)")
        return self


class SweepConfig(_Strict):
    """The sweep: ``num_models`` models, each pretrained on a random ``alpha`` fraction of the
    source ``unit``s (classes or examples); model *i*'s subset depends only on ``(seed, i)``,
    so raising ``num_models`` later extends an existing store (lowering it is refused).

    ``group_size`` models are trained per call of the group trainer; ``store`` is the result
    store's path or fsspec URL (relative paths are relative to the config file).

    ``on_divergence`` says what a model whose loss becomes NaN or infinite does: ``"record"``
    marks it diverged in the store (final, no outputs) and the sweep goes on; ``"stop"`` raises.
    It is not hashed: it never changes a completed model's numbers (a model trains identically
    whatever happens to the others of its group), only whether the sweep continues past a
    diverged one, so switching it keeps every finished model.
    """

    num_models: int = Field(ge=2)
    alpha: float = Field(0.5, gt=0, lt=1)
    unit: Literal["class", "example"] = "class"
    seed: int = 0
    group_size: int = Field(8, ge=1)
    store: str = "runs/sweep.zarr"
    on_divergence: Literal["record", "stop"] = "record"


class SurrogateConfig(_Strict):
    """The one cheap model a pruning method scores the source with (DP4TL's surrogate).

    ``model`` and ``pretrain`` default to the experiment's own; a smaller model is the point of
    the method (the paper prunes for a ResNet-101 with a ResNet-18). ``seed`` seeds its
    initialisation and batch order. It is trained once on the whole source and cached.
    """

    model: ModelConfig | None = None
    pretrain: TrainRecipe | None = None
    seed: int = 0


class PruneConfig(_Strict):
    """Dataset pruning for transfer (``transfer-influence prune``): the surrogate, the number of
    k-means pseudo-classes of the feature-mapping (FM) score, and the baselines' training.

    ``clusters`` is FM's K (the paper uses 2,000 for ImageNet's 1.28M images; default: the number
    of source classes). ``baseline_epochs`` / ``baseline_seeds``: the early training that EL2N,
    GraNd and forgetting scores are read from, averaged over seeds.
    """

    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    clusters: int | None = Field(None, ge=2)
    baseline_epochs: float = Field(2.0, gt=0)
    baseline_seeds: int = Field(2, ge=1)


class ExperimentConfig(_Strict):
    """A whole experiment; see ``examples/*.toml``.

    ``prune`` configures ``transfer-influence prune``; it does not enter the sweep's hash (it
    changes no sweep model).

    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; see
    ``transfer_influence.devices``) is where every model of the experiment trains and transfers:
    the sweep's, and those retrained by counterfactuals, failure debugging and pruning (its
    surrogate included). It is a top-level key, not part of ``[sweep]``, because it applies to
    all of these, and because it says where work runs rather than what a model is: results
    agree across devices up to floating-point rounding, so like ``store`` and ``group_size`` it
    does not enter the hash, and a store may be filled by workers on different devices.
    """

    name: str = "experiment"
    data: DataConfig | None = None  # None: data given in Python (SweepPlan.from_data)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainRecipe
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    sweep: SweepConfig
    prune: PruneConfig = Field(default_factory=PruneConfig)
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    base_dir: Path = Field(default=Path("."), exclude=True)

    def config_hash(self) -> str:
        """sha256 (16 hex digits) of every setting that changes the results of model *i*.

        Two rules keep existing stores valid as the project and the sweep evolve:

        - ``num_models`` is left out: model *i*'s subset and seed depend only on
          ``(sweep.seed, i)``, so a store can grow to more models (``transfer-influence run``
          extends it) without changing any model already trained. The store location, the
          group size and ``on_divergence`` (scheduling and policy choices, see
          :class:`SweepConfig`), the device (results agree across devices to rounding),
          ``name``, ``prune`` (pruning settings change no sweep model) and, under fixed-feature
          transfer, the fine-tuning ``transfer.recipe`` (used only by ``prune --transfer
          finetune``) are left out too.
        - Every setting equal to its default is left out (pydantic ``exclude_defaults``, applied
          at every nesting level; a table left entirely at its defaults vanishes), so adding a new
          option *with a default that reproduces the old behaviour* never changes the hash of
          existing configs. The converse duty: never change an existing default, since stores
          written under the old default would then be read as if made under the new one.
        """
        payload = self.model_dump(mode="json", exclude={"name", "base_dir", "prune", "device"},
                                  exclude_defaults=True)
        for key in ("num_models", "store", "group_size", "on_divergence"):
            payload["sweep"].pop(key, None)
        if self.transfer.mode == "fixed_feature" and "transfer" in payload:
            payload["transfer"].pop("recipe", None)  # a fine-tuning recipe changes nothing then
            if not payload["transfer"]:
                del payload["transfer"]
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def store_path(self) -> str:
        """The store location, relative paths resolved against the config file's folder."""
        store = self.sweep.store
        if "://" in store or Path(store).is_absolute():
            return store
        return str((self.base_dir / store).resolve())

    def artifact_path(self, suffix: str) -> Path:
        """Where a result derived from the store is saved: ``<store name>.<suffix>`` beside a
        local store, or in the config's folder when the store is a URL. A ``suffix`` holding a
        path separator is refused: names taken from the data (class names such as
        ``T-shirt/top``, variants, methods) go through :func:`safe_name` first."""
        if "/" in suffix or "\\" in suffix:
            raise ConfigError(f"result file suffix {suffix!r} contains a path separator; build"
                              " it from safe_name(...) of each name.")
        store = self.store_path()
        folder = Path(store).parent if "://" not in store else self.base_dir
        return folder / f"{Path(store).name}.{suffix}"


def safe_name(name: str) -> str:
    """``name`` as one file-name component that round-trips: percent-encoded (as in URLs)
    except letters, digits, ``-`` and ``_``, so ``T-shirt/top`` becomes ``T-shirt%2Ftop`` and
    distinct names stay distinct (``urllib.parse.unquote`` gives the name back). The one place
    the CLI, the library and the report turn names into result file names."""
    return quote(name, safe="-_").replace(".", "%2E").replace("~", "%7E")


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid experiment config {source}:"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], *, source: str = "<dict>", base_dir: Path | None = None
                 ) -> ExperimentConfig:
    """Validate a config mapping; errors name the path of every bad key."""
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None
    if base_dir is not None:
        config = config.model_copy(update={"base_dir": base_dir})
    return config


def read_toml(text: str, *, source: str) -> dict[str, Any]:
    """Parse TOML text, naming ``source`` in the error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}; pass the path of an experiment TOML"
                          " (see examples/).")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (TOML) file.") from None
    raw = read_toml(text, source=str(path))
    return parse_config(raw, source=str(path), base_dir=path.parent.resolve())
