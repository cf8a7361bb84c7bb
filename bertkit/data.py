"""Batching: padding, data generators, length bucketing and parallel feeding.

The bert4keras pattern: subclass `DataGenerator`, write `__iter__(self, random=False)`
that tokenizes the items `self.sample(random)` hands out and yields a padded batch
whenever `len(batch) == self.batch_size or is_end`:

```python
class Generator(bertkit.data.DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                yield ([sequence_padding(batch_token_ids),
                        sequence_padding(batch_segment_ids)],
                       sequence_padding(batch_labels))
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []
```

Three ways to feed `model.fit` from the same generator (pass `shuffle=False` to
`fit` to silence its warning; the generator shuffles by itself):

- `model.fit(gen.to_dataset(), steps_per_epoch=len(gen))`: the batches through
  `tf.data` with prefetching, so the next batch is built while the current step
  runs. The signature has every axis of unknown size (or is given explicitly).
- `model.fit(gen.forfit(), steps_per_epoch=len(gen))`: the bert4keras way. Keras 3
  infers the batch signature from the first two batches, so an axis that has the
  same length in both becomes fixed and a later batch fails with "Generator
  yielded an element of shape (32, 237) where an element of shape (None, 256) was
  expected". With `maxlen` truncation this is likely (two batches that both hold a
  text longer than `maxlen`; keras-team/keras#19748); prefer `to_dataset` for
  variable-length batches.
- `model.fit(gen.to_pydataset(workers=2, use_multiprocessing=True))`: batches built
  in worker processes, each batch exactly once per epoch. Worth it when per-batch
  Python work (tokenization, feature building) is a real share of the step time and
  a core is free for it; see `GeneratorDataset` for the trade-offs (it shares the
  two-batch signature inference of `forfit`).

`DataGenerator(..., bucket=True)` sorts items by length inside a buffer so batches
carry little padding, while the order of batches stays random; `pad_to_bucket` pads a
batch up to one of a few lengths, so that an XLA-compiled model compiles few shapes.

This module owns padding and batching, in plain numpy. The adapters behind
`to_dataset` and `to_pydataset` (`GeneratorDataset` and the `tf.data` signature
handling) live in `bertkit.pipelines`, which imports nothing of this module; scoring
a model on a generator during training (`progress`, `Evaluator`) in
`bertkit.callbacks`.
"""
import bisect
import contextlib
import collections.abc
import math
import numbers

import numpy as np

from bertkit.pipelines import GeneratorDataset, tf_dataset

__all__ = ["DEFAULT_LENGTH_BUCKETS", "sequence_padding", "default_bucket_key",
           "check_positive_int", "DataGenerator", "bucket_length", "pad_to_bucket"]


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pads or truncates a batch of (nested) sequences into one numpy array.

    Truncation keeps the first `length` elements in both modes (bert4keras
    behaviour); cut sequences yourself first to keep their tail.

    Args:
        inputs: list of sequences (lists or arrays). The first `seq_dims` axes of
            each item are padded or truncated; the axes below them must have the
            same shape in every item.
        length: target length: `None` (the longest item), an int (used for every
            padded axis) or a sequence of `seq_dims` ints or `None`s.
        value: the padding value. The result has the dtype numpy gives to the
            items combined with `value` (int items padded with `-100` stay int,
            padded with `0.5` become float).
        seq_dims: how many leading axes to pad, e.g. 2 for `[L, L]` token-pair
            label matrices.
        mode: `'post'` pads at the end, `'pre'` at the front.

    Returns:
        An array of shape `[len(inputs), *length, *trailing_shape]`.

    Example:

    >>> sequence_padding([[1, 2, 3], [4]])
    array([[1, 2, 3],
           [4, 0, 0]])
    >>> sequence_padding([[1, 2, 3], [4]], length=2, mode='pre')
    array([[1, 2],
           [0, 4]])
    """
    if mode not in ("post", "pre"):
        raise ValueError(f"mode must be 'post' or 'pre', got {mode!r}")
    if not isinstance(seq_dims, numbers.Integral) or seq_dims < 1:
        raise ValueError(f"seq_dims must be an int >= 1, got {seq_dims!r}")
    if isinstance(inputs, (str, bytes)) or not _is_iterable(inputs):
        raise ValueError(
            f"inputs must be a list of sequences, got {type(inputs).__name__}"
        )
    arrays = [_item_array(x, i, seq_dims) for i, x in enumerate(inputs)]
    if not arrays:
        raise ValueError("inputs is empty: expected at least one sequence")
    trailing = _trailing_shape(arrays, seq_dims)
    length = _target_length(length, arrays, seq_dims)
    filled = [a for a in arrays if a.size] or arrays
    dtype = np.result_type(*[a.dtype for a in filled], value)
    outputs = np.full((len(arrays), *length, *trailing), value, dtype=dtype)
    for i, x in enumerate(arrays):
        if not x.size:
            continue  # an empty item is all padding
        x = x[tuple(slice(0, n) for n in length)]
        if mode == "post":
            where = tuple(slice(0, n) for n in x.shape[:seq_dims])
        else:
            where = tuple(slice(t - n, t) for t, n in zip(length, x.shape))
        outputs[(i,) + where] = x
    return outputs


def _is_iterable(x):
    return isinstance(x, collections.abc.Iterable) or hasattr(x, "__getitem__")


def _item_array(x, index, seq_dims):
    """Turns `inputs[index]` into an array with at least `seq_dims` axes."""
    if isinstance(x, (str, bytes)) or not _is_iterable(x):
        raise ValueError(
            f"inputs[{index}] is {x!r:.40} of type {type(x).__name__}; expected a "
            f"sequence with at least seq_dims={seq_dims} axes"
        )
    try:
        array = np.asarray(x)
    except ValueError as e:  # numpy: "inhomogeneous shape after N dimensions"
        raise ValueError(
            f"inputs[{index}] is ragged: its nested sequences have different "
            f"lengths below the first seq_dims={seq_dims} axes ({e})"
        ) from None
    if array.dtype == object:
        raise ValueError(
            f"inputs[{index}] is ragged or holds non-numeric values; only its "
            f"first seq_dims={seq_dims} axes can be padded"
        )
    if array.size == 0 and array.ndim < seq_dims:
        array = array.reshape((0,) * seq_dims)
    if array.ndim < seq_dims:
        raise ValueError(
            f"inputs[{index}] has {array.ndim} axes (shape {array.shape}); "
            f"seq_dims={seq_dims} needs at least {seq_dims}"
        )
    return array


def _trailing_shape(arrays, seq_dims):
    """The common shape below the padded axes, checked across items."""
    trailing, first = None, None
    for i, a in enumerate(arrays):
        if a.size == 0 and a.ndim == seq_dims:
            continue  # `[]` adopts the other items' trailing shape
        if trailing is None:
            trailing, first = a.shape[seq_dims:], i
        elif a.shape[seq_dims:] != trailing:
            raise ValueError(
                f"inputs[{i}] has shape {a.shape} but inputs[{first}] has shape "
                f"{arrays[first].shape}; only the first seq_dims={seq_dims} axes "
                "can differ between items"
            )
    if trailing is None:
        return ()
    for i, a in enumerate(arrays):
        if a.size == 0 and a.ndim == seq_dims:
            arrays[i] = a.reshape(a.shape + trailing)
    return trailing


def _target_length(length, arrays, seq_dims):
    longest = np.max([a.shape[:seq_dims] for a in arrays], axis=0)
    if length is None:
        return tuple(int(n) for n in longest)
    if isinstance(length, numbers.Integral):
        length = [length] * seq_dims
    if not isinstance(length, collections.abc.Sequence) or len(length) != seq_dims:
        raise ValueError(
            f"length must be None, an int or {seq_dims} ints, got {length!r}"
        )
    for n in length:
        if n is not None and (not isinstance(n, numbers.Integral) or n < 0):
            raise ValueError(f"length must hold ints >= 0 or None, got {length!r}")
    return tuple(int(m if n is None else n) for n, m in zip(length, longest))


def default_bucket_key(item):
    """Length used to sort items when bucketing: `len` of the item's first field.

    `(text, label)` and `[token_ids, segment_ids]` give `len` of their first
    element, a dict the `len` of its first value, a string or a list of ids its own
    `len`.
    """
    if isinstance(item, dict) and item:
        item = next(iter(item.values()))
    elif isinstance(item, (tuple, list)) and item and hasattr(item[0], "__len__"):
        item = item[0]
    if not hasattr(item, "__len__"):
        raise ValueError(
            f"cannot take a length of an item of type {type(item).__name__} for "
            "bucketing; pass bucket_key=a function from an item to its length"
        )
    return len(item)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


class DataGenerator:
    """Base class for batch generators: subclass it and write `__iter__`.

    `__iter__(self, random=False)` reads `self.sample(random)`, which yields
    `(is_end, item)` pairs, and yields a batch when `len(batch) == self.batch_size
    or is_end` (see the module docstring for a full example). The last, partial
    batch of an epoch is kept.

    Args:
        data: the items: a list (anything with `len` and integer indexing) or any
            iterable. With an iterable `len(generator)` is unknown and shuffling is
            local, within `buffer_size` items; to train for several epochs it must
            restart when iterated again (a one-shot generator object does not).
        batch_size: items per batch, an int >= 1.
        buffer_size: how many items are read ahead, for the local shuffle of an
            iterable and for bucketing. Defaults to 1000 batches' worth without
            bucketing (as bert4keras) and 100 batches' worth with it.
        bucket: length bucketing (only when `random=True`): each buffer of items is
            sorted by `bucket_key` and cut into batch-sized runs, and the runs are
            shuffled (over the whole epoch for sized data, within the buffer for an
            iterable), so a batch holds items of similar length and needs little
            padding while the order of batches stays random. A smaller buffer keeps
            batch composition more random between epochs, a larger one pads less.
            The partial run, if any, comes last so batches stay aligned.
        bucket_key: function from an item to its length; by default
            `default_bucket_key` (`len` of the item's first field, e.g. the raw text
            of a `(text, label)` pair, a good proxy for its number of tokens).
        seed: seeds a private random state: random pass `e` (counted in `epoch`)
            draws everything, the order and whatever `__iter__` draws from
            `random_state`, from `RandomState([seed, e])`, so any epoch can be
            replayed on its own (`replaying`, for a resumed run). By default numpy's
            global state is used, so `np.random.seed` makes runs repeatable, as in
            bert4keras.

    Attributes:
        steps: batches per epoch, `ceil(len(data) / batch_size)`, or `None` for an
            iterable without `len`.
        epoch: random passes begun so far (the next one is epoch `epoch`).
        skip_batches: batches the next random pass leaves out (see `replaying`).
    """

    def __init__(self, data, batch_size=32, buffer_size=None, bucket=False,
                 bucket_key=None, seed=None):
        if isinstance(data, (str, bytes)) or not _is_iterable(data):
            raise TypeError(
                f"data must be a list or an iterable of items, got {type(data).__name__}"
            )
        check_positive_int("batch_size", batch_size)
        if buffer_size is not None:
            check_positive_int("buffer_size", buffer_size)
        if bucket_key is not None and not callable(bucket_key):
            raise TypeError(f"bucket_key must be callable, got {bucket_key!r}")
        if hasattr(data, "__len__") and not hasattr(data, "__getitem__"):
            data = list(data)  # sets, dict views: shuffling needs indexing
        self.data = data
        self.batch_size = batch_size
        self.steps = math.ceil(len(data) / batch_size) if hasattr(data, "__len__") else None
        self.bucket = bool(bucket)
        self.bucket_key = bucket_key or default_bucket_key
        self.buffer_size = buffer_size or batch_size * (100 if bucket else 1000)
        self.seed = seed
        self._rng = None if seed is None else np.random.RandomState(seed)
        self.epoch, self.skip_batches, self._replay = 0, 0, None

    @property
    def random_state(self):
        """The numpy random state used for shuffling."""
        return np.random if self._rng is None else self._rng

    def __len__(self):
        if self.steps is None:
            raise TypeError(
                f"{type(self).__name__} reads an iterable without len(), so it has no "
                "fixed number of steps per epoch; pass steps_per_epoch to fit"
            )
        return self.steps

    def __iter__(self, random=False):
        """Yields one epoch of batches; subclasses implement it with `sample`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement __iter__(self, random=False), "
            "yielding batches built from self.sample(random)"
        )

    def sample(self, random=False):
        """Yields `(is_end, item)` for every item of one epoch.

        Args:
            random: shuffle (a fresh permutation for sized data, a local shuffle
                within `buffer_size` for an iterable), or bucket by length when
                the generator was built with `bucket=True`. With `False` items
                come in `data` order.

        Yields:
            `(is_end, item)`, `is_end` being `True` for the epoch's last item only.
        """
        if random:
            self._begin_random_pass()
        items = iter(self._items(random))
        try:
            current = next(items)
        except StopIteration:
            return
        for item in items:
            yield False, current
            current = item
        yield True, current

    def _begin_random_pass(self):
        if self.seed is not None:
            self._rng = np.random.RandomState([self.seed, self.epoch])
        self.epoch += 1

    @contextlib.contextmanager
    def replaying(self, epoch, batch=0):
        """Within the block, every random pass is epoch `epoch` of this generator from
        its batch `batch` on: the same batches, in the same order, as a run from the
        start yields there, so that an interrupted training run resumes on exactly the
        data it would have seen. After the block the next pass is epoch `epoch + 1`.

        Every pass, not just the next one: under a distribution strategy Keras's `fit`
        reads a first batch to build the model and then starts the epoch again.

        Needs `seed` (each epoch's randomness then depends on the seed and the epoch
        alone) and sized data. The skipped batches are built and thrown away, so that
        whatever `__iter__` draws for them is drawn as before.

        Raises:
            ValueError: no `seed`, or a position outside the epoch.
        """
        if self.seed is None:
            raise ValueError(f"{type(self).__name__}.replaying replays an epoch's shuffling: "
                             "build the generator with seed=...")
        if self.steps is None:
            raise TypeError("replaying needs data with len(); got an iterable")
        if epoch < 0 or not 0 <= batch < self.steps:
            raise ValueError(f"replaying({epoch}, {batch}): batch must be in [0, "
                             f"{self.steps}) and epoch >= 0")
        self._replay = (int(epoch), int(batch))
        self.epoch, self.skip_batches = self._replay
        try:
            yield self
        finally:
            self._replay = None
            self.epoch, self.skip_batches = int(epoch) + 1, 0

    def epoch_batches(self, random=False):
        """One pass of `__iter__(random)`; a random pass leaves out the batches
        `replaying` asks to skip. `forfit` and `to_dataset` read batches through it."""
        skip, batches = 0, self.__iter__(random)
        if random:
            if self._replay is not None:
                self.epoch, self.skip_batches = self._replay
            skip, self.skip_batches = self.skip_batches, 0
        for index, batch in enumerate(batches):
            if index >= skip:
                yield batch

    def _items(self, random):
        if not random:
            return iter(self.data)
        if self.steps is None:
            return self._stream_bucketed() if self.bucket else self._stream_shuffled()
        return (self.data[i] for i in self.epoch_order(random))

    def epoch_order(self, random=True):
        """Indices into `data` in the order one epoch visits them (sized data only).

        Batch `i` of the epoch holds `order[i * batch_size:(i + 1) * batch_size]`;
        `sample` and `GeneratorDataset` both follow this order.
        """
        if self.steps is None:
            raise TypeError("epoch_order needs data with len(); got an iterable")
        n = len(self.data)
        if not random:
            return np.arange(n)
        order = self.random_state.permutation(n)
        if not self.bucket:
            return order
        lengths = self._lengths(self.data[i] for i in range(n))
        runs = []
        for start in range(0, n, self._chunk_size()):
            runs.extend(self._sorted_runs(order[start:start + self._chunk_size()], lengths))
        return np.concatenate(list(self._shuffle_runs(runs)))

    def _chunk_size(self):
        # A multiple of batch_size, so that only the epoch's last run is partial.
        return math.ceil(self.buffer_size / self.batch_size) * self.batch_size

    def _lengths(self, items):
        lengths = [self.bucket_key(item) for item in items]
        try:
            return np.asarray(lengths, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "bucket_key must map every item to a number; got values such as "
                f"{lengths[:3]!r}"
            ) from None

    def _sorted_runs(self, indices, lengths):
        """Sorts `indices` by length (ties in their given, random order) and cuts
        them into batch-sized runs."""
        indices = indices[np.argsort(lengths[indices], kind="stable")]
        return [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]

    def _shuffle_runs(self, runs):
        full = [run for run in runs if len(run) == self.batch_size]
        for i in self.random_state.permutation(len(full)):
            yield full[i]
        yield from (run for run in runs if len(run) < self.batch_size)

    def _stream_shuffled(self):
        """bert4keras's local shuffle: emit a random element of a full buffer."""
        cache = []
        for item in self.data:
            cache.append(item)
            if len(cache) > self.buffer_size:
                yield self._pop_random(cache)
        while cache:
            yield self._pop_random(cache)

    def _pop_random(self, cache):
        i = self.random_state.randint(len(cache))
        cache[i], cache[-1] = cache[-1], cache[i]  # O(1) removal
        return cache.pop()

    def _stream_bucketed(self):
        chunk = []
        for item in self.data:
            chunk.append(item)
            if len(chunk) == self._chunk_size():
                yield from self._bucket_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._bucket_chunk(chunk)

    def _bucket_chunk(self, chunk):
        order = self.random_state.permutation(len(chunk))
        runs = self._sorted_runs(order, self._lengths(chunk))
        for run in self._shuffle_runs(runs):
            yield from (chunk[i] for i in run)

    def forfit(self, random=True):
        """Yields batches forever, epoch after epoch, for `model.fit`.

        Example: `model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3)`.
        Keras infers the batch signature from the first two batches (see the
        module docstring); use `to_dataset` when that is a problem. Lists in a batch
        (bert4keras's `yield [token_ids, segment_ids], labels`) are passed on as
        tuples, the structure Keras 3 reads from a generator.

        Raises:
            ValueError: when an epoch yields no batch (empty data, or a one-shot
                iterator consumed by the previous epoch).
        """
        while True:
            empty = True
            for batch in self.epoch_batches(random):
                empty = False
                yield _as_tuples(batch)
            if empty:
                raise ValueError(
                    f"{type(self).__name__} yielded no batch in a whole epoch: data is "
                    "empty or a one-shot iterator was used up by an earlier epoch"
                )

    def to_dataset(self, types=None, shapes=None, names=None, padded_batch=False,
                   random=True, repeat=True):
        """Wraps the generator in a prefetching `tf.data.Dataset`.

        Two modes:

        - `padded_batch=False`: `__iter__` yields whole padded batches (as for
          `forfit`), and `types`/`shapes` describe one batch, with `None` for the
          batch axis and every variable length, e.g.
          `types=(('int32', 'int32'), 'int32')`,
          `shapes=(([None, None], [None, None]), [None, 1])`.
        - `padded_batch=True`: `__iter__` yields single items, unpadded, and
          `tf.data` groups `batch_size` of them, padding with zeros to the longest;
          `types`/`shapes` describe one item (e.g. `[None]` for token ids). Unlike
          bert4keras, the batch-yielding mode is not batched a second time.

        Leave out `types` and `shapes` to read them from the first element
        `__iter__(False)` yields, every axis of unknown size (what tf.keras 2 did
        for generators); the leaves must then be numpy arrays.

        Args:
            types: nested structure (tuples, lists, dicts) of dtypes matching what
                `__iter__` yields.
            shapes: the same structure with a shape (list of ints or `None`) per dtype.
            names: optional Keras input names to turn yielded tuples into dicts
                (bert4keras semantics): a string wraps the whole element as
                `{names: element}`, a sequence of strings zips with the element,
                a sequence of such sequences zips group by group, e.g.
                `names=(('Input-Token', 'Input-Segment'), ('label',))`.
            padded_batch: see above.
            random: passed to `__iter__`.
            repeat: loop forever like `forfit` (bert4keras behaviour: pass
                `steps_per_epoch=len(generator)` to `fit`). With `False` the dataset
                holds one epoch and is reshuffled each time it is iterated; for sized
                data it declares `len(generator)` batches, and iterating fails if
                `__iter__` yields another number.

        Returns:
            A `tf.data.Dataset`, prefetched with `tf.data.AUTOTUNE`.
        """
        return tf_dataset(self, types=types, shapes=shapes, names=names,
                          padded_batch=padded_batch, random=random, repeat=repeat)

    def to_pydataset(self, random=True, workers=1, use_multiprocessing=False,
                     max_queue_size=10):
        """Returns a `GeneratorDataset` (a `keras.utils.PyDataset`) of this generator.

        Example: `model.fit(gen.to_pydataset(workers=2, use_multiprocessing=True),
        epochs=3)`; no `steps_per_epoch` is needed.
        """
        return GeneratorDataset(self, random=random, workers=workers,
                                use_multiprocessing=use_multiprocessing,
                                max_queue_size=max_queue_size)


def _as_tuples(batch):
    """``batch`` with its lists turned into tuples, recursively (arrays left alone)."""
    if isinstance(batch, (list, tuple)):
        return tuple(_as_tuples(part) for part in batch)
    return batch


#: Lengths :func:`pad_to_bucket` pads a batch up to: a few shapes to compile, at most
#: a third of the positions added as padding above 16.
DEFAULT_LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_length(length, buckets=DEFAULT_LENGTH_BUCKETS):
    """The smallest bucket at least ``length`` long.

    Args:
        length: a sequence length (a batch's longest sequence).
        buckets: increasing allowed lengths.

    Returns:
        int, the bucket ``length`` is padded up to.

    Raises:
        ValueError: ``length`` is longer than the largest bucket, or ``buckets`` is
            empty or not increasing.

    Example:

    >>> bucket_length(70)
    96
    """
    buckets = tuple(int(b) for b in buckets)
    if not buckets or any(a >= b for a, b in zip(buckets, buckets[1:])):
        raise ValueError(f"buckets must be a non-empty increasing sequence, got {buckets}")
    index = bisect.bisect_left(buckets, length)
    if index == len(buckets):
        raise ValueError(
            f"sequence length {length} exceeds the largest bucket {buckets[-1]}; "
            f"truncate the inputs or pass larger buckets"
        )
    return buckets[index]


def pad_to_bucket(arrays, buckets=DEFAULT_LENGTH_BUCKETS, value=0):
    """Pads ``[B, T, ...]`` arrays on the right along ``T`` up to ``bucket_length(T)``.

    A model compiled with XLA (``jit_compile=True``) compiles once per input shape, and
    a compilation of BERT-base takes far longer than a step; padding every batch up to
    one of a few lengths bounds the number of compilations. Padding with id 0 does not
    change the outputs at the real positions (id 0 is masked out of attention).

    Args:
        arrays: one array or a list/tuple of arrays sharing their first two dimensions
            (token ids, segment ids, ...).
        buckets: increasing allowed lengths (see :data:`DEFAULT_LENGTH_BUCKETS`).
        value: the padding value.

    Returns:
        The padded array(s), in the structure given.

    Raises:
        ValueError: arrays of different ``[B, T]``, fewer than two dimensions, or a
            length longer than the largest bucket.

    Example:

    >>> token_ids, segment_ids = pad_to_bucket([token_ids, segment_ids])  # [B, 70] -> [B, 96]
    >>> model.train_on_batch([token_ids, segment_ids], labels)
    """
    single = not isinstance(arrays, (list, tuple))
    as_tuple = isinstance(arrays, tuple)
    arrays = [np.asarray(a) for a in ([arrays] if single else arrays)]
    if any(a.ndim < 2 for a in arrays) or len({a.shape[:2] for a in arrays}) != 1:
        raise ValueError(f"arrays must share their [batch, length] dimensions, got shapes "
                         f"{[a.shape for a in arrays]}")
    length = arrays[0].shape[1]
    extra = bucket_length(length, buckets) - length
    padded = [np.pad(a, [(0, 0), (0, extra)] + [(0, 0)] * (a.ndim - 2), constant_values=value)
              for a in arrays]
    if single:
        return padded[0]
    return tuple(padded) if as_tuple else padded
