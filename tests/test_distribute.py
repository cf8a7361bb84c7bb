"""Tests for bertkit.distribute: TF_CONFIG checks, per-replica slices of global batches,
whole-batch inference under a strategy, and two real workers on loopback ports.

Strategies with several replicas need TensorFlow configured at start-up (logical CPUs,
collectives), so those checks run this file as a script in subprocesses: ``mirrored``
(two logical CPUs in one process) and ``train`` (one worker of a ``TF_CONFIG`` cluster,
or the single process it is compared with).
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bertkit import distribute  # noqa: E402
from local_cluster import worker_environments  # noqa: E402

GLOBAL_BATCH, STEPS, ACCUMULATE = 8, 6, 2


def run_script(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


# -- TF_CONFIG ---------------------------------------------------------------------------


def tf_config(cluster, task_type="worker", index=0):
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type,
                                                                  "index": index}})}


def test_tf_config_is_read_with_the_chief_first():
    workers = ["127.0.0.1:1000", "127.0.0.1:1001"]
    assert distribute.read_tf_config(tf_config({"worker": workers}, index=1)) == (workers, 1)
    cluster = {"chief": ["h0:1"], "worker": ["h1:2", "h2:3"]}
    assert distribute.read_tf_config(tf_config(cluster, "chief", 0)) == (["h0:1", "h1:2", "h2:3"], 0)
    assert distribute.read_tf_config(tf_config(cluster, "worker", 1))[1] == 2


@pytest.mark.parametrize("environ, message", [
    ({}, "--distribute multiworker needs TF_CONFIG"),
    ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not JSON"),
    ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "needs a 'cluster' and a 'task'"),
    (tf_config({"worker": ["a:1"]}, index=1), "task index 1 is out of range for the 1"),
    (tf_config({"worker": ["a:1"]}, "chief"), "task type 'chief' is not a job"),
    (tf_config({"worker": ["a"]}), "must be a list of 'host:port'"),
    (tf_config({"worker": ["a:1"], "ps": ["b:2"]}), "has job(s) ['ps']"),
])
def test_bad_tf_config_is_refused_naming_the_problem(environ, message):
    with pytest.raises(ValueError) as raised:
        distribute.read_tf_config(environ)
    assert message in str(raised.value)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        distribute.make_strategy("horovod")


def test_dropped_per_epoch_counts_the_remainders():
    assert distribute.dropped_per_epoch([8, 8, 5], 2) == 1
    assert distribute.dropped_per_epoch([8, 7, 3], 4) == 6
    assert distribute.dropped_per_epoch([8, 3], 1) == 0


# -- inference on one batch, in this process ----------------------------------------------


def counting_layer():
    """An identity layer that counts how often its Python code runs: once per trace."""
    import keras

    class CountCalls(keras.layers.Layer):
        calls = 0

        def call(self, x):
            CountCalls.calls += 1
            return x

    return CountCalls


def test_predict_on_batch_traces_a_model_once_for_every_batch_shape():
    import logging

    import keras
    import tensorflow as tf

    counter = counting_layer()
    ids = keras.Input((None,), dtype="int32")
    embedding, dense = keras.layers.Embedding(10, 3), keras.layers.Dense(2)
    token_model = keras.Model(ids, dense(counter()(embedding(ids))))
    hidden, picked = keras.Input((None, 3)), keras.Input((3,))
    dense_h, dense_p = keras.layers.Dense(2), keras.layers.Dense(2)
    pair_model = keras.Model([hidden, picked], dense_h(counter()(hidden))
                             + keras.ops.expand_dims(dense_p(picked), 1))
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    rng = np.random.RandomState(0)
    traced_at_build = counter.calls
    try:
        # The lengths and batch sizes of a validation pass: full batches, then the rest.
        for rows, length in [(4, 7), (4, 9), (4, 5), (3, 12), (4, 7), (1, 3)]:
            x = rng.randint(0, 10, (rows, length))  # int64, as padded batches are
            out = distribute.predict_on_batch(token_model, x)
            (table,), (k, b) = embedding.get_weights(), dense.get_weights()
            np.testing.assert_allclose(out, table[x] @ k + b, rtol=1e-5, atol=1e-6)
            h = rng.randn(rows * 2, length, 3).astype("float32")
            p = rng.randn(rows * 2, 3)  # float64: cast to the input's float32
            out = distribute.predict_on_batch(pair_model, [h, p])
            (kh, bh), (kp, bp) = dense_h.get_weights(), dense_p.get_weights()
            np.testing.assert_allclose(out, h @ kh + bh + (p @ kp + bp)[:, None],
                                       rtol=1e-5, atol=1e-5)
    finally:
        tf.get_logger().removeHandler(handler)
    assert counter.calls - traced_at_build == 2  # one trace for each model
    assert not [w for w in warnings if "retracing" in w]


def test_predict_on_batch_keeps_a_models_own_predict_step():
    import keras

    class Argmax(keras.Model):
        def predict_step(self, data):
            x = keras.utils.unpack_x_y_sample_weight(data)[0]
            return keras.ops.argmax(self(x, training=False), axis=-1)

    x = keras.Input((3,))
    model = Argmax(x, keras.layers.Dense(4)(x))
    batch = np.random.RandomState(1).randn(5, 3).astype("float32")
    kernel, bias = model.layers[1].get_weights()
    np.testing.assert_array_equal(distribute.predict_on_batch(model, batch),
                                  np.argmax(batch @ kernel + bias, axis=-1))


# -- two logical CPUs in one process ---------------------------------------------------------


def mirrored_script():
    """Prints what each replica receives of two global batches, and inference results."""
    import keras
    import tensorflow as tf

    cpu, = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    batches = [np.arange(12).reshape(6, 2), np.arange(100, 110).reshape(5, 2)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter([(b, b[:, 0]) for b in batches]),
        output_signature=(tf.TensorSpec([None, 2], tf.int64), tf.TensorSpec([None], tf.int64)))
    seen = []
    for x, y in distribute.distribute_batches(strategy, dataset):
        seen.append([[a.numpy().tolist(), b.numpy().tolist()] for a, b in zip(
            strategy.experimental_local_results(x), strategy.experimental_local_results(y))])
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = np.random.RandomState(0).randn(5, 3).astype("float32")
    expected = x @ model.weights[0].numpy() + model.weights[1].numpy()
    predicted = distribute.predict_on_batch(model, x)
    distribute._patch_keras_for_distribution()  # what make_strategy does
    weighted = [weighted_mean_fit(s) for s in (tf.distribute.get_strategy(), strategy)]
    clipped = [weighted_mean_fit(s, global_clipnorm=0.05)
               for s in (tf.distribute.get_strategy(), strategy)]
    print(json.dumps({"seen": seen, "keras_rows": len(model.predict_on_batch(x)),
                      "ours": float(np.abs(predicted - expected).max()),
                      "rows": len(predicted),
                      "weighted": max(float(np.abs(a - b).max()) for a, b in zip(*weighted)),
                      "clipped": max(float(np.abs(a - b).max()) for a, b in zip(*clipped)),
                      "clipping_matters": max(float(np.abs(a - b).max())
                                              for a, b in zip(weighted[0], clipped[0]))}))


def weighted_mean_fit(strategy, **clipping):
    """Weights after 3 SGD steps on a token loss averaged over real tokens, whose count
    differs between the two halves of each batch (so between the replicas)."""
    import keras
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.randn(24, 5, 3).astype("float32")
    y = rng.randint(0, 4, (24, 5))
    weights = np.zeros((24, 5), "float32")
    for row in range(24):
        weights[row, :1 + 4 * (row % 8 < 4)] = 1.0  # 5 real tokens, then 1
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5, 3)), keras.layers.Dense(4)])
        model.compile(keras.optimizers.SGD(0.5, **clipping), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"))
    dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(8)
    model.fit(distribute.distribute_batches(strategy, dataset), epochs=1, verbose=0)
    return [np.asarray(v) for v in model.weights]


def test_global_batches_are_split_into_equal_replica_slices():
    done = run_script("mirrored")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = result["seen"]
    # Replica r gets rows [3r, 3r + 3) of the 6-row batch, labels alongside.
    assert first == [[[[0, 1], [2, 3], [4, 5]], [0, 2, 4]], [[[6, 7], [8, 9], [10, 11]], [6, 8, 10]]]
    # 5 rows over 2 replicas: 2 each, the fifth dropped (so both means weigh the same).
    assert second == [[[[100, 101], [102, 103]], [100, 102]],
                      [[[104, 105], [106, 107]], [104, 106]]]
    # Keras's predict_on_batch runs the batch on each replica (10 rows for 5); ours once.
    assert result["keras_rows"] == 10
    assert result["rows"] == 5 and result["ours"] < 1e-5
    # A mean over real tokens is the global batch's, though replicas hold 20 and 4 tokens.
    assert result["weighted"] < 1e-6
    # Clipping to a global norm clips the global batch's gradient, not each replica's part.
    assert result["clipping_matters"] > 0.1 and result["clipped"] < 1e-6


# -- two workers on loopback -----------------------------------------------------------------


def training_setup():
    """A tiny BERT classifier, its data and an optimizer with every extension that keeps
    state: weight decay, piecewise LR, layer-wise LR, gradient accumulation, EMA."""
    import keras

    from bertkit import optimizers
    from bertkit.data import DataGenerator, sequence_padding
    from bertkit.models import build_transformer_model
    from bertkit.schedules import layerwise_lr_decay
    from bertkit.tasks import ClassificationHead
    from conftest import TINY_CONFIG

    class Generator(DataGenerator):
        def __iter__(self, random=False):
            ids, labels = [], []
            for is_end, (tokens, label) in self.sample(random):
                ids.append(tokens)
                labels.append(label)
                if len(ids) == self.batch_size or is_end:
                    token_ids = sequence_padding(ids)
                    yield (token_ids, np.zeros_like(token_ids)), np.array(labels)
                    ids, labels = [], []

    rng = np.random.RandomState(3)
    items = [(list(rng.randint(5, 40, rng.randint(3, 12))), int(rng.randint(2)))
             for _ in range(GLOBAL_BATCH * STEPS)]
    generator = Generator(items, batch_size=GLOBAL_BATCH, bucket=True, seed=7)

    def build():
        keras.utils.set_random_seed(1)
        config = dict(TINY_CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        encoder = build_transformer_model(**config)
        model = ClassificationHead(2, dropout_rate=0.0).attach(encoder)
        optimizer_class = optimizers.extend_with_gradient_accumulation(
            optimizers.extend_with_exponential_moving_average(
                optimizers.extend_with_parameter_wise_lr(optimizers.AdamWLR)))
        optimizer = optimizer_class(
            learning_rate=1e-2, weight_decay_rate=0.05, exclude_from_weight_decay=["Norm", "bias"],
            lr_schedule={1: 1.0, STEPS // ACCUMULATE: 0.2},
            paramwise_lr_schedule=layerwise_lr_decay(model, 0.7), ema_momentum=0.8,
            grad_accum_steps=ACCUMULATE)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        return model
    return build, generator


def train_script(out):
    """Trains the tiny setup one epoch (with ``TF_CONFIG``: as one worker of the cluster);
    the chief saves the weights and the EMA weights to ``out``."""
    import keras

    from bertkit.resume import fit_epochs

    kind = "multiworker" if "TF_CONFIG" in os.environ else "none"
    strategy = distribute.make_strategy(kind, heartbeat_seconds=5)
    build, generator = training_setup()
    with strategy.scope():
        model = build()
    sleep = float(os.environ.get("STEP_SLEEP", "0"))

    class Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            print(f"step {batch + 1}", flush=True)
            time.sleep(sleep)

    epochs = int(os.environ.get("EPOCHS", "1"))
    fit_epochs(model, generator, lambda g: g.to_dataset(repeat=False), epochs,
               callbacks=[Report()], strategy=strategy, verbose=0)
    if distribute.is_chief(strategy):
        weights = [np.asarray(v) for v in model.trainable_variables]
        with model.optimizer.ema_weights():
            weights += [np.asarray(v) for v in model.trainable_variables]
        np.savez(out, *weights)


def load_weights(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def single_thread_env(environ):
    return dict(environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")


def start_workers(tmp_path, extra_env=None):
    out = str(tmp_path / "workers.npz")
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "train", out],
                                env=single_thread_env({**env, **(extra_env or {})}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO_ROOT)
               for env in worker_environments(2)]
    return workers, out


def test_two_workers_train_as_one_process_on_the_global_batch(tmp_path):
    workers, out = start_workers(tmp_path)
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    single = str(tmp_path / "single.npz")
    done = run_script("train", single, env=single_thread_env(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    two, one = load_weights(out), load_weights(single)
    assert len(two) == len(one) > 20
    moved = max(float(np.abs(a).max()) for a in one)
    assert moved > 0.05
    difference = max(float(np.abs(a - b).max()) for a, b in zip(two, one))
    assert difference < 1e-5, difference
    # Each worker trained every step: 6 batches an epoch, one report a step.
    assert all(out.count("step ") == STEPS for out, _ in outputs)


def test_a_dead_worker_stops_the_other_with_a_clear_error(tmp_path):
    workers, _ = start_workers(tmp_path, {"STEP_SLEEP": "0.5", "EPOCHS": "20"})
    chief, other = workers
    line = ""
    while "step 3" not in line:  # both are training
        line = other.stdout.readline()
        assert line or other.poll() is None, other.stderr.read()[-3000:]
    other.send_signal(signal.SIGKILL)
    killed = time.time()
    try:
        _, err = chief.communicate(timeout=120)
    finally:
        chief.kill()
    waited = time.time() - killed
    assert chief.returncode != 0
    assert "WorkerLost: another worker stopped answering" in err, err[-3000:]
    assert waited < 60, waited


if __name__ == "__main__":
    {"mirrored": mirrored_script, "train": lambda: train_script(sys.argv[2])}[sys.argv[1]]()
