"""Training-time callbacks: progress over a generator, `Evaluator`, `AttentionImages`.

This module owns what watches a model while it trains: `progress` (one epoch of
batches behind a `tqdm` bar, for prediction loops), `Evaluator` (a Keras callback that
scores a validation generator after every epoch and keeps the best weights) and
`AttentionImages` (each head's attention on one sentence, to TensorBoard, every
epoch). It builds on `bertkit.data`. `Evaluator` scores on the averaged weights when
the optimizer keeps an exponential moving average (`bertkit.ema`), and puts the raw
weights back before training goes on.
"""
import contextlib
import math
import os

import keras
import numpy as np
from tqdm.auto import tqdm

from bertkit import layers as bk_layers
from bertkit.data import DataGenerator
from bertkit.distribute import predict_on_batch
from bertkit.models import attention_model
from bertkit.storage import save_weights_atomically

__all__ = ["progress", "Evaluator", "attention_grid", "AttentionImages"]


def progress(generator, random=False, desc=None, disable=None):
    """Iterates one epoch of a generator with a `tqdm` progress bar.

    The loop for prediction and custom evaluation:

    ```python
    probs = np.concatenate(
        [model.predict_on_batch(x) for x, _ in progress(valid_generator, desc="predict")]
    )
    ```

    Args:
        generator: a `DataGenerator` (its `__iter__(random)` is used, the total is
            `generator.steps`) or any iterable.
        random: passed to the generator's `__iter__`.
        desc: label of the bar.
        disable: no bar; ``None`` (default) shows it on a terminal only, so that a
            log file gets no ``\r`` updates.

    Returns:
        A `tqdm` iterator over the batches.
    """
    if isinstance(generator, DataGenerator):
        iterable, total = generator.__iter__(random), generator.steps
    else:
        iterable = generator
        total = len(generator) if hasattr(generator, "__len__") else None
    return tqdm(iterable, total=total, desc=desc, disable=disable)


class Evaluator(keras.callbacks.Callback):
    """Scores the model on a generator after each epoch and keeps the best weights.

    The callback every bert4keras example writes by hand. The default `evaluate`
    is the accuracy of `argmax(model(x))` against integer labels (`[B]` or
    `[B, 1]`) over one pass of `generator`; override it for other scores (F1 of
    decoded spans, exact match, ...), predicting with
    `bertkit.distribute.predict_on_batch(model, x)`, which scores whole batches under
    a distribution strategy too. When the optimizer keeps a moving average of the
    weights (`extend_with_exponential_moving_average`, `fine_tuning_optimizer(...,
    ema_momentum=...)`), scoring and saving see the averaged weights, and the raw ones
    come back afterwards: what is kept is what was scored.

    Args:
        generator: a `DataGenerator` (or iterable) yielding `(x, y)` batches.
        name: the key of the score in the epoch's `logs` (and so in `History`).
        filepath: if set, the weights are saved there whenever the score improves
            (a `.weights.h5` path), atomically: a kill or a full disk during the save
            leaves the previous best file whole. Override `save_best` to save more.
        mode: `'max'` (higher is better) or `'min'`.
        verbose: print the score and show a progress bar.

    Example:

    ```python
    evaluator = Evaluator(valid_generator, filepath="best.weights.h5")
    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator),
              epochs=10, callbacks=[evaluator])
    ```
    """

    def __init__(self, generator, name="val_score", filepath=None, mode="max", verbose=1):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.generator, self.name, self.filepath = generator, name, filepath
        self.mode, self.verbose = mode, verbose
        self.best = -math.inf if mode == "max" else math.inf

    def evaluate(self):
        """Returns the score of `self.model` on `self.generator` (accuracy here)."""
        right = total = 0
        for x, y in progress(self.generator, desc=self.name,
                             disable=None if self.verbose else True):
            pred = np.argmax(np.asarray(predict_on_batch(self.model, x)), axis=-1)
            y = np.asarray(y).reshape(pred.shape)
            right += int((pred == y).sum())
            total += y.size
        if not total:
            raise ValueError("Evaluator: the generator yielded no batch")
        return right / total

    def save_best(self):
        """Saves the weights that just scored best to `filepath` (if set), atomically."""
        if self.filepath:
            save_weights_atomically(self.model, self.filepath)

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        swap = optimizer.ema_weights() if hasattr(optimizer, "ema_weights") \
            else contextlib.nullcontext()
        with swap:  # the raw weights come back afterwards
            self.score_epoch(epoch, logs)

    def score_epoch(self, epoch, logs=None):
        """Scores the current weights, records the score in ``logs`` and saves if best."""
        score = float(self.evaluate())
        if logs is not None:
            logs[self.name] = score
        if score > self.best if self.mode == "max" else score < self.best:
            self.best = score
            self.save_best()
        if self.verbose:
            print(f"{self.name}: {score:.5f}, best {self.name}: {self.best:.5f}")


def attention_grid(probs, cell=8):
    """One attention map per head side by side, as a ``[H, W]`` image in [0, 1].

    Args:
        probs: ``[N, Q, T]`` attention probabilities of one sentence (``N`` heads).
        cell: pixels per token, so that short sentences stay visible.

    Returns:
        ``float32 [Q * cell, N * (T * cell + cell) - cell]``: head maps separated by a
        one-cell white gap, each row scaled to its maximum.
    """
    probs = np.asarray(probs, dtype="float32")
    peak = probs.max(axis=-1, keepdims=True)
    scaled = probs / np.where(peak > 0, peak, 1.0)
    tiles = [np.kron(head, np.ones((cell, cell), "float32")) for head in scaled]
    gap = np.ones((tiles[0].shape[0], cell), "float32")
    parts = [part for tile in tiles for part in (tile, gap)][:-1]
    return np.concatenate(parts, axis=1)


class AttentionImages(keras.callbacks.Callback):
    """Writes the attention of every head of one layer on one sentence to TensorBoard.

    After each epoch, the probabilities of ``layer`` on ``inputs`` (one sentence, with
    its padding cut) become one image, heads side by side (:func:`attention_grid`), under
    ``attention/layer_{layer}`` in ``log_dir/attention``: how the heads learn to look
    at the text as training goes on.

    Args:
        inputs: ``[token_ids, segment_ids]`` of one sentence, ``[1, T]`` each.
        log_dir: the TensorBoard log directory (the image goes to its ``attention``
            subdirectory, beside Keras's ``train`` and ``validation``).
        layer: the transformer layer, ``-1`` for the last.
    """

    def __init__(self, inputs, log_dir, layer=-1):
        super().__init__()
        self.inputs, self.layer = inputs, layer
        self.log_dir = os.path.join(log_dir, "attention")
        self.writer = None

    def probabilities(self):
        """``[N, Q, T]`` attention probabilities of the layer on the sentence."""
        layers = [layer for layer in self.model.layers
                  if isinstance(layer, bk_layers.MultiHeadAttention)]
        calls = sum(len([n for n in layer._inbound_nodes if n.operation is layer])
                    for layer in layers)
        index = self.layer % calls
        probs = attention_model(self.model, layers=index).predict(self.inputs, verbose=0)
        return probs[0]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf  # TensorBoard's summary writer

        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        image = attention_grid(self.probabilities())
        with self.writer.as_default():
            tf.summary.image(f"attention/layer_{self.layer}", image[None, :, :, None],
                             step=epoch)
        self.writer.flush()
