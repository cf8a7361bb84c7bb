"""Tests for bertkit.resume and the epoch replay of DataGenerator: a training run
interrupted anywhere and resumed ends with the weights of a run that never stopped."""
import json
import os

import h5py
import keras
import numpy as np
import pytest

from bertkit.callbacks import Evaluator
from bertkit.data import DataGenerator
from bertkit.optimizers import fine_tuning_optimizer
from bertkit.resume import TrainingBackup, fit_epochs, restore_state, state_bytes
from bertkit.storage import RunDirectory, write_bytes_atomically


class DrawingGenerator(DataGenerator):
    """Batches of ``(x, y)`` plus a value drawn from ``random_state`` per item, as the
    triple generator draws a subject per text: a replay must draw the same."""

    def __iter__(self, random=False):
        xs, ys = [], []
        for is_end, (x, y) in self.sample(random):
            xs.append(x + self.random_state.randint(100) * 1e-3)
            ys.append(y)
            if len(xs) == self.batch_size or is_end:
                yield np.array(xs, "float32"), np.array(ys, "float32")
                xs, ys = [], []


def make_items(n=30, seed=0):
    rng = np.random.RandomState(seed)
    return [(rng.randn(3).astype("float32"), np.float32(rng.randn())) for _ in range(n)]


def test_replaying_yields_an_epochs_batches_again_from_any_batch():
    def fresh():
        return DrawingGenerator(make_items(), batch_size=4, bucket=True,
                                bucket_key=lambda item: item[0][0], seed=5)
    gen = fresh()
    epochs = [list(gen.epoch_batches(True)) for _ in range(3)]
    assert len(epochs[0]) == 8
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # epochs differ
    replayed = fresh()
    with replayed.replaying(1, 3):
        twice = [list(replayed.epoch_batches(True)) for _ in range(2)]
    for again in twice:  # every pass inside the block is the same epoch, from batch 3
        assert len(again) == 5
        for (x, y), (x1, y1) in zip(again, epochs[1][3:]):
            np.testing.assert_array_equal(x, x1)
            np.testing.assert_array_equal(y, y1)
    following = list(replayed.epoch_batches(True))  # then epoch 2 goes on
    for (x, _), (x2, _) in zip(following, epochs[2]):
        np.testing.assert_array_equal(x, x2)


def test_replaying_needs_a_seed_and_a_batch_inside_the_epoch():
    with pytest.raises(ValueError, match="build the generator with seed"):
        with DrawingGenerator(make_items(), batch_size=4).replaying(1):
            pass
    with pytest.raises(ValueError, match=r"batch must be in \[0, 8\)"):
        with DrawingGenerator(make_items(), batch_size=4, seed=0).replaying(0, 8):
            pass


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="Transformer-0-FeedForward")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="Output")(hidden))


def compiled(seed=0, total_steps=24):
    model = small_model(seed)
    model.compile(fine_tuning_optimizer(0.05, total_steps, warmup_steps=3, ema_momentum=0.7),
                  loss="mse")
    return model


def test_a_state_round_trips_and_a_state_of_another_model_changes_nothing(tmp_path):
    model = compiled()
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    path = str(tmp_path / "state.h5")
    write_bytes_atomically(path, state_bytes(model, model.optimizer, {"step": 1}))
    saved = [np.array(v) for v in model.weights + model.optimizer.variables]
    for v in model.weights + model.optimizer.variables:
        v.assign(np.zeros(v.shape, v.dtype))
    assert restore_state(path, model, model.optimizer) == {"step": 1}
    for v, value in zip(model.weights + model.optimizer.variables, saved):
        np.testing.assert_array_equal(np.array(v), value)

    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5), keras.layers.Dense(1)])
    other.compile(fine_tuning_optimizer(0.05, 24, ema_momentum=0.7), loss="mse")
    before = [np.array(v) for v in other.weights]
    with pytest.raises(ValueError, match="has shape"):
        restore_state(path, other, other.optimizer)
    for v, value in zip(other.weights, before):
        np.testing.assert_array_equal(np.array(v), value)


class LossEvaluator(Evaluator):
    """A score that changes every epoch: minus the mean squared error on the data."""

    def __init__(self, data, **kwargs):
        super().__init__(None, **kwargs)
        self.data = data

    def evaluate(self):
        x = np.stack([x for x, _ in self.data])
        y = np.array([y for _, y in self.data])
        return -float(np.mean((self.model.predict_on_batch(x)[:, 0] - y) ** 2))


class StopAt(keras.callbacks.Callback):
    """Ctrl-C after ``step`` steps, as the user would press it."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt


def train(tmp_path, name, stop_at=None, resume=False, flags=None):
    """Trains 4 epochs of 6 steps; returns ``(model, run, evaluator)``."""
    items = make_items(24)
    generator = DrawingGenerator(items, batch_size=4, seed=3)
    model = compiled(total_steps=24)
    run = RunDirectory(str(tmp_path / name))
    manifest = run.claim(resume=resume)
    evaluator = LossEvaluator(items, name="score", verbose=0)
    evaluator.save_best = lambda: run.commit(
        {}, {"weights": ("best.weights.h5", lambda p: model.save_weights(p))},
        state={"score": evaluator.best}, keep=("state",))
    backup = TrainingBackup(run, {}, len(generator), save_every_steps=4, evaluator=evaluator,
                            seed=3, flags=flags or {"lr": 0.05})
    backup.set_model(model)
    start = backup.restore(run.file("state")) if resume and manifest else (0, 0)
    callbacks = [evaluator] + ([StopAt(stop_at)] if stop_at else [])
    fit_epochs(model, generator, lambda g: g.to_dataset(repeat=False), 4,
               callbacks=callbacks, backup=backup, start=start, verbose=0)
    backup.finish({"last_weights": ("last.weights.h5", lambda p: model.save_weights(p))})
    return model, run, evaluator


def test_ctrl_c_saves_and_resume_ends_with_the_uninterrupted_weights(tmp_path):
    straight, _, straight_eval = train(tmp_path, "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "interrupted", stop_at=15)  # epoch 3, batch 3; last periodic save: 12
    run = RunDirectory(str(tmp_path / "interrupted"))
    manifest = run.read()
    assert set(manifest["files"]) == {"weights", "state"}
    assert manifest["state"]["step"] == 15  # saved on Ctrl-C, not at the save before
    with h5py.File(run.file("state")) as f:
        assert (f.attrs["epoch"], f.attrs["batch"]) == (2, 3)
    resumed, run, resumed_eval = train(tmp_path, "interrupted", resume=True)
    for a, b in zip(straight.weights + straight.optimizer.variables,
                    resumed.weights + resumed.optimizer.variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=1e-6)
    assert resumed_eval.best == pytest.approx(straight_eval.best, abs=1e-6)
    # Finished: the state is gone, the best and the last weights stay.
    assert set(run.read()["files"]) == {"weights", "last_weights"}
    assert sorted(os.listdir(run.path)) == sorted(["run.json", *run.read()["files"].values()])


def test_a_resume_with_other_flags_is_refused_naming_them(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "run", stop_at=5)
    with pytest.raises(ValueError, match=r"--lr 0.1 \(the saved run: 0.05\)"):
        train(tmp_path, "run", resume=True, flags={"lr": 0.1})


def test_a_replacing_run_never_keeps_the_files_of_the_run_it_replaces(tmp_path):
    old = RunDirectory(str(tmp_path))
    old.commit({"run": 1}, {"weights": ("best.weights.h5",
                                         lambda p: write_bytes_atomically(p, b"old"))})
    new = RunDirectory(str(tmp_path))
    new.claim(overwrite=True)
    new.commit({"run": 2}, {"state": ("resume.h5", lambda p: write_bytes_atomically(p, b"s"))},
               keep=("weights",))
    manifest = json.load(open(tmp_path / "run.json"))
    assert manifest["settings"] == {"run": 2} and set(manifest["files"]) == {"state"}
    assert sorted(os.listdir(tmp_path)) == ["resume.2.h5", "run.json"]


def test_backup_refuses_a_nonpositive_interval(tmp_path):
    with pytest.raises(ValueError, match="save_every_steps must be at least 1"):
        TrainingBackup(RunDirectory(str(tmp_path)), {}, 5, save_every_steps=0)
