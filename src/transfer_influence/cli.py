"""The ``transfer-influence`` command: one sub-command per pipeline stage.

Each command is a thin layer over a library function. Errors the library raises on purpose
(:class:`~transfer_influence.errors.TransferInfluenceError`) are printed without a traceback and
exit with status 1.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .analysis import (
    consensus_predictions,
    debug_failures,
    default_examples,
    find_leakage,
    project_labels,
    save_failures,
)
from .analysis.agreement import experiment_agreement
from .config import ExperimentConfig, load_config, parse_config, read_toml, safe_name
from .counterfactual import STRATEGIES, CounterfactualResult, run_counterfactual
from .counterfactual.arms import Strategy
from .data.images import LabeledImages
from .devices import resolve_device
from .errors import ConfigError, DataError, StoreError, TransferInfluenceError
from .estimators import InfluenceResult, estimate_influence
from .estimators.diagnostics import (
    SIDES,
    DiagnosticsSummary,
    diagnose_store,
    divergence_association_store,
)
from .estimators.registry import estimator_names
from .influence_functions.experiment import (
    InfluenceArgs,
    run_influence_function,
    saved_influence_function,
)
from .outputs import OUTPUT_VARIANTS, output_variants
from .pruning import PRUNING_METHODS, PruningResult, run_pruning, train_surrogate
from .report import diagnostics_path, saved_diagnostics, write_experiment_report
from .sweep.plan import SweepPlan
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

P = ParamSpec("P")
R = TypeVar("R")
Choice = TypeVar("Choice", bound=str)

ConfigArg = Annotated[Path, typer.Argument(help="experiment TOML (see examples/)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
RunnerOpt = Annotated[str, typer.Option(help="local (in-process) or ray")]
AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster address (with --runner ray)")]
VariantOpt = Annotated[
    str, typer.Option(help=f"output variant: {', '.join(OUTPUT_VARIANTS)}")
]
DeviceOpt = Annotated[str | None, typer.Option(
    help="auto, cpu, cuda, cuda:N or mps; where models train and --method ridge datamodels are"
         " fitted (dim and lasso run on the CPU; default: the config's device)")]
MethodOpt = Annotated[
    str, typer.Option(help="dim (difference in means), or ridge / lasso (datamodel weights)")
]


def _friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print library errors as one clear message and exit non-zero."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except TransferInfluenceError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def _check_variant(variant: str) -> None:
    if variant not in output_variants():
        raise typer.BadParameter(f"{variant!r}; choose one of {', '.join(output_variants())}",
                                 param_hint="--variant")


def _check_runner(runner: str, address: str | None) -> None:
    if runner not in ("local", "ray"):
        raise typer.BadParameter(f"{runner!r}; choose local or ray", param_hint="--runner")
    if runner == "local" and address is not None:
        raise typer.BadParameter("--address only applies to --runner ray")


def _on_device(experiment: ExperimentConfig, device: str | None) -> ExperimentConfig:
    """``experiment`` with ``--device`` (when given) as its device, checked before any work."""
    if device is not None:
        experiment = experiment.model_copy(update={"device": device})
    resolve_device(experiment.device)
    return experiment


def _check_method(method: str) -> None:
    if method not in estimator_names():
        raise typer.BadParameter(f"{method!r}; choose one of {', '.join(estimator_names())}",
                                 param_hint="--method")


def _result_path(config: ExperimentConfig, variant: str, method: str = "dim") -> Path:
    """Where ``estimate`` saves its result: beside a local store, named by variant and method."""
    name = "influence" if method == "dim" else f"datamodel-{safe_name(method)}"
    return config.artifact_path(f"{name}-{safe_name(variant)}.npz")


def _read_store(config: ExperimentConfig) -> SweepStore:
    """The config's store, read-only, refused if another configuration wrote it."""
    return SweepStore.open(config.store_path(), config_hash=config.config_hash(), read_only=True)


def _sweep_exists(config: ExperimentConfig) -> bool:
    """Whether the sweep's store exists (a remote store is assumed to: opening it says)."""
    return "://" in config.store_path() or Path(config.store_path()).exists()


def _influence(config: ExperimentConfig, variant: str, store: SweepStore | None = None,
               method: str = "dim") -> InfluenceResult:
    """The saved estimate if it covers every completed model, else a fresh one (not saved)."""
    _check_variant(variant)
    _check_method(method)
    store = store or _read_store(config)
    saved = _result_path(config, variant, method)
    if saved.exists():
        result = InfluenceResult.load(saved)
        if result.num_models == store.num_completed:
            return result
    return estimate_influence(store, variant, method=method, device=config.device)


@app.command()
@_friendly_errors
def run(
    config: ConfigArg,
    runner: RunnerOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = None,
) -> None:
    """Run (or resume) the sweep: pretrain and transfer every missing model."""
    _check_runner(runner, address)
    experiment = _on_device(load_config(config), device)
    if runner == "local":
        store = run_local(experiment, quiet=quiet)
    else:
        store = run_ray(experiment, address=address, quiet=quiet)
    done, total = store.status()
    console.print(f"{done}/{total} models complete in {store.path}")
    _exit_if_diverged(store)


DIVERGED_EXIT = 3
"""Exit status of ``run`` and ``worker`` when the store holds diverged models, so scripts notice."""


def _exit_if_diverged(store: SweepStore) -> None:
    """Say how many models diverged and exit with :data:`DIVERGED_EXIT` if any did."""
    diverged = int(store.diverged().sum())
    if diverged:
        err_console.print(
            f"{diverged} model(s) diverged and were recorded without outputs (final, not"
            " retried); every estimate excludes them. `transfer-influence diagnose` names source"
            " units associated with divergence; lower the learning rate for a new sweep.",
            highlight=False)
        raise typer.Exit(DIVERGED_EXIT)


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
    device: DeviceOpt = None,
) -> None:
    """Array-job worker: train the missing models of one shard into the shared store."""
    store = run_shard(_on_device(load_config(config), device), shard, num_shards, quiet=quiet)
    console.print(f"shard {shard}/{num_shards} done; store has {store.num_completed}/"
                  f"{store.num_models} models")
    _exit_if_diverged(store)


@app.command()
@_friendly_errors
def estimate(
    config: ConfigArg,
    variant: VariantOpt = "prob_correct",
    method: MethodOpt = "dim",
    overwrite: Annotated[bool, typer.Option(help="replace an existing result")] = False,
    device: DeviceOpt = None,
) -> None:
    """Influence of every source unit on every target example (difference in means, or linear
    datamodel weights with their held-out score)."""
    _check_variant(variant)
    _check_method(method)
    experiment = _on_device(load_config(config), device)
    store = _read_store(experiment)
    path = _result_path(experiment, variant, method)
    if path.exists() and not overwrite:  # before the work, not after
        raise StoreError(f"{path} already exists; pass --overwrite to replace it.")
    result = estimate_influence(store, variant, method=method, device=experiment.device)
    result.save(path, overwrite=overwrite)
    units, targets = result.influence.shape
    what = "influence" if method == "dim" else f"{method} datamodel weights"
    console.print(
        f"{what} [{units} units x {targets} target examples] from {result.num_models} of"
        f" {store.num_models} models ({result.num_diverged} diverged, excluded; each unit kept"
        f" by {int(result.counts_with.min())}-{int(result.counts_with.max())} models) -> {path}"
    )
    if result.heldout_lds is not None:
        console.print(f"held-out linear datamodeling score (Spearman, mean over targets):"
                      f" {result.heldout_lds:.3f}")


@app.command()
@_friendly_errors
def diagnose(
    config: ConfigArg,
    variant: VariantOpt = "prob_correct",
    k: Annotated[int, typer.Option(help="length of the top list to judge")] = 5,
    side: Annotated[str, typer.Option(help="helpful, harmful or abs")] = "helpful",
    replicates: Annotated[int, typer.Option(help="bootstrap replicates")] = 100,
    seed: Annotated[int, typer.Option(help="seeds the split, bootstrap and knockoffs")] = 0,
    device: DeviceOpt = None,
) -> None:
    """How far to trust the influence ranking, and whether to train more models: split-half
    agreement, bootstrap standard errors and their convergence, knockoff FDR of the top-k, and
    the held-out score of a ridge datamodel."""
    _check_variant(variant)
    chosen_side = _one_of(side, SIDES)
    if chosen_side is None:
        raise typer.BadParameter(f"{side!r}; choose helpful, harmful or abs", param_hint="--side")
    experiment = _on_device(load_config(config), device)
    store = _read_store(experiment)
    diagnostics = diagnose_store(store, variant, k=k, side=chosen_side,
                                 replicates=replicates, seed=seed)
    try:
        lds = estimate_influence(store, variant, method="ridge",
                                 seed=seed, device=experiment.device).heldout_lds
    except DataError as error:  # too few models to hold some out
        lds = None
        console.print(f"(no held-out datamodel score: {error})")
    summary = DiagnosticsSummary.from_diagnostics(diagnostics, lds,
                                                  divergence_association_store(store))
    path = diagnostics_path(experiment, variant)
    summary.save(path)
    table = Table(title=f"diagnostics ({variant}, {summary.num_models} models,"
                        f" {summary.num_diverged} diverged excluded)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in summary.metrics.items():
        table.add_row(name, f"{value:.3f}")
    curve = ", ".join(f"{m}: {se:.4f}" for m, se in
                      zip(summary.convergence_models, summary.convergence_mean_se))
    table.add_row("mean SE per class by models", curve)
    console.print(table)
    for line in summary.verdict:
        console.print(line)
    total = diagnostics.recommended_models(lds)
    if total is not None:
        console.print(_grow_hint(config, experiment, total, store), markup=False,
                      highlight=False)
    console.print(f"saved -> {path}")


def _grow_hint(config: Path, experiment: ExperimentConfig, total: int, store: SweepStore) -> str:
    """The exact steps to reach ``total`` models: raise num_models and rerun; the store grows
    and keeps every model already trained."""
    command = f"transfer-influence run {shlex.quote(str(config))}"
    if total <= experiment.sweep.num_models:
        return (f"To reach {total} models, finish the sweep ({store.num_completed} of"
                f" {experiment.sweep.num_models} done): {command}")
    return (f"To reach {total} models, set num_models = {total} in the [sweep] table of"
            f" {config} and run:\n  {command}\n(the store grows; its {store.num_completed}"
            " trained models are kept)")


def _top_table(result: InfluenceResult, k: int, target_class: str | None,
               se: DiagnosticsSummary | None = None) -> dict:
    helpful = result.top(k, target_class=target_class)
    harmful = result.top(k, target_class=target_class, harmful=True)
    errors: dict[str, float] = {}
    if se is not None:
        column = (np.asarray(se.se_overall) if target_class is None else np.asarray(
            se.se_per_class)[:, result.target_class_names.index(target_class)])
        errors = dict(zip(result.unit_names, column.tolist()))
    variant = result.variant if result.method == "dim" else f"{result.variant}, {result.method}"
    return {"target_class": target_class or "(all)", "variant": variant,
            "num_models": result.num_models, "num_diverged": result.num_diverged,
            "helpful": [{"unit": n, "score": s, "se": errors.get(n)} for n, s in helpful],
            "harmful": [{"unit": n, "score": s, "se": errors.get(n)} for n, s in harmful]}


def _print_top(entry: dict) -> None:
    table = Table(title=f"target class {entry['target_class']} ({entry['variant']},"
                        f" {entry['num_models']} models, {entry['num_diverged']} diverged"
                        " excluded)")
    table.add_column("most helpful", overflow="fold")  # long unit names wrap, never cut
    table.add_column("influence", justify="right")
    table.add_column("most harmful", overflow="fold")
    table.add_column("influence", justify="right")
    def score(item: dict) -> str:
        return f"{item['score']:+.4f}" + ("" if item["se"] is None else f" ± {item['se']:.4f}")

    for good, bad in zip(entry["helpful"], entry["harmful"]):
        table.add_row(good["unit"], score(good), bad["unit"], score(bad))
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
    method: MethodOpt = "dim",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    device: DeviceOpt = None,
) -> None:
    """The k most helpful and most harmful source units, overall or for a target class."""
    experiment = _on_device(load_config(config), device)
    result = _influence(experiment, variant, method=method)
    classes = result.target_class_names if per_class else [target_class]
    se = saved_diagnostics(experiment, result)
    entries = [_top_table(result, k, name, se) for name in classes]
    if as_json:
        typer.echo(json.dumps(entries if per_class else entries[0], indent=2))
        return
    for entry in entries:
        _print_top(entry)


@app.command()
@_friendly_errors
def status(config: ConfigArg) -> None:
    """Models completed / diverged / remaining, the time since the last one finished, and the
    estimated time to finish while work is progressing."""
    experiment = load_config(config)
    console.print(status_lines(_read_store(experiment), experiment.sweep.group_size, time.time()))


STALL_MINUTES = 5.0
"""``status`` calls a sweep stalled when no model finished for this long and for three times
the recent interval between groups (a group of ``group_size`` models is written at once)."""


def status_lines(store: SweepStore, group_size: int, now: float) -> str:
    """What ``status`` prints: the counts, then the time since the last model finished with an
    ETA from the recent rate while work progresses, or a warning that nothing progresses."""
    done, total = store.status()
    diverged = int(store.diverged().sum())
    remaining = total - done - diverged
    lines = [(f"{done}/{total} models complete, {diverged} diverged, {remaining} remaining"
              f" ({100 * (done + diverged) / total:.0f}% done) in {store.path}")]
    last = store.last_finished()
    if last is None:
        lines.append("no model has finished yet")
        return "\n".join(lines)
    idle = max(0.0, now - last)
    lines.append(f"last model finished {idle / 60:.1f} min ago")
    if remaining:
        rate = store.recent_rate()
        patience = max(STALL_MINUTES * 60, 3 * group_size / rate if rate else 0.0)
        if idle > patience:
            lines.append(f"no progress for {idle / 60:.0f} min: is a runner still going?")
        elif rate:
            lines.append(f"about {remaining / rate / 60:.1f} min left at"
                         f" {rate * 3600:.0f} models/h")
    return "\n".join(lines)


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}; give comma-separated integers such as 1,2,5",
                                 param_hint=option) from None


def _one_of(value: str, choices: tuple[Choice, ...]) -> Choice | None:
    """``value`` as the one of ``choices`` it equals (typed as they are), None if none."""
    return next((choice for choice in choices if choice == value), None)


def _parse_removal(text: str) -> tuple[Strategy, list[str]]:
    """``bottom`` / ``top`` / ``random`` / ``classes=NAME,NAME`` / ``groups=NAME,NAME``."""
    name, _, names = text.partition("=")
    strategy = _one_of(name, STRATEGIES)
    if strategy is None or (strategy in ("classes", "groups")) != bool(names):
        raise typer.BadParameter(f"{text!r}; choose bottom, top, random, classes=NAME,NAME,..."
                                 " or groups=NAME,...", param_hint="--remove")
    return strategy, [name.strip() for name in names.split(",") if name.strip()]


def _print_counterfactual(result: CounterfactualResult) -> None:
    where = result.target_class or "all target classes"
    steps = ", equal steps" if result.equal_steps else ""
    excluded = (f", {result.diverged_seeds} diverged seeds excluded" if result.diverged_seeds
                else "")
    table = Table(title=f"target accuracy on {where}, remove {result.strategy}"
                        f" ({result.seeds} seeds{steps}{excluded}, 95% intervals)")
    for column in ("k", "accuracy [95% interval]", "vs baseline [95% interval]", "removed"):
        table.add_column(column, justify="left" if column == "removed" else "right")
    for arm in [result.baseline, *result.arms]:
        removed = ", ".join(arm.removed[0]) if arm.name != "random" else "(random per seed)"
        if len(removed) > 60:
            removed = removed[:57] + "..."
        difference = (f"{arm.diff_mean:+.3f} [{arm.diff_low:+.3f}, {arm.diff_high:+.3f}]"
                      if arm.k else "")
        table.add_row(str(arm.k), f"{arm.mean:.3f} [{arm.low:.3f}, {arm.high:.3f}]", difference,
                      removed or "(nothing: baseline)")
    console.print(table)
    best = result.best
    console.print(f"best k = {best.k}: accuracy {best.mean:.4f} vs baseline"
                  f" {result.baseline.mean:.4f} ({best.diff_mean:+.4f},"
                  f" 95% interval [{best.diff_low:+.4f}, {best.diff_high:+.4f}])")


@app.command()
@_friendly_errors
def counterfactual(
    config: ConfigArg,
    remove: Annotated[str, typer.Option(
        help="bottom (most harmful), top (most helpful), random, classes=NAME,NAME (hand-picked"
             " source classes) or groups=NAME (every class named NAME/..., e.g. a CIFAR-100"
             " superclass)")
    ] = "bottom",
    k: Annotated[str, typer.Option(help="comma-separated numbers of units to remove")] = "1,2,5",
    seeds: Annotated[int, typer.Option(help="models (seeds) per k")] = 5,
    target_class: Annotated[str | None, typer.Option(
        help="rank units and measure accuracy for this target class only")] = None,
    variant: VariantOpt = "prob_correct",
    method: MethodOpt = "dim",
    equal_steps: Annotated[bool, typer.Option(
        help="train every model for as many steps as the full-source baseline (removing units"
             " then removes data, not optimisation steps)")] = False,
    runner: RunnerOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = None,
) -> None:
    """Remove source units, retrain over seeds, and compare target accuracy with the baseline.

    Resumable: models already trained (for any command) are reused, a killed run continues.
    """
    _check_runner(runner, address)
    strategy, classes = _parse_removal(remove)
    ks = _int_list(k, "--k")
    experiment = _on_device(load_config(config), device)
    plan = SweepPlan.from_config(experiment)
    influence = (_influence(experiment, variant, plan.read_store(), method)
                 if strategy in ("bottom", "top") else None)
    result = run_counterfactual(plan, strategy, ks, seeds,
                                influence=influence, target_class=target_class,
                                classes=classes, equal_steps=equal_steps, quiet=quiet,
                                runner=runner, address=address)
    suffix = ((f"-{safe_name(target_class)}" if target_class else "")
              + ("-equal-steps" if equal_steps else ""))
    path = experiment.artifact_path(f"counterfactual-{strategy}{suffix}.json")
    result.save(path)
    _print_counterfactual(result)
    console.print(f"saved -> {path}")


@app.command()
@_friendly_errors
def project(
    config: ConfigArg,
    examples: Annotated[str | None, typer.Option(
        help="comma-separated target test indices; default: the first of each class")] = None,
    k: Annotated[int, typer.Option(help="source units per example")] = 5,
    variant: VariantOpt = "prob_correct",
    method: MethodOpt = "dim",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    device: DeviceOpt = None,
) -> None:
    """Label projection: the source units most positively influencing target examples."""
    experiment = _on_device(load_config(config), device)
    result = _influence(experiment, variant, method=method)
    chosen = default_examples(result) if examples is None else _int_list(examples, "--examples")
    projections = project_labels(result, chosen, k=k,
                                 predictions=consensus_predictions(_read_store(experiment)))
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in projections], indent=2))
        return
    table = Table(title=f"label projection ({result.variant}, {result.num_models} models)")
    for column in ("target example", "true", "predicted", "projected onto source units"):
        table.add_column(column)
    for p in projections:
        table.add_row(str(p.target_index), p.true_class, p.predicted_class or "",
                      ", ".join(f"{name} ({score:+.3f})" for name, score in p.sources))
    console.print(table)


@app.command()
@_friendly_errors
def debug(
    config: ConfigArg,
    examples: Annotated[str | None, typer.Option(
        help="comma-separated target test indices; default: failures picked automatically")
    ] = None,
    count: Annotated[int, typer.Option(help="failures to pick when --examples is not given")] = 3,
    seeds: Annotated[int, typer.Option(help="models (seeds) per arm")] = 10,
    variant: VariantOpt = "prob_correct",
    method: MethodOpt = "dim",
    runner: RunnerOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = None,
) -> None:
    """Failure debugging: retrain without each failure's most harmful source unit."""
    _check_runner(runner, address)
    experiment = _on_device(load_config(config), device)
    chosen = None if examples is None else _int_list(examples, "--examples")
    plan = SweepPlan.from_config(experiment)
    failures = debug_failures(plan, _influence(experiment, variant, plan.read_store(), method),
                              examples=chosen, count=count, seeds=seeds, quiet=quiet,
                              runner=runner, address=address)
    path = experiment.artifact_path("failures.json")
    save_failures(path, failures)
    table = Table(title=f"debugged failures ({seeds} seeds each)")
    for column in ("target example", "true", "predicted", "culprit", "influence",
                   "correct: baseline", "without culprit", "without random"):
        table.add_column(column)
    for f in failures:
        table.add_row(str(f.target_index), f.true_class, f.predicted_class, f.culprit,
                      f"{f.culprit_score:+.3f}", f"{f.baseline_correct:.0%}",
                      f"{f.fixed_by_removal:.0%}", f"{f.fixed_by_random:.0%}")
    console.print(table if failures else "no misclassified target examples to debug")
    console.print(f"saved -> {path}")


@app.command()
@_friendly_errors
def leakage(
    config: ConfigArg,
    targets: Annotated[str | None, typer.Option(
        help="comma-separated target test indices; default: all")] = None,
    k: Annotated[int, typer.Option(help="candidates per list")] = 5,
    pixel_check: Annotated[bool, typer.Option(
        help="also report each candidate's pixel correlation with the target image")] = False,
    variant: Annotated[str, typer.Option(
        help="output variant; margin (default here) does not saturate on examples that are"
             " already classified confidently, unlike prob_correct")] = "margin",
    method: MethodOpt = "dim",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    device: DeviceOpt = None,
) -> None:
    """Candidate leaks (extreme positive influence) and misleading source examples (extreme
    negative influence) per target example; needs an example-level sweep."""
    _check_variant(variant)
    experiment = _on_device(load_config(config), device)
    if experiment.sweep.unit != "example":
        raise ConfigError("leakage needs source examples as units: set unit = 'example' in the"
                          " [sweep] table and run that sweep.")
    plan = SweepPlan.from_config(experiment) if pixel_check else None
    result = _influence(experiment, variant, plan.read_store() if plan else None, method)
    data = plan.data if plan else None
    found = find_leakage(
        result.influence, result.unit_names, result.target_labels, result.target_class_names,
        k=k, targets=None if targets is None else _int_list(targets, "--targets"),
        source=data.source if data else None, target_images=data.target_test if data else None)
    if as_json:
        typer.echo(json.dumps([asdict(item) for item in found], indent=2))
        return

    def describe(candidates: list) -> str:
        return ", ".join(f"{c.source_name} ({c.score:+.3f}"
                         + ("" if c.similarity is None else f", r={c.similarity:.2f}") + ")"
                         for c in candidates)

    table = Table(title=f"leakage candidates ({result.variant}, {result.num_models} models"
                        + (", r = pixel correlation" if pixel_check else "") + ")")
    for column in ("target", "class", "candidate leaks (most positive)",
                   "misleading (most negative)"):
        table.add_column(column)
    for item in found:
        table.add_row(str(item.target_index), item.true_class, describe(item.leaks),
                      describe(item.misleading))
    console.print(table)


@app.command()
@_friendly_errors
def report(
    config: ConfigArg,
    output: Annotated[Path | None, typer.Option(
        help="HTML file to write; default: <store>.report.html beside the store")] = None,
    variant: VariantOpt = "prob_correct",
    method: MethodOpt = "dim",
    device: DeviceOpt = None,
) -> None:
    """Write one self-contained HTML report of everything computed so far (without a sweep,
    of the influence functions alone)."""
    plan = SweepPlan.from_config(_on_device(load_config(config), device))
    store = plan.read_store() if _sweep_exists(plan.config) else None
    path = write_experiment_report(
        plan, store, None if store is None else _influence(plan.config, variant, store, method),
        output, config_path=str(config))
    console.print(f"report -> {path}")


def _print_pruning(result: PruningResult) -> None:
    for transfer, reference in result.reference.items():
        table = Table(title=f"target accuracy after pruning, {transfer} transfer"
                            f" ({result.seeds} seeds, 95% intervals)")
        for column in ("method", "ratio", "pruned", "kept", "accuracy [95% CI]",
                       "vs none [95% CI]"):
            table.add_column(column, justify="left" if column == "method" else "right")
        table.add_row("(no pruning)", "0", "0", "100%",
                      f"{reference.mean:.3f} [{reference.low:.3f}, {reference.high:.3f}]", "")
        for row in result.rows:
            if row.transfer != transfer:
                continue
            a = row.accuracy
            table.add_row(row.method, f"{row.ratio:g}", str(row.pruned_units),
                          f"{100 * row.kept_fraction:.0f}%",
                          f"{a.mean:.3f} [{a.low:.3f}, {a.high:.3f}]",
                          f"{a.diff_mean:+.3f} [{a.diff_low:+.3f}, {a.diff_high:+.3f}]")
        console.print(table)
        methods = dict.fromkeys(row.method for row in result.rows if row.transfer == transfer)
        wins = ", ".join(f"{method} {ratio:g}" if (ratio := result.winning_ratio(
            transfer, method)) is not None else f"{method} none" for method in methods)
        console.print(f"winning ratio ({transfer}; largest ratio whose difference interval"
                      f" reaches 0): {wins}")
    timing = result.timing
    parts = [f"surrogate {timing['surrogate_seconds']:.1f} s", "scoring " + ", ".join(
        f"{m} {s:.2f} s" for m, s in timing["score_seconds"].items())]
    if "full_model_seconds" in timing:
        kept = ", ".join(f"{r}: {s:.1f} s" for r, s in timing["pruned_model_seconds"].items())
        parts += [f"one model on the full source {timing['full_model_seconds']:.1f} s",
                  f"on the kept data ({timing['timed_method']}) {kept}",
                  (f"the influence sweep ~{timing['sweep_seconds'] / 60:.1f} min (measured per"
                   " model, times num_models)")]
    console.print("time: " + "; ".join(parts))


def _other_targets(plan: SweepPlan, configs: str | None) -> list[LabeledImages]:
    """The target training sets of other experiments on the same source (``--also-targets``)."""
    targets = []
    for path in [part.strip() for part in (configs or "").split(",") if part.strip()]:
        other = SweepPlan.from_config(load_config(path))
        if other.data.source.fingerprint() != plan.data.source.fingerprint():
            raise ConfigError(f"{path} has another source than this experiment; multi-target"
                              " pruning scores one source for several targets, so every"
                              " --also-targets config must build the same source data.")
        targets.append(other.data.target_train)
    return targets


@app.command()
@_friendly_errors
def prune(
    config: ConfigArg,
    method: Annotated[str, typer.Option(
        help=f"comma-separated pruning methods: {', '.join(PRUNING_METHODS)}")] = "lm,random",
    ratios: Annotated[str, typer.Option(
        help="comma-separated fractions of the source to prune, each in (0, 1)")
    ] = "0.2,0.5,0.8",
    seeds: Annotated[int, typer.Option(help="models (seeds) per method and ratio")] = 5,
    transfer: Annotated[str | None, typer.Option(
        help="fixed_feature, finetune or both (comma-separated); default: both when the config"
             " has a [transfer.recipe], else the config's mode")
    ] = None,
    timing: Annotated[bool, typer.Option(
        help="time one model on the full source, a sweep subset and each ratio's kept data")
    ] = True,
    output: Annotated[Path | None, typer.Option(
        help="JSON to write (merged with an earlier run's rows); default: <store>.prune.json")
    ] = None,
    also_targets: Annotated[str | None, typer.Option(
        help="comma-separated configs of other targets on the same source: LM / FM then prune"
             " for all targets at once (multi-target); accuracy is measured on CONFIG's target")
    ] = None,
    variant: VariantOpt = "prob_correct",
    runner: RunnerOpt = "local",
    address: AddressOpt = None,
    quiet: QuietOpt = False,
    device: DeviceOpt = None,
) -> None:
    """Prune the source by a method's scores at several ratios, retrain, compare accuracy.

    Resumable: the surrogate and every retrained model are cached; a killed run continues.
    """
    _check_runner(runner, address)
    methods = [part.strip() for part in method.split(",") if part.strip()]
    try:
        ratio_values = [float(part) for part in ratios.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{ratios!r}; give comma-separated fractions such as 0.2,0.5",
                                 param_hint="--ratios") from None
    experiment = _on_device(load_config(config), device)
    plan = SweepPlan.from_config(experiment)
    influence = None
    if "influence" in methods:
        if not _sweep_exists(experiment):
            raise ConfigError("--method influence needs the sweep's store, and"
                              f" {experiment.store_path()} does not exist; run"
                              f" `transfer-influence run {config}` first.")
        influence = _influence(experiment, variant, plan.read_store())
    transfers = [part.strip() for part in transfer.split(",")] if transfer else None
    result = run_pruning(plan, methods, ratio_values, seeds, transfers=transfers,
                         influence=influence, extra_targets=_other_targets(plan, also_targets),
                         timing=timing, quiet=quiet, runner=runner, address=address)
    path = output or experiment.artifact_path("prune.json")
    if path.exists():
        result = result.merged_into(PruningResult.load(path))
    result.save(path)
    _print_pruning(result)
    console.print(f"saved -> {path}")


@app.command("influence-function")
@_friendly_errors
def influence_function(
    config: ConfigArg,
    validate: Annotated[int, typer.Option(
        help="really remove this many pretraining examples, retrain, and correlate")] = 0,
    tests: Annotated[int, typer.Option(help="target test examples scored one by one")] = 5,
    solver: Annotated[str, typer.Option(
        help="cg, exact (tiny models), identity, or ekfac (EK-FAC pretraining Hessian)")] = "cg",
    damping: Annotated[float, typer.Option(
        help="damping of (H^2 + damping I); ekfac adds sqrt(damping)")] = 0.0,
    cg_tol: Annotated[float, typer.Option(help="CG relative residual tolerance")] = 1e-6,
    train_tol: Annotated[float, typer.Option(help="gradient norm at the optima")] = 1e-6,
    k: Annotated[int, typer.Option(help="examples per list")] = 5,
    seed: Annotated[int, typer.Option(help="seeds the examples --validate removes")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace a run with other arguments")] = False,
) -> None:
    """Multi-stage influence functions (Chen et al. 2020): the influence of every pretraining
    example on the fine-tuned target test loss, without retraining (positive = harmful)."""
    experiment = load_config(config)
    args = InfluenceArgs(experiment.config_hash(), tests, validate, solver, damping, cg_tol,
                         train_tol, seed)
    result = run_influence_function(experiment, args, overwrite=overwrite)
    columns = [("summed test loss", None), *((f"test example {int(t)}", j)
                                           for j, t in enumerate(result.test_indices))]
    table = Table(title="multi-stage influence on the target test loss (+ = harmful)")
    for heading in ("target", "most harmful", "most helpful"):
        table.add_column(heading)
    for name, column in columns:
        table.add_row(name, *(", ".join(f"{unit} ({score:+.3g})" for unit, score in
                                        result.top(k, harmful=harmful, test=column))
                              for harmful in (True, False)))
    console.print(table)
    console.print(f"mean |influence| of a pretraining example: {np.abs(result.total).mean():.4g}"
                  f" on the summed test loss, {np.abs(result.per_test).mean():.4g} on one test"
                  " example")
    if result.validation is not None:
        v = result.validation
        console.print(f"leave-one-out validation on {len(v.indices)} examples: Pearson"
                      f" {v.pearson:.3f}, Spearman {v.spearman:.3f}; identity-Hessian ablation:"
                      f" Pearson {v.ablation_pearson:.3f}, Spearman {v.ablation_spearman:.3f};"
                      f" {v.regime_note()}")
        if v.not_converged:
            console.print(f"left out: {len(v.not_converged)} removals whose retraining did not"
                          f" reach the training tolerance (examples {v.not_converged})")
    console.print(f"saved -> {experiment.artifact_path('influence-function.scores.npz')}")


AGREEMENT_SCORES_SHOWN = 30
"""``agreement`` prints every class's scores up to this many source classes."""


@app.command()
@_friendly_errors
def agreement(
    config: ConfigArg,
    surrogate: Annotated[bool, typer.Option(
        help="train the pruning surrogate for LM / FM if `prune` has not cached it yet")] = True,
    variant: VariantOpt = "prob_correct",
    seed: Annotated[int, typer.Option(help="seeds the random permutations of p-values")] = 0,
) -> None:
    """Rank agreement of the source classes between the methods: influence functions (summed
    per class), the sweep's class influence and the LM / FM pruning scores (Spearman, with
    permutation p-values), from whatever has been computed."""
    plan = SweepPlan.from_config(load_config(config))
    store = plan.config.store_path()
    sweep = (_influence(plan.config, variant, plan.read_store())
             if "://" in store or Path(store).exists() else None)
    table = experiment_agreement(
        plan, influence_function=saved_influence_function(plan), sweep=sweep,
        surrogate=train_surrogate(plan, quiet=False) if surrogate else None, config=str(config),
        seed=seed)
    out = Table(title=f"rank agreement over {len(table.class_names)} source classes"
                      " (higher = more helpful in every method)")
    for column in ("methods", "Spearman rho", "p-value", "classes"):
        out.add_column(column, justify="left" if column == "methods" else "right")
    for row in table.rows:
        out.add_row(f"{row.first} vs {row.second}", f"{row.rho:+.3f}",
                    f"{row.p_value:.3g}{' (exact)' if row.exact else ''}", str(row.classes))
    console.print(out)
    if table.scores and len(table.class_names) <= AGREEMENT_SCORES_SHOWN:
        scores = Table(title="class scores (higher = more helpful)")
        scores.add_column("source class")
        for method in table.scores:
            scores.add_column(method, justify="right")
        for c, name in enumerate(table.class_names):
            scores.add_row(name, *(f"{values[c]:+.4g}" for values in table.scores.values()))
        console.print(scores)
    for method, how in table.missing.items():
        console.print(f"no {method} scores: needs `{how}`")


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
    device: DeviceOpt = None,
) -> None:
    """Real-data demo: Fashion-MNIST + MNIST digits as source, scikit-learn digits as target.

    Runs (or resumes) the sweep, then prints the most helpful and harmful source classes for
    every target digit.
    """
    experiment = _on_device(quickstart_config(store, models), device)
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
