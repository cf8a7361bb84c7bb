"""Keras input pipelines over a `DataGenerator`: `tf.data` and `PyDataset`.

This module owns the adapters behind `DataGenerator.to_dataset` and
`DataGenerator.to_pydataset`, the public entry points: `tf_dataset` (a prefetching
`tf.data.Dataset`, with the signature helpers that describe, read and check the
yielded elements) and `GeneratorDataset` (a `keras.utils.PyDataset` building
batches in parallel workers). It imports nothing of `bertkit.data`: the adapters
take any object with a `DataGenerator`'s protocol (`__iter__(random)`, `epoch_batches`, `steps`,
`epoch_order`, ...), and `bertkit.data` imports them, so imports run one way.
"""
import copy

import keras
import numpy as np
import tensorflow as tf


__all__ = ["tf_dataset", "GeneratorDataset"]


def tf_dataset(generator, types=None, shapes=None, names=None, padded_batch=False,
               random=True, repeat=True):
    """The prefetching `tf.data.Dataset` over `generator`'s batches or items.

    `DataGenerator.to_dataset` documents the arguments and is the usual way in.
    """
    wrap = _names_wrapper(names)
    if (types is None) != (shapes is None):
        raise ValueError("pass both types and shapes, or neither")
    if types is None:
        first = next(iter(generator.__iter__(False)), None)
        if first is None:
            raise ValueError(f"{type(generator).__name__}.__iter__ yielded nothing")
        signature = wrap(_unknown_shapes(first, "element"))
    else:
        try:
            signature = _signature(wrap(types), wrap(shapes))
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(
                f"types and shapes do not describe the same structure: {e}") from e

    def elements():
        batches = generator.forfit(random) if repeat else generator.epoch_batches(random)
        for element in batches:
            yield _conform(signature, wrap(element), "element")

    dataset = tf.data.Dataset.from_generator(elements, output_signature=signature)
    if padded_batch:
        dataset = dataset.padded_batch(generator.batch_size)
    if not repeat and generator.steps is not None:
        # A known length lets fit show progress instead of warning that the
        # input "ran out of data" at the end of every epoch.
        steps = generator.steps - (generator.skip_batches if random else 0)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _names_wrapper(names):
    """bert4keras's `to_dataset(names=...)` wrapping of elements into dicts."""
    if names is None:
        return lambda element: element
    if isinstance(names, str):
        return lambda element: {names: element}
    if all(isinstance(name, str) for name in names):
        return lambda element: dict(zip(names, element, strict=True))
    return lambda element: tuple(
        dict(zip(group, values, strict=True)) for group, values in zip(names, element, strict=True)
    )


def _is_dtype(x):
    return isinstance(x, (str, tf.DType, np.dtype, type))


def _signature(types, shapes):
    if _is_dtype(types):
        return tf.TensorSpec(shape=shapes, dtype=types)
    if isinstance(types, dict):
        return {key: _signature(t, shapes[key]) for key, t in types.items()}
    if len(types) != len(shapes):
        raise ValueError(f"{len(types)} dtypes in {types!r} but {len(shapes)} shapes in {shapes!r}")
    return tuple(_signature(t, s) for t, s in zip(types, shapes))


def _unknown_shapes(element, path):
    """Signature of `element` with every axis of unknown size."""
    if isinstance(element, dict):
        return {key: _unknown_shapes(v, f"{path}[{key!r}]") for key, v in element.items()}
    if isinstance(element, (list, tuple)):
        return tuple(_unknown_shapes(v, f"{path}[{i}]") for i, v in enumerate(element))
    if not isinstance(element, (np.ndarray, np.generic)):
        raise ValueError(
            f"{path} is a {type(element).__name__}; reading the signature needs numpy "
            "arrays as leaves, or pass types and shapes"
        )
    return tf.TensorSpec([None] * element.ndim, tf.as_dtype(element.dtype))


def _conform(spec, value, path):
    """Matches a yielded element to the signature (lists become tuples) or says
    where it differs."""
    if isinstance(spec, tf.TensorSpec):
        return value
    if isinstance(spec, dict):
        if not isinstance(value, dict) or set(value) != set(spec):
            raise ValueError(f"{path} should be a dict with keys {sorted(spec)}, got {value!r:.80}")
        return {key: _conform(s, value[key], f"{path}[{key!r}]") for key, s in spec.items()}
    if not isinstance(value, (list, tuple)) or len(value) != len(spec):
        raise ValueError(
            f"{path} should be a sequence of {len(spec)} parts to match types, got "
            f"{type(value).__name__}"
        )
    return tuple(_conform(s, v, f"{path}[{i}]") for i, (s, v) in enumerate(zip(spec, value)))


class GeneratorDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` over a `DataGenerator`: parallel, exactly-once batches.

    A Python generator cannot be shared by several workers: each would replay it
    (duplicated batches) or race on it (lost ones). Here the parent process fixes
    each epoch's plan, which items form batch `i` (the shuffle or bucketing
    `sample(random)` would use), and `__getitem__(i)` runs the generator's unchanged
    `__iter__` on just those items. Any worker can build any batch, and Keras asks
    for every index once per epoch. The plan is redrawn in `on_epoch_end`, after
    Keras stopped the epoch's workers and before it starts the next ones.

    Use it when per-batch Python work (tokenization, feature building) is a real
    share of the step time and a core is free for it. The costs:

    - `data` needs `len()` and indexing (a list), not a plain iterable.
    - Batches are pickled from workers to the trainer, and Keras starts a pool of
      processes at every epoch (a fork of the training process on Linux).
    - Where processes are spawned rather than forked (macOS, Windows, and Linux
      from Python 3.14 on), the generator is pickled: define its class at module
      level and keep its attributes picklable.
    - `__iter__` must not use TensorFlow in worker processes, and must yield one
      batch for `batch_size` items (the usual pattern does; it is checked).
    - Workers start from a copy of numpy's global random state, so random
      augmentation in `__iter__` repeats across workers unless seeded per batch.
    - Keras infers the batch signature from batches 0 and 1, as for `forfit`.

    `use_multiprocessing=False` with `workers > 1` builds batches in threads, which
    only helps when that work releases the GIL.

    Args:
        generator: a `DataGenerator` over sized data.
        random: shuffle (and bucket, if the generator does) afresh every epoch.
        workers: processes or threads building batches (1: in the trainer).
        use_multiprocessing: processes instead of threads.
        max_queue_size: batches built ahead.
    """

    def __init__(self, generator, random=True, workers=1, use_multiprocessing=False,
                 max_queue_size=10):
        if not all(hasattr(generator, name) for name in ("__iter__", "steps", "epoch_order")):
            raise TypeError(f"generator must be a DataGenerator, got {type(generator).__name__}")
        if generator.steps is None:
            raise ValueError(
                "GeneratorDataset needs a DataGenerator over data with len() (a list); "
                "an iterable cannot be split into batches ahead of time"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        self.generator = generator
        self.random = random
        self._plan = self._make_plan()

    def _make_plan(self):
        order = self.generator.epoch_order(self.random)
        size = self.generator.batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def __len__(self):
        return len(self._plan)

    def __getitem__(self, index):
        if not 0 <= index < len(self._plan):
            raise IndexError(f"batch index {index} out of range for {len(self._plan)} batches")
        items = [self.generator.data[i] for i in self._plan[index]]
        view = copy.copy(self.generator)  # never mutate the shared generator
        view.data, view.batch_size, view.steps, view.bucket = items, len(items), 1, False
        batches = []
        for batch in view.__iter__(False):
            batches.append(batch)
            if len(batches) > 1:
                break
        if len(batches) != 1:
            raise ValueError(
                f"{type(self.generator).__name__}.__iter__ yielded {len(batches)} "
                f"batches for {len(items)} items with batch_size={len(items)}; "
                "GeneratorDataset needs exactly one (yield when "
                "len(batch) == self.batch_size or is_end)"
            )
        return batches[0]

    def on_epoch_end(self):
        """Draws the next epoch's plan."""
        self._plan = self._make_plan()
