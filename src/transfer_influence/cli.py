"""The ``transfer-influence`` command: one sub-command per pipeline stage.

Each command is a thin layer over a library function. Errors the library raises on purpose
(:class:`~transfer_influence.errors.TransferInfluenceError`) are printed without a traceback and
exit with status 1.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .config import ExperimentConfig, load_config, parse_config, read_toml
from .errors import TransferInfluenceError
from .estimators import InfluenceResult, estimate_influence
from .outputs import OUTPUT_VARIANTS
from .sweep.runners import init_store, run_local, run_ray, run_shard
from .sweep.store import SweepStore

app = typer.Typer(
    help="Which source (pretraining) data helps or hurts a downstream task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., object])

ConfigArg = Annotated[Path, typer.Argument(help="experiment TOML (see examples/)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
VariantOpt = Annotated[
    str, typer.Option(help=f"output variant: {', '.join(OUTPUT_VARIANTS)}")
]


def _friendly_errors(command: F) -> F:
    """Print library errors as one clear message and exit non-zero."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TransferInfluenceError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _check_variant(variant: str) -> None:
    if variant not in OUTPUT_VARIANTS:
        raise typer.BadParameter(f"{variant!r}; choose one of {', '.join(OUTPUT_VARIANTS)}",
                                 param_hint="--variant")


def _result_path(config: ExperimentConfig, variant: str) -> Path:
    """Where ``estimate`` saves its result: beside a local store, named by variant."""
    store = config.store_path()
    folder = Path(store).parent if "://" not in store else config.base_dir
    return folder / f"{Path(store).name}.influence-{variant}.npz"


def _read_store(config: ExperimentConfig) -> SweepStore:
    """The config's store, read-only, refused if another configuration wrote it."""
    return SweepStore.open(config.store_path(), config_hash=config.config_hash(), read_only=True)


def _influence(config: ExperimentConfig, variant: str) -> InfluenceResult:
    """The saved estimate if it covers every completed model, else a fresh one (not saved)."""
    store = _read_store(config)
    saved = _result_path(config, variant)
    if saved.exists():
        result = InfluenceResult.load(saved)
        if result.num_models == store.num_completed:
            return result
    return estimate_influence(store, variant)


@app.command()
@_friendly_errors
def run(
    config: ConfigArg,
    runner: Annotated[str, typer.Option(help="local (in-process) or ray")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run (or resume) the sweep: pretrain and transfer every missing model."""
    experiment = load_config(config)
    if runner == "local":
        if address is not None:
            raise typer.BadParameter("--address only applies to --runner ray")
        store = run_local(experiment, quiet=quiet)
    elif runner == "ray":
        store = run_ray(experiment, address=address, quiet=quiet)
    else:
        raise typer.BadParameter(f"{runner!r}; choose local or ray", param_hint="--runner")
    done, total = store.status()
    console.print(f"{done}/{total} models complete in {store.path}")


@app.command()
@_friendly_errors
def init(config: ConfigArg) -> None:
    """Create the sweep's store without training (do this once before array-job workers)."""
    store = init_store(load_config(config))
    console.print(f"store ready at {store.path}: {store.num_completed}/{store.num_models} models,"
                  f" {store.num_units} units, {store.num_targets} target examples")


@app.command()
@_friendly_errors
def worker(
    config: ConfigArg,
    shard: Annotated[int, typer.Option(help="this worker's shard, 0-based")],
    num_shards: Annotated[int, typer.Option(help="number of shards in the array job")],
    quiet: QuietOpt = False,
) -> None:
    """Array-job worker: train the missing models of one shard into the shared store."""
    store = run_shard(load_config(config), shard, num_shards, quiet=quiet)
    console.print(f"shard {shard}/{num_shards} done; store has {store.num_completed}/"
                  f"{store.num_models} models")


@app.command()
@_friendly_errors
def estimate(
    config: ConfigArg,
    variant: VariantOpt = "prob_correct",
    overwrite: Annotated[bool, typer.Option(help="replace an existing result")] = False,
) -> None:
    """Difference-in-means influence of every source unit on every target example."""
    _check_variant(variant)
    experiment = load_config(config)
    store = _read_store(experiment)
    result = estimate_influence(store, variant)  # type: ignore[arg-type]
    path = _result_path(experiment, variant)
    result.save(path, overwrite=overwrite)
    units, targets = result.influence.shape
    console.print(
        f"influence [{units} units x {targets} target examples] from {result.num_models} of"
        f" {store.num_models} models (each unit kept by {int(result.counts_with.min())}-"
        f"{int(result.counts_with.max())} models) -> {path}"
    )


def _top_table(result: InfluenceResult, k: int, target_class: str | None) -> dict:
    helpful = result.top(k, target_class=target_class)
    harmful = result.top(k, target_class=target_class, harmful=True)
    return {"target_class": target_class or "(all)", "variant": result.variant,
            "num_models": result.num_models,
            "helpful": [{"unit": n, "score": s} for n, s in helpful],
            "harmful": [{"unit": n, "score": s} for n, s in harmful]}


def _print_top(entry: dict) -> None:
    table = Table(title=f"target class {entry['target_class']} "
                        f"({entry['variant']}, {entry['num_models']} models)")
    table.add_column("most helpful")
    table.add_column("influence", justify="right")
    table.add_column("most harmful")
    table.add_column("influence", justify="right")
    for good, bad in zip(entry["helpful"], entry["harmful"]):
        table.add_row(good["unit"], f"{good['score']:+.4f}", bad["unit"], f"{bad['score']:+.4f}")
    console.print(table)


@app.command()
@_friendly_errors
def top(
    config: ConfigArg,
    k: Annotated[int, typer.Option(help="how many units per list")] = 5,
    target_class: Annotated[
        str | None, typer.Option(help="a target class name; default: overall")] = None,
    per_class: Annotated[bool, typer.Option(help="one table per target class")] = False,
    variant: VariantOpt = "prob_correct",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The k most helpful and most harmful source units, overall or for a target class."""
    _check_variant(variant)
    result = _influence(load_config(config), variant)
    classes = result.target_class_names if per_class else [target_class]
    entries = [_top_table(result, k, name) for name in classes]
    if as_json:
        typer.echo(json.dumps(entries if per_class else entries[0], indent=2))
        return
    for entry in entries:
        _print_top(entry)


@app.command()
@_friendly_errors
def status(config: ConfigArg) -> None:
    """Models done / total, and the estimated time to finish."""
    experiment = load_config(config)
    store = _read_store(experiment)
    done, total = store.status()
    line = f"{done}/{total} models complete ({100 * done / total:.0f}%) in {store.path}"
    rate = store.recent_rate()
    if done < total and rate:
        line += f"; about {(total - done) / rate / 60:.1f} min left at {rate * 3600:.0f} models/h"
    console.print(line)


QUICKSTART = "quickstart.toml"


def quickstart_config(store: Path, num_models: int | None = None) -> ExperimentConfig:
    """The shipped quickstart experiment (``resources/quickstart.toml``) writing to ``store``."""
    text = resources.files("transfer_influence.resources").joinpath(QUICKSTART).read_text()
    raw = read_toml(text, source=QUICKSTART)
    raw["sweep"]["store"] = str(store.resolve())
    if num_models is not None:
        raw["sweep"]["num_models"] = num_models
    return parse_config(raw, source=f"quickstart ({QUICKSTART})", base_dir=Path.cwd())


@app.command()
@_friendly_errors
def quickstart(
    store: Annotated[Path, typer.Option(help="where the sweep's store goes")] = Path(
        "runs/quickstart.zarr"),
    models: Annotated[int | None, typer.Option(help="override the number of models")] = None,
    k: Annotated[int, typer.Option(help="classes per list")] = 3,
    quiet: QuietOpt = False,
) -> None:
    """Real-data demo: Fashion-MNIST + MNIST digits as source, scikit-learn digits as target.

    Runs (or resumes) the sweep, then prints the most helpful and harmful source classes for
    every target digit.
    """
    experiment = quickstart_config(store, models)
    console.print(f"quickstart: {experiment.sweep.num_models} models, store {store}")
    started = time.perf_counter()
    sweep_store = run_local(experiment, quiet=quiet)
    console.print(f"sweep finished in {(time.perf_counter() - started) / 60:.1f} min")
    result = estimate_influence(sweep_store)
    for name in [None, *result.target_class_names]:
        _print_top(_top_table(result, k, name))


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


__all__ = ["app", "main", "quickstart_config"]
