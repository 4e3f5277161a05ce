"""Sweep store: round trips, config checks, honest completion, URLs and concurrent writers."""

import multiprocessing
import pickle
import uuid

import numpy as np
import pytest
import zarr

from transfer_influence.errors import DataError, StoreError
from transfer_influence.outputs import TargetOutputs
from transfer_influence.sweep.masks import subset_masks
from transfer_influence.sweep.store import SweepStore

MODELS, UNITS, TARGETS, CLASSES = 6, 5, 4, 3
LABELS = np.array([0, 1, 2, 1])
FIELDS = ("correct_logit", "max_other_logit", "logsumexp", "predicted")


def spec(**changes):
    """Keyword arguments of SweepStore.create for a small sweep."""
    arguments = {
        "num_models": MODELS,
        "unit_names": [f"unit{u}" for u in range(UNITS)],
        "target_labels": LABELS,
        "target_class_names": ["cat", "dog", "frog"],
        "config_hash": "abc123",
        "fingerprints": {"source": "f00", "target": "ba7"},
    }
    return arguments | changes


def fake_model(index, classes=CLASSES):
    """Deterministic mask, outputs and logits of model ``index``."""
    mask = subset_masks(0, [index], UNITS, 0.4)[0]
    logits = np.random.default_rng(index).normal(size=(1, TARGETS, classes)).astype(np.float32)
    return mask, TargetOutputs.from_logits(logits, LABELS), logits


def stack(outputs):
    """Concatenate TargetOutputs along the models axis."""
    return TargetOutputs(*(np.concatenate([getattr(o, f) for o in outputs]) for f in FIELDS))


def write(store, indices):
    for i in indices:
        mask, outputs, _ = fake_model(i)
        store.write_model(i, mask, outputs)


def test_create_open_round_trip(tmp_path):
    path = tmp_path / "sweep.zarr"
    store = SweepStore.create(path, **spec())
    write(store, [0, 3])
    reopened = SweepStore.open(path, config_hash="abc123")
    assert reopened.status() == (2, MODELS) and reopened.num_completed == 2
    assert reopened.missing().tolist() == [1, 2, 4, 5]
    assert reopened.unit_names == spec()["unit_names"]
    assert reopened.target_class_names == ["cat", "dog", "frog"]
    assert reopened.fingerprints == {"source": "f00", "target": "ba7"}
    assert set(reopened.versions) == {"transfer-influence", "torch", "numpy", "zarr"}
    assert reopened.created and reopened.config_hash == "abc123"
    np.testing.assert_array_equal(reopened.target_labels, LABELS)
    outputs, expected = reopened.read_outputs(), stack([fake_model(i)[1] for i in (0, 3)])
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(outputs, name), getattr(expected, name))
    assert outputs.predicted.dtype == np.int64 and outputs.logsumexp.dtype == np.float32
    np.testing.assert_array_equal(reopened.read_masks([3]), fake_model(3)[0][None])


def test_missing_store_and_other_config(tmp_path):
    path = tmp_path / "sweep.zarr"
    with pytest.raises(StoreError, match="no sweep store"):
        SweepStore.open(path)
    write(SweepStore.create(path, **spec()), [1])
    with pytest.raises(StoreError, match="another configuration"):
        SweepStore.open(path, config_hash="other")
    with pytest.raises(StoreError, match="another configuration"):
        SweepStore.open_or_create(path, **spec(config_hash="other"))
    with pytest.raises(StoreError, match="already exists"):
        SweepStore.create(path, **spec(config_hash="other"))
    # Nothing was overwritten.
    store = SweepStore.open(path, config_hash="abc123")
    assert store.completed().tolist() == [False, True, False, False, False, False]
    np.testing.assert_array_equal(
        store.read_outputs([1]).correct_logit, fake_model(1)[1].correct_logit
    )


def test_open_or_create_resumes_and_checks_shapes(tmp_path):
    path = tmp_path / "sweep.zarr"
    first = SweepStore.open_or_create(path, **spec())
    write(first, [2])
    resumed = SweepStore.open_or_create(path, **spec())
    assert resumed.completed()[2] and resumed.num_completed == 1
    with pytest.raises(StoreError, match=f"cannot shrink to {MODELS - 1}"):
        SweepStore.open_or_create(path, **spec(num_models=MODELS - 1))
    with pytest.raises(StoreError, match="fingerprints"):
        SweepStore.open_or_create(path, **spec(fingerprints={"source": "new"}))


def test_models_computed_otherwise_are_not_mixed_in(tmp_path):
    """A store written before CNNs trained channels-last records no numerics: it still reads,
    but adding channels-last models to it is refused with the reason; a matching store resumes."""
    layout = {"conv_layout": "channels_last"}
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    write(SweepStore.create(old, **spec()), [0])
    assert SweepStore.open(old, config_hash="abc123", read_only=True).numerics == {}
    with pytest.raises(StoreError, match="different numerics .*channels_last.*float rounding"):
        SweepStore.open_or_create(old, **spec(numerics=layout))
    SweepStore.open_or_create(new, **spec(numerics=layout))
    assert SweepStore.open_or_create(new, **spec(numerics=layout)).numerics == layout
    with pytest.raises(StoreError, match="different numerics"):
        SweepStore.open_or_create(new, **spec())


def test_grow_keeps_models_and_one_model_per_chunk(tmp_path):
    path = tmp_path / "sweep.zarr"
    store = SweepStore.create(path, **spec())
    for i in [1, 4]:
        mask, outputs, _ = fake_model(i)
        store.write_model(i, mask, outputs)
    grown = SweepStore.open_or_create(path, **spec(num_models=MODELS + 3))
    assert grown.status() == (2, MODELS + 3)
    assert grown.missing().tolist() == [0, 2, 3, 5, 6, 7, 8]
    np.testing.assert_array_equal(grown.read_outputs([4]).correct_logit,
                                  fake_model(4)[1].correct_logit)
    group = zarr.open_group(str(path), mode="r")
    for name in ["masks", "completed", "finished_at", *(f"outputs/{f}" for f in FIELDS)]:
        assert group[name].shape[0] == MODELS + 3 and group[name].chunks[0] == 1, name
    mask, outputs, _ = fake_model(MODELS + 2)
    grown.write_model(MODELS + 2, mask, outputs)
    assert SweepStore.open(path).completed().tolist() == [False, True, False, False, True,
                                                           False, False, False, True]


def test_grow_interrupted_before_its_attribute_is_safe_to_rerun(tmp_path):
    path = tmp_path / "sweep.zarr"
    write(SweepStore.create(path, **spec()), [0, 5])
    group = zarr.open_group(str(path), mode="r+")
    for name in ["masks", "completed"]:  # a crash after resizing two arrays
        group[name].resize((MODELS + 4, *group[name].shape[1:]))
    interrupted = SweepStore.open(path)
    assert interrupted.status() == (2, MODELS) and interrupted.completed().size == MODELS
    assert [chunk.indices.tolist() for chunk in interrupted.iter_completed_chunks()] == [[0, 5]]
    grown = SweepStore.open_or_create(path, **spec(num_models=MODELS + 4))
    assert grown.status() == (2, MODELS + 4)
    assert zarr.open_group(str(path), mode="r")["outputs/logsumexp"].shape[0] == MODELS + 4
    write(grown, [MODELS + 3])
    assert SweepStore.open(path).missing().tolist() == [1, 2, 3, 4, 6, 7, 8]


def test_half_written_model_is_missing_and_rewritten(tmp_path):
    path = tmp_path / "sweep.zarr"
    store = SweepStore.create(path, **spec())
    write(store, [0])
    # Simulate a writer dying after its data chunks but before the completion flag.
    mask, outputs, _ = fake_model(4)
    group = zarr.open_group(str(path), mode="r+")
    group["masks"][4] = mask
    for name in FIELDS:
        group[f"outputs/{name}"][4] = getattr(outputs, name)[0]
    assert 4 in store.missing() and store.num_completed == 1
    assert [chunk.indices.tolist() for chunk in store.iter_completed_chunks(2)] == [[0]]
    with pytest.raises(StoreError, match="not completed"):
        store.read_outputs([4])
    store.write_model(4, mask, outputs)  # resume rewrites it
    assert store.completed()[[0, 4]].all() and store.num_completed == 2


def test_iter_completed_chunks_yields_only_completed_rows(tmp_path):
    store = SweepStore.create(tmp_path / "s.zarr", **spec())
    write(store, [5, 1, 2, 4])
    chunks = list(store.iter_completed_chunks(3))  # model ranges [0, 3) and [3, 6)
    assert [c.indices.tolist() for c in chunks] == [[1, 2], [4, 5]]
    assert [c.indices.tolist() for c in store.iter_completed_chunks(1)] == [[1], [2], [4], [5]]
    for chunk in chunks:
        expected = subset_masks(0, chunk.indices, UNITS, 0.4)
        np.testing.assert_array_equal(chunk.masks, expected)
        assert chunk.outputs.shape == (len(chunk.indices), TARGETS)
    masks, outputs = store.read_masks(), store.read_outputs()
    assert masks.shape == (4, UNITS) and outputs.shape == (4, TARGETS)


@pytest.mark.parametrize("order", [[2, 3, 4], [4, 0, 2]])  # a run (slice) and a gather
def test_write_models_in_any_order(tmp_path, order):
    store = SweepStore.create(tmp_path / "s.zarr", **spec())
    models = [fake_model(i) for i in order]
    store.write_models(order, np.stack([m[0] for m in models]), stack([m[1] for m in models]))
    assert store.completed().nonzero()[0].tolist() == sorted(order)
    for i in order:
        np.testing.assert_array_equal(store.read_masks([i])[0], fake_model(i)[0])
        np.testing.assert_array_equal(store.read_outputs([i]).logsumexp,
                                      fake_model(i)[1].logsumexp)


def test_rewriting_a_completed_model(tmp_path):
    store = SweepStore.create(tmp_path / "s.zarr", **spec())
    mask, outputs, _ = fake_model(0)
    store.write_model(0, mask, outputs)
    store.write_model(0, mask, outputs)  # an identical retry is fine
    with pytest.raises(StoreError, match="different"):
        store.write_model(0, ~mask, outputs)
    # A batch whose completed row differs is rejected as a whole: model 1 is not written either.
    swapped = stack([fake_model(1)[1], fake_model(1)[1]])
    with pytest.raises(StoreError, match="different"):
        store.write_models([0, 1], np.stack([mask, fake_model(1)[0]]), swapped)
    assert store.completed().tolist() == [True] + [False] * (MODELS - 1)


def test_bad_writes_are_rejected(tmp_path):
    store = SweepStore.create(tmp_path / "s.zarr", **spec())
    mask, outputs, _ = fake_model(0)
    with pytest.raises(DataError, match="unique"):
        store.write_model(MODELS, mask, outputs)
    with pytest.raises(DataError, match="masks must be bool"):
        store.write_model(0, mask.astype(int), outputs)
    nan = TargetOutputs(outputs.correct_logit * np.nan, outputs.max_other_logit,
                        outputs.logsumexp, outputs.predicted)
    with pytest.raises(DataError, match="diverged"):
        store.write_model(0, mask, nan)
    assert store.num_completed == 0


def test_pickles_as_its_path(tmp_path):
    store = SweepStore.create(tmp_path / "s.zarr", **spec())
    write(store, [2])
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path and clone.completed().tolist() == store.completed().tolist()


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_urls(tmp_path, scheme):
    url = (f"memory://{uuid.uuid4().hex}/sweep.zarr" if scheme == "memory"
           else f"file://{tmp_path}/sweep.zarr")
    write(SweepStore.create(url, **spec()), [0, 5])
    store = SweepStore.open(url, config_hash="abc123")
    assert store.completed().tolist() == [True, False, False, False, False, True]
    assert "sweep.zarr" in repr(store)


def _worker(path, indices):
    store = SweepStore.open(path, config_hash="abc123")
    for i in indices:
        mask, outputs, _ = fake_model(i)
        store.write_model(i, mask, outputs)


def test_concurrent_writers_of_disjoint_models_lose_nothing(tmp_path):
    path = str(tmp_path / "sweep.zarr")
    count = 40
    SweepStore.create(path, **spec(num_models=count))
    context = multiprocessing.get_context("spawn")
    # Interleaved indices: with shared chunks, the two writers would race on every chunk.
    workers = [context.Process(target=_worker, args=(path, range(r, count, 2))) for r in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    store = SweepStore.open(path)
    assert store.status() == (count, count)
    np.testing.assert_array_equal(store.read_masks(), subset_masks(0, range(count), UNITS, 0.4))
    expected = np.concatenate([fake_model(i)[1].logsumexp for i in range(count)])
    np.testing.assert_array_equal(store.read_outputs().logsumexp, expected)


def test_recent_rate_counts_models_per_second(tmp_path, monkeypatch):
    store = SweepStore.create(
        tmp_path / "rate.zarr", num_models=4, unit_names=["a", "b"], target_labels=[0, 1],
        target_class_names=["x", "y"], config_hash="h", fingerprints={},
    )
    logits = np.zeros((1, 2, 2), dtype=np.float32)
    outputs = TargetOutputs.from_logits(logits, np.array([0, 1]))
    assert store.recent_rate() is None
    for i, now in enumerate([100.0, 102.0, 104.0]):
        monkeypatch.setattr("transfer_influence.sweep.store.time.time", lambda now=now: now)
        store.write_model(i, np.array([True, False]), outputs)
    assert store.recent_rate() == pytest.approx(0.5)  # 2 intervals over 4 seconds
