"""Training-time evaluation: progress over a generator and the `Evaluator` callback.

This module owns what scores a model on a `DataGenerator` while it trains:
`progress` (one epoch of batches behind a `tqdm` bar, for prediction loops) and
`Evaluator` (a Keras callback that scores a validation generator after every
epoch and keeps the best weights). It builds on `bertkit.data`, which re-exports
both names. Evaluating with the averaged weights of an EMA optimizer is
`bertkit.ema.EMAEvaluation`.
"""
import math

import keras
import numpy as np
from tqdm.auto import tqdm

from bertkit.data import DataGenerator
from bertkit.storage import save_weights_atomically


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
    decoded spans, exact match, ...).

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
            pred = np.argmax(np.asarray(self.model.predict_on_batch(x)), axis=-1)
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
        score = float(self.evaluate())
        if logs is not None:
            logs[self.name] = score
        if score > self.best if self.mode == "max" else score < self.best:
            self.best = score
            self.save_best()
        if self.verbose:
            print(f"{self.name}: {score:.5f}, best {self.name}: {self.best:.5f}")
