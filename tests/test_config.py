"""Experiment configs: validation messages name the bad key; the hash covers what matters."""

import subprocess
import sys
from pathlib import Path

import pytest

import transfer_influence
from transfer_influence.config import ExperimentConfig, load_config, parse_config
from transfer_influence.errors import ConfigError
from transfer_influence.recipe import TrainRecipe
from transfer_influence.sweep.plan import SweepPlan

EXAMPLES = Path(__file__).parents[1] / "examples"
BASE = {
    "data": {"suite": "planted", "options": {"n_per_class": 20}},
    "model": {"name": "mlp", "options": {"width": 32}},
    "pretrain": {"epochs": 2, "lr": 0.1},
    "sweep": {"num_models": 8},
}


def _with(**changes) -> dict:
    raw = {key: dict(value) for key, value in BASE.items()}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    return raw


def test_valid_config_has_defaults():
    config = parse_config(_with())
    assert config.sweep.alpha == 0.5 and config.sweep.unit == "class"
    assert config.sweep.on_divergence == "record"
    assert config.transfer.mode == "fixed_feature"


def test_unknown_key_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"sweep\.num_modles: unknown key"):
        parse_config(_with(sweep__num_modles=3))


def test_wrong_type_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"pretrain\.epochs"):
        parse_config(_with(pretrain__epochs="many"))
    with pytest.raises(ConfigError, match=r"sweep\.alpha"):
        parse_config(_with(sweep__alpha=1.5))
    with pytest.raises(ConfigError, match=r"sweep\.on_divergence"):
        parse_config(_with(sweep__on_divergence="retry"))


def test_finetune_needs_its_recipe():
    with pytest.raises(ConfigError, match="finetune"):
        parse_config(_with(transfer__mode="finetune"))


def test_proximal_is_for_finetuning_and_hashed_only_when_on():
    with pytest.raises(ConfigError, match="transfer.proximal"):
        parse_config(_with(transfer__proximal=0.1))
    recipe = {"epochs": 1, "lr": 0.01}
    off = parse_config(_with(transfer__mode="finetune", transfer__recipe=recipe)).config_hash()
    spelled_out = _with(transfer__mode="finetune", transfer__recipe=recipe, transfer__proximal=0)
    assert parse_config(spelled_out).config_hash() == off
    on = _with(transfer__mode="finetune", transfer__recipe=recipe, transfer__proximal=0.1)
    assert parse_config(on).config_hash() != off


def test_suite_and_explicit_datasets_are_exclusive():
    raw = _with()
    raw["data"]["source"] = [{"name": "fashion-mnist"}]
    with pytest.raises(ConfigError, match="either `suite`"):
        parse_config(raw)


def test_hash_ignores_store_group_size_and_num_models_but_not_results():
    base = parse_config(_with()).config_hash()
    assert parse_config(_with(sweep__store="elsewhere.zarr")).config_hash() == base
    assert parse_config(_with(sweep__group_size=3)).config_hash() == base
    assert parse_config(_with(sweep__num_models=800)).config_hash() == base  # a sweep grows
    assert parse_config(_with(sweep__on_divergence="stop")).config_hash() == base
    assert parse_config(_with(sweep__seed=1)).config_hash() != base
    assert parse_config(_with(pretrain__lr=0.2)).config_hash() != base
    assert parse_config(_with(transfer__l2=0.5)).config_hash() != base


def test_hash_ignores_settings_left_at_their_default():
    base = parse_config(_with()).config_hash()
    spelled_out = _with(sweep__alpha=0.5, pretrain__batch_size=256, pretrain__hflip=False)
    spelled_out["transfer"] = {"mode": "fixed_feature", "l2": 1e-3}
    assert parse_config(spelled_out).config_hash() == base
    assert parse_config(_with(pretrain__batch_size=128)).config_hash() != base


def test_a_finetuning_recipe_counts_only_when_fine_tuning():
    """`prune --transfer finetune` needs a [transfer.recipe]; adding one to a fixed-feature
    experiment must not orphan its sweep store, while under fine-tuning it decides the models."""
    base = parse_config(_with()).config_hash()
    recipe = {"epochs": 5, "lr": 0.01}
    assert parse_config(_with(transfer__recipe=recipe)).config_hash() == base
    tuned = parse_config(_with(transfer__mode="finetune", transfer__recipe=recipe)).config_hash()
    retuned = parse_config(_with(transfer__mode="finetune",
                                 transfer__recipe={**recipe, "lr": 0.02})).config_hash()
    assert len({base, tuned, retuned}) == 3
    assert parse_config(_with(transfer__recipe=recipe, transfer__l2=0.5)).config_hash() == (
        parse_config(_with(transfer__l2=0.5)).config_hash())


def test_a_new_option_with_a_default_keeps_existing_hashes():
    """An option added later (here to a nested table) leaves the hash of every config that does
    not set it unchanged, so stores written before it existed still open."""
    class NewRecipe(TrainRecipe):
        new_option: float = 0.0

    class NewExperiment(ExperimentConfig):
        pretrain: NewRecipe

    raw = _with()
    assert NewExperiment.model_validate(raw).config_hash() == parse_config(raw).config_hash()
    changed = NewExperiment.model_validate(_with(pretrain__new_option=0.3)).config_hash()
    assert changed != parse_config(raw).config_hash()


def test_load_config_errors_are_clear(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\nnum_models = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relative_store_resolves_against_the_config_folder(tmp_path: Path):
    path = tmp_path / "exp.toml"
    path.write_text(
        '[data]\nsuite = "planted"\n[pretrain]\nepochs = 1\nlr = 0.1\n'
        '[sweep]\nnum_models = 4\nstore = "out/s.zarr"\n'
    )
    assert load_config(path).store_path() == str(tmp_path / "out" / "s.zarr")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_example_configs_load(path: Path):
    config = load_config(path)
    assert config.sweep.num_models >= 64 and not Path(config.sweep.store).is_absolute()


def test_many_class_example_has_262_units():
    config = load_config(EXAMPLES / "many_class.toml")
    plan = SweepPlan.from_config(config)
    assert len(plan.unit_names) == 262 and plan.data.target_test.num_classes == 10


def test_loading_a_config_needs_neither_torch_nor_numpy():
    """The config layer (config.py, recipe.py, errors.py) sits below every stage: with torch and
    numpy made unimportable, and the package's __init__ (which re-exports the stages) bypassed,
    an example config still loads and hashes."""
    package = Path(transfer_influence.__file__).parent
    script = f"""
import sys, types
sys.modules["torch"] = None
sys.modules["numpy"] = None
stub = types.ModuleType("transfer_influence")
stub.__path__ = [{str(package)!r}]
sys.modules["transfer_influence"] = stub
from transfer_influence.config import load_config
config = load_config({str(EXAMPLES / "fashion_digits.toml")!r})
print(config.pretrain.objective, config.config_hash())
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    expected = load_config(EXAMPLES / "fashion_digits.toml")
    assert done.stdout.split() == [expected.pretrain.objective, expected.config_hash()]
