"""Tests for bertkit.data: padding, generators, bucketing, tf.data and PyDataset feeding."""
import itertools
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertkit.callbacks import Evaluator, progress
from bertkit.data import DataGenerator, default_bucket_key, sequence_padding
from bertkit.pipelines import GeneratorDataset

SHARED = Path(os.environ.get("BERTKIT_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
SENTIMENT = SHARED / "sentiment" / "sentiment.train.data"


def char_ids(text, maxlen=None):
    """A trivial tokenizer: one id per character, never 0 (0 is padding)."""
    return [ord(c) % 5000 + 1 for c in text[:maxlen]]


class TextGenerator(DataGenerator):
    """Items are `(text, target)`; batches are `(padded char ids, targets)`."""

    maxlen = None

    def __iter__(self, random=False):
        batch_ids, batch_targets = [], []
        for is_end, (text, target) in self.sample(random):
            batch_ids.append(char_ids(text, self.maxlen))
            batch_targets.append(target)
            if len(batch_ids) == self.batch_size or is_end:
                yield sequence_padding(batch_ids), np.array(batch_targets)
                batch_ids, batch_targets = [], []


class PidGenerator(TextGenerator):
    """Also records which process built each row, as a second id column."""

    def __iter__(self, random=False):
        for ids, targets in super().__iter__(random):
            pids = np.full_like(targets, os.getpid())
            yield np.stack([targets, pids], axis=1), targets


class ItemGenerator(TextGenerator):
    """Yields single unpadded items, for `to_dataset(padded_batch=True)`."""

    def __iter__(self, random=False):
        for _, (text, target) in self.sample(random):
            yield np.array(char_ids(text), dtype="int32"), np.int32(target)


def make_items(n, seed=0, max_len=40):
    """`(text, index)` items of random lengths 1..max_len."""
    rng = np.random.RandomState(seed)
    return [("x" * int(rng.randint(1, max_len + 1)), i) for i in range(n)]


def targets_of(batches):
    return [list(np.asarray(y)) for _, y in batches]


def tiny_model(vocab=5001, compile=True):
    model = keras.Sequential([
        keras.Input(shape=(None,), dtype="int32"),
        keras.layers.Embedding(vocab, 8),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    if compile:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


# ----------------------------------------------------------------- sequence_padding

def test_padding_1d_post_and_pre():
    inputs = [[1, 2, 3], [4], [5, 6]]
    np.testing.assert_array_equal(
        sequence_padding(inputs), np.array([[1, 2, 3], [4, 0, 0], [5, 6, 0]]))
    np.testing.assert_array_equal(
        sequence_padding(inputs, mode="pre"), np.array([[1, 2, 3], [0, 0, 4], [0, 5, 6]]))


def test_padding_truncates_keeping_the_head():
    inputs = [[1, 2, 3, 4], [5]]
    np.testing.assert_array_equal(
        sequence_padding(inputs, length=2), np.array([[1, 2], [5, 0]]))
    np.testing.assert_array_equal(
        sequence_padding(inputs, length=3, mode="pre"), np.array([[1, 2, 3], [0, 0, 5]]))
    np.testing.assert_array_equal(
        sequence_padding(inputs, length=6), np.array([[1, 2, 3, 4, 0, 0], [5, 0, 0, 0, 0, 0]]))


def test_padding_custom_value_and_dtype():
    out = sequence_padding([[1, 2], [3]], value=-100)
    np.testing.assert_array_equal(out, np.array([[1, 2], [3, -100]]))
    assert out.dtype.kind == "i"
    out = sequence_padding([[1, 2], [3]], value=0.5)
    np.testing.assert_array_equal(out, np.array([[1.0, 2.0], [3.0, 0.5]]))


def test_padding_two_axes():
    a = [[1, 2], [3, 4]]
    b = [[5, 6, 7], [8, 9, 10], [11, 12, 13]]
    expected = np.array([
        [[1, 2, 0], [3, 4, 0], [0, 0, 0]],
        [[5, 6, 7], [8, 9, 10], [11, 12, 13]],
    ])
    np.testing.assert_array_equal(sequence_padding([a, b], seq_dims=2), expected)
    np.testing.assert_array_equal(
        sequence_padding([a, b], length=2, seq_dims=2, value=-1),
        np.array([[[1, 2], [3, 4]], [[5, 6], [8, 9]]]))
    pre = sequence_padding([a, b], seq_dims=2, mode="pre")
    np.testing.assert_array_equal(pre[0], np.array([[0, 0, 0], [0, 1, 2], [0, 3, 4]]))
    mixed = sequence_padding([a, b], length=(None, 2), seq_dims=2)
    assert mixed.shape == (2, 3, 2)


def test_padding_keeps_trailing_axes_and_empty_items():
    items = [np.ones((2, 3)), np.full((1, 3), 2.0), []]
    out = sequence_padding(items)
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out[1], np.array([[2.0] * 3, [0.0] * 3]))
    np.testing.assert_array_equal(out[2], np.zeros((2, 3)))
    assert sequence_padding([[], [1, 2]]).dtype.kind == "i"


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.lists(st.lists(st.integers(1, 9), max_size=6), min_size=1, max_size=5),
    length=st.one_of(st.none(), st.integers(0, 8)),
    value=st.integers(-3, 0),
    mode=st.sampled_from(["post", "pre"]),
)
def test_padding_matches_a_naive_reference(inputs, length, value, mode):
    target = max(len(x) for x in inputs) if length is None else length
    rows = []
    for x in inputs:
        x = x[:target]
        pad = [value] * (target - len(x))
        rows.append(x + pad if mode == "post" else pad + x)
    out = sequence_padding(inputs, length=length, value=value, mode=mode)
    assert out.shape == (len(inputs), target)
    assert out.tolist() == rows


@pytest.mark.parametrize("inputs, message", [
    ([[1, 2], 3], r"inputs\[1\] is 3"),
    ([[1, 2], "ab"], r"inputs\[1\] is 'ab'"),
    ([[[1, 2], [3]]], r"inputs\[0\] is ragged"),
    ([[1, [2, 3]]], r"inputs\[0\] is ragged"),
    ([np.ones((2, 3)), np.ones((2, 4))], r"inputs\[1\] has shape \(2, 4\)"),
    ([], "inputs is empty"),
    (5, "inputs must be a list"),
])
def test_padding_bad_input(inputs, message):
    with pytest.raises(ValueError, match=message):
        sequence_padding(inputs)


def test_padding_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match="seq_dims"):
        sequence_padding([[1]], seq_dims=0)
    with pytest.raises(ValueError, match="length"):
        sequence_padding([[1]], length=(2, 2))
    with pytest.raises(ValueError, match="seq_dims=2 needs"):
        sequence_padding([[1, 2]], seq_dims=2)


# ----------------------------------------------------------------- DataGenerator

@pytest.mark.parametrize("bad", [0, -1, 2.5, None])
def test_generator_rejects_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        TextGenerator(make_items(4), batch_size=bad)


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="buffer_size"):
        TextGenerator(make_items(4), buffer_size=0)
    with pytest.raises(TypeError, match="data must be"):
        TextGenerator(42)
    with pytest.raises(TypeError, match="bucket_key"):
        TextGenerator(make_items(4), bucket_key=3)
    with pytest.raises(NotImplementedError, match="__iter__"):
        next(iter(DataGenerator(make_items(4))))


def test_list_generator_batches_in_order():
    gen = TextGenerator(make_items(23), batch_size=5)
    batches = list(gen)
    assert len(gen) == gen.steps == 5 == len(batches)
    assert [len(y) for y in targets_of(batches)] == [5, 5, 5, 5, 3]  # partial kept
    assert sum(targets_of(batches), []) == list(range(23))
    ids, _ = batches[0]
    lengths = [len(t) for t, _ in make_items(23)[:5]]
    assert ids.shape == (5, max(lengths))
    assert [int((row != 0).sum()) for row in ids] == lengths


def test_list_generator_shuffles_content_not_membership():
    gen = TextGenerator(make_items(50), batch_size=8, seed=1)
    first = sum(targets_of(gen.__iter__(random=True)), [])
    second = sum(targets_of(gen.__iter__(random=True)), [])
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != list(range(50)) and first != second
    assert [len(y) for y in targets_of(gen.__iter__(True))] == [8] * 6 + [2]


def test_sample_flags_only_the_last_item():
    gen = TextGenerator(make_items(7), batch_size=3)
    flags = [is_end for is_end, _ in gen.sample(random=True)]
    assert flags == [False] * 6 + [True]
    assert list(TextGenerator([], batch_size=3).sample()) == []


class Endless:
    """A re-iterable infinite source: each `iter` restarts from item 0."""

    def __iter__(self):
        return (("y" * (i % 17 + 1), i) for i in itertools.count())


def test_infinite_iterable_in_order():
    gen = TextGenerator(Endless(), batch_size=4)
    assert gen.steps is None
    with pytest.raises(TypeError, match="steps_per_epoch"):
        len(gen)
    batches = targets_of(itertools.islice(gen.__iter__(False), 6))
    assert batches == [list(range(4 * k, 4 * k + 4)) for k in range(6)]


def test_infinite_iterable_shuffles_locally():
    gen = TextGenerator(Endless(), batch_size=4, buffer_size=20, seed=3)
    seen = sum(targets_of(itertools.islice(gen.__iter__(True), 25)), [])
    assert len(seen) == 100 and len(set(seen)) == 100  # no duplicates
    assert seen != sorted(seen)
    # Local shuffle: the k-th emitted item was read at most buffer_size items ago.
    assert all(item <= k + 20 for k, item in enumerate(seen))


def test_infinite_iterable_bucketing_keeps_batches_whole():
    gen = TextGenerator(Endless(), batch_size=4, bucket=True, buffer_size=40, seed=0)
    batches = list(itertools.islice(gen.__iter__(True), 30))
    seen = sum(targets_of(batches), [])
    assert all(len(y) == 4 for y in targets_of(batches))
    assert len(set(seen)) == len(seen) == 120
    assert set(seen[:40]) == set(range(40))  # the first buffer is emitted first


def test_forfit_loops_over_epochs():
    gen = TextGenerator(make_items(10), batch_size=4)
    batches = targets_of(itertools.islice(gen.forfit(random=False), 7))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2 + [[0, 1, 2, 3]]


def test_forfit_rejects_an_exhausted_source():
    gen = TextGenerator(iter(make_items(3)), batch_size=2)
    with pytest.raises(ValueError, match="no batch in a whole epoch"):
        list(itertools.islice(gen.forfit(), 5))


# ----------------------------------------------------------------- bucketing

def padded_tokens(batches):
    """Padding positions over all batches (char ids are never 0)."""
    return sum(int((ids == 0).sum()) for ids, _ in batches)


def test_bucketing_keeps_items_and_cuts_padding():
    items = make_items(400, seed=5, max_len=100)
    plain = TextGenerator(items, batch_size=16, seed=0)
    bucketed = TextGenerator(items, batch_size=16, bucket=True, buffer_size=160, seed=0)
    plain_batches = list(plain.__iter__(True))
    bucket_batches = list(bucketed.__iter__(True))
    assert sorted(sum(targets_of(bucket_batches), [])) == list(range(400))
    assert [len(y) for y in targets_of(bucket_batches)] == [16] * 25
    assert padded_tokens(bucket_batches) < 0.3 * padded_tokens(plain_batches)
    again = sum(targets_of(bucketed.__iter__(True)), [])
    assert again != sum(targets_of(bucket_batches), [])  # a new order every epoch


def test_bucketing_puts_the_partial_batch_last_and_leaves_random_false_alone():
    items = make_items(50, seed=2)
    gen = TextGenerator(items, batch_size=8, bucket=True, buffer_size=16, seed=4)
    sizes = [len(y) for y in targets_of(gen.__iter__(True))]
    assert sizes == [8] * 6 + [2]
    assert sum(targets_of(gen.__iter__(False)), []) == list(range(50))


def test_bucketing_runs_are_sorted_within_a_buffer():
    items = make_items(60, seed=7, max_len=64)
    gen = TextGenerator(items, batch_size=8, bucket=True, buffer_size=64, seed=1)
    batches = targets_of(gen.__iter__(True))
    assert [len(y) for y in batches] == [8] * 7 + [4]
    # One buffer holds everything, so every batch is one run of the sorted order:
    # batches do not overlap in length beyond ties, and the partial run (the
    # longest items) comes last.
    spans = [(min(len(items[i][0]) for i in y), max(len(items[i][0]) for i in y))
             for y in batches]
    ranges = sorted(spans)
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(ranges, ranges[1:]))
    assert spans[-1][0] >= max(hi for _, hi in spans[:-1])


def test_bucket_key():
    assert default_bucket_key(("abc", 1)) == 3
    assert default_bucket_key([[1, 2], [0, 0]]) == 2
    assert default_bucket_key([5, 6, 7, 8]) == 4
    assert default_bucket_key({"text": "ab", "label": 0}) == 2
    with pytest.raises(ValueError, match="bucket_key"):
        default_bucket_key(17)
    items = [(str(i), i) for i in range(12)]
    gen = TextGenerator(items, batch_size=3, bucket=True, bucket_key=lambda d: -d[1], seed=0)
    assert sorted(max(y) - min(y) for y in targets_of(gen.__iter__(True))) == [2] * 4
    bad = TextGenerator(items, batch_size=3, bucket=True, bucket_key=lambda d: "long")
    with pytest.raises(ValueError, match="bucket_key must map"):
        list(bad.__iter__(True))


@pytest.mark.skipif(not SENTIMENT.exists(), reason=f"sentiment corpus not found at {SENTIMENT}")
def test_bucketing_on_the_sentiment_corpus():
    items = []
    for i, line in enumerate(SENTIMENT.read_text(encoding="utf-8").splitlines()):
        text, _, _ = line.rpartition("\t")
        items.append((text, i))
    kwargs = dict(batch_size=32, seed=0)
    plain = list(TextGenerator(items, **kwargs).__iter__(True))
    bucketed = list(TextGenerator(items, bucket=True, **kwargs).__iter__(True))
    assert sorted(sum(targets_of(bucketed), [])) == list(range(len(items)))
    per_batch_plain = padded_tokens(plain) / len(plain)
    per_batch_bucketed = padded_tokens(bucketed) / len(bucketed)
    assert per_batch_bucketed <= 0.7 * per_batch_plain


# ----------------------------------------------------------------- tf.data

def assert_same_batches(actual, expected):
    assert len(actual) == len(expected)
    for (xa, ya), (xe, ye) in zip(actual, expected):
        np.testing.assert_array_equal(np.asarray(xa), xe)
        np.testing.assert_array_equal(np.asarray(ya), ye)


def test_to_dataset_matches_direct_iteration():
    gen = TextGenerator(make_items(21), batch_size=4)
    ds = gen.to_dataset(types=("int32", "int32"), shapes=([None, None], [None]),
                        random=False, repeat=False)
    assert_same_batches(list(ds.as_numpy_iterator()), list(gen))
    forever = gen.to_dataset(("int32", "int32"), ([None, None], [None]), random=False)
    assert_same_batches(list(forever.take(2 * len(gen)).as_numpy_iterator()), list(gen) * 2)


def test_to_dataset_padded_batch_and_names():
    items = make_items(10)
    gen = ItemGenerator(items, batch_size=4)
    ds = gen.to_dataset(("int32", "int32"), ([None], []), names=("ids", "target"),
                        padded_batch=True, random=False, repeat=False)
    batches = list(ds.as_numpy_iterator())
    assert [list(b["target"]) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    expected = sequence_padding([char_ids(t) for t, _ in items[4:8]])
    np.testing.assert_array_equal(batches[1]["ids"], expected)
    with pytest.raises(ValueError, match="types and shapes"):
        gen.to_dataset(("int32", "int32"), ([None],))


def test_to_dataset_reads_a_signature_of_unknown_lengths():
    # The first two batches share a length: Keras's own inference would fix it.
    items = [("a" * 5, 0)] * 16 + [("a" * 9, 1)] * 8
    gen = TextGenerator(items, batch_size=8)
    ds = gen.to_dataset(random=False, repeat=False)
    assert [spec.shape.as_list() for spec in ds.element_spec] == [[None, None], [None]]
    batches = list(ds.as_numpy_iterator())
    assert_same_batches(batches, list(gen))
    assert [b[0].shape[1] for b in batches] == [5, 5, 9]
    history = tiny_model().fit(gen.to_dataset(random=False), steps_per_epoch=len(gen),
                               epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="both types and shapes"):
        gen.to_dataset(types=("int32", "int32"))


def test_fit_with_forfit_and_to_dataset():
    items = [(t, i % 2) for t, i in make_items(40, seed=3)]
    gen = TextGenerator(items, batch_size=8, seed=0)
    model = tiny_model()
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2
    ds = gen.to_dataset(("int32", "int32"), ([None, None], [None]))
    history = model.fit(ds, steps_per_epoch=len(gen), epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    once = gen.to_dataset(("int32", "int32"), ([None, None], [None]), repeat=False)
    assert len(model.fit(once, epochs=2, verbose=0, shuffle=False).history["loss"]) == 2


# ----------------------------------------------------------------- PyDataset

class Recorder(keras.Model):
    """Records every training batch instead of training (runs eagerly)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def call(self, x):
        return x

    def train_step(self, data):
        x, _ = data
        self.seen.append(np.asarray(x))
        return {"batches": float(len(self.seen))}


def test_pydataset_with_two_processes_yields_each_batch_once():
    items = make_items(45, seed=1)
    gen = PidGenerator(items, batch_size=4, bucket=True, buffer_size=16, seed=0)
    ds = gen.to_pydataset(workers=2, use_multiprocessing=True)
    assert isinstance(ds, GeneratorDataset) and len(ds) == 12
    model = Recorder()
    model.compile(run_eagerly=True)
    model.fit(ds, epochs=2, verbose=0)
    assert len(model.seen) == 2 * len(ds)
    epochs = [model.seen[:12], model.seen[12:]]
    for batches in epochs:
        ids = np.concatenate([b[:, 0] for b in batches])
        assert sorted(ids) == list(range(45))  # every item once, nothing lost
        assert sorted(len(b) for b in batches) == [1] + [4] * 11
    orders = [[tuple(b[:, 0]) for b in batches] for batches in epochs]
    assert sorted(orders[0]) != sorted(orders[1])  # the plan is redrawn
    pids = {int(p) for batches in epochs for b in batches for p in b[:, 1]}
    assert os.getpid() not in pids  # built in worker processes


def test_pydataset_batches_follow_the_epoch_plan():
    gen = TextGenerator(make_items(10), batch_size=4)
    ds = GeneratorDataset(gen, random=False)
    assert_same_batches([ds[i] for i in range(len(ds))], list(gen))
    with pytest.raises(IndexError):
        ds[3]


class TwoBatches(TextGenerator):
    def __iter__(self, random=False):
        batches = list(super().__iter__(random))
        yield from batches * 2


def test_pydataset_rejects_what_it_cannot_split():
    with pytest.raises(ValueError, match="data with len"):
        TextGenerator(Endless()).to_pydataset()
    with pytest.raises(ValueError, match="exactly one"):
        TwoBatches(make_items(5), batch_size=2).to_pydataset()[0]
    with pytest.raises(ValueError, match="workers"):
        TextGenerator(make_items(5)).to_pydataset(workers=0)


# ----------------------------------------------------------------- evaluation

def test_progress_yields_the_epoch():
    gen = TextGenerator(make_items(9), batch_size=4)
    bar = progress(gen, disable=True)
    assert bar.total == 3
    assert_same_batches(list(bar), list(gen))


def test_evaluator_scores_accuracy_and_keeps_the_best(tmp_path):
    items = [(t, i % 2) for t, i in make_items(30, seed=4)]
    gen = TextGenerator(items, batch_size=8)
    model = tiny_model()
    path = tmp_path / "best.weights.h5"
    evaluator = Evaluator(gen, filepath=str(path), verbose=0)
    history = model.fit(gen.to_dataset(), steps_per_epoch=len(gen), epochs=2,
                        callbacks=[evaluator], verbose=0, shuffle=False)
    probs = np.concatenate([model.predict_on_batch(x) for x, _ in gen])
    labels = np.array([label for _, label in items])
    expected = float(np.mean(probs.argmax(axis=1) == labels))
    scores = history.history["val_score"]
    assert len(scores) == 2 and scores[-1] == pytest.approx(expected)
    assert evaluator.best == max(scores) and path.exists()
    best = tiny_model(compile=False)
    best.load_weights(str(path))
    best_probs = np.concatenate([best.predict_on_batch(x) for x, _ in gen])
    assert np.mean(best_probs.argmax(axis=1) == labels) == pytest.approx(max(scores))
