"""Feeding speed and padding: plain generator vs tf.data vs PyDataset workers.

Trains a small Keras model on the sentiment corpus (16,883 review lines), tokenized
per character against the 21,128-token Chinese vocabulary with Google's basic
normalisation (lower-casing, NFD accent stripping, control and space removal), and
reports:

- padded token positions per batch with and without length bucketing (whole
  training split, several buffer sizes);
- steps/s of `model.fit` fed by `forfit()` (Keras's generator adapter), by
  `to_dataset()` (tf.data with prefetch), by `to_pydataset()` with 1 and 2 worker
  processes, and by pre-built batches (`cached`: no tokenization, the model's own
  ceiling), without and with bucketing;
- the data side alone: batches/s of building batches without a model;
- how many runs hit Keras's two-batch signature trap (see `bertkit.data`); such a
  run is retried with a new shuffle. `--extra-work N` tokenizes every text N times,
  standing in for heavier per-batch Python work.

Speed figures are whole epochs of `--steps` batches (worker start-up included, the
train step traced beforehand), median over `--rounds` rounds, all in the same run.

    python benchmarks/bench_data.py                     # small pooling model
    python benchmarks/bench_data.py --model transformer # 2-layer transformer
    python benchmarks/bench_data.py --extra-work 10     # Python-heavy batches
"""
import argparse
import os
import statistics
import sys
import time
import unicodedata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bertkit  # noqa: E402,F401  (first: TensorFlow's oneDNN kernels on)
import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertkit.data import DataGenerator, sequence_padding  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERTKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


class CharTokenizer:
    """Per-character ids with the normalisation of Google's BasicTokenizer."""

    def __init__(self, vocab_path):
        tokens = vocab_path.read_text(encoding="utf-8").splitlines()
        self.vocab = {token: i for i, token in enumerate(tokens)}
        self.cls, self.sep, self.unk = (self.vocab[t] for t in ("[CLS]", "[SEP]", "[UNK]"))

    def encode(self, text, maxlen):
        ids = [self.cls]
        for ch in unicodedata.normalize("NFD", text.lower()):
            if ch.isspace() or unicodedata.category(ch) in ("Mn", "Cc", "Cf"):
                continue
            ids.append(self.vocab.get(ch, self.unk))
        return ids[:maxlen - 1] + [self.sep]


class SentimentGenerator(DataGenerator):
    """`(text, label)` items -> `(token ids [B, T], labels [B])`, 0 = [PAD]."""

    tokenizer = None
    maxlen = 256
    extra_work = 1

    def __iter__(self, random=False):
        batch_ids, batch_labels = [], []
        for is_end, (text, label) in self.sample(random):
            for _ in range(self.extra_work):  # stands in for heavier preprocessing
                ids = self.tokenizer.encode(text, self.maxlen)
            batch_ids.append(ids)
            batch_labels.append(label)
            if len(batch_ids) == self.batch_size or is_end:
                yield sequence_padding(batch_ids).astype("int32"), np.array(batch_labels)
                batch_ids, batch_labels = [], []


class CachedGenerator(DataGenerator):
    """Replays pre-built batches: the model's speed without any data work."""

    def __iter__(self, random=False):
        yield from self.data


def load_items(path):
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text, _, label = line.rpartition("\t")
        items.append((text, int(label)))
    return items


def build_model(kind, vocab_size=21128, hidden=128):
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = keras.layers.Embedding(vocab_size, hidden, mask_zero=True)(ids)
    if kind == "transformer":
        for _ in range(2):
            a = keras.layers.MultiHeadAttention(4, hidden // 4)(h, h)
            h = keras.layers.LayerNormalization()(h + a)
            f = keras.layers.Dense(4 * hidden, activation="gelu")(h)
            h = keras.layers.LayerNormalization()(h + keras.layers.Dense(hidden)(f))
    else:
        h = keras.layers.Dense(2 * hidden, activation="gelu")(h)
        h = keras.layers.Dense(hidden)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(ids, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class EpochTimer(keras.callbacks.Callback):
    """Wall time of the epoch: worker start-up included, tracing excluded
    (a warm-up fit traced the train step before)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit_inputs(mode, gen):
    """`(x, fit kwargs)` for one feeding mode."""
    if mode == "forfit":
        return gen.forfit(), dict(steps_per_epoch=len(gen))
    if mode in ("to_dataset", "cached"):
        return gen.to_dataset(), dict(steps_per_epoch=len(gen))
    workers = int(mode.rsplit("_", 1)[1])
    return gen.to_pydataset(workers=workers, use_multiprocessing=True), {}


def time_mode(model, mode, gen, attempts=5):
    """Steady steps/s and how many attempts hit Keras's two-batch signature trap
    (a later batch longer or shorter than the first two, which had equal lengths);
    each attempt draws a new shuffle."""
    for trapped in range(attempts):
        timer = EpochTimer()
        x, kwargs = fit_inputs(mode, gen)
        try:
            model.fit(x, epochs=1, verbose=0, shuffle=False, callbacks=[timer], **kwargs)
        except Exception as e:
            if "where an element of shape" not in str(e):
                raise
            continue
        return len(gen) / timer.seconds, trapped
    return None, attempts


def padding_report(items, args):
    print(f"\nPadding on the training split ({len(items)} lines, batch {args.batch_size}, "
          f"maxlen {args.maxlen}): padded positions per batch")
    rows = [("no bucketing", dict())]
    for batches in (10, 100, 1000):
        rows.append((f"bucket, buffer {batches} batches",
                     dict(bucket=True, buffer_size=batches * args.batch_size)))
    base = None
    for name, kwargs in rows:
        gen = SentimentGenerator(items, batch_size=args.batch_size, seed=0, **kwargs)
        pads, cells, n = 0, 0, 0
        for ids, _ in gen.__iter__(True):
            pads += int((ids == 0).sum())
            cells += ids.size
            n += 1
        per_batch = pads / n
        base = base or per_batch
        print(f"  {name:28s} {per_batch:8.1f} per batch ({pads / cells:5.1%} of positions), "
              f"saved {1 - per_batch / base:5.1%}")


def measure(items, args):
    """Steps/s per (bucketing, mode): lists over rounds, and trap counts."""
    rng = np.random.RandomState(args.seed)
    subset = [items[i] for i in rng.permutation(len(items))[:args.steps * args.batch_size]]
    modes = ("cached", "forfit", "to_dataset", "pydataset_1", "pydataset_2")
    results, traps = {}, {}
    for bucket in (False, True):
        tag = "bucketed" if bucket else "unbucketed"
        gen = SentimentGenerator(subset, batch_size=args.batch_size, bucket=bucket,
                                 seed=args.seed)
        start = time.perf_counter()
        built = list(gen.__iter__(True))
        results[(tag, "data only")] = [len(built) / (time.perf_counter() - start)]
        cached = CachedGenerator(built, batch_size=1)
        model = build_model(args.model)
        model.fit(cached.to_dataset(), steps_per_epoch=len(cached), epochs=1, verbose=0,
                  shuffle=False)  # traces the train step
        for _ in range(args.rounds):
            for mode in modes:
                rate, trapped = time_mode(model, mode, cached if mode == "cached" else gen)
                results.setdefault((tag, mode), []).append(rate)
                traps[(tag, mode)] = traps.get((tag, mode), 0) + trapped
    return results, traps


def report(results, traps, args):
    print(f"\nmodel.fit steps/s: {args.model} model, batch {args.batch_size}, maxlen "
          f"{args.maxlen}, extra work x{args.extra_work}, {args.steps} steps an epoch, "
          f"median of {args.rounds} rounds (cpus {os.cpu_count()}, load "
          f"{os.getloadavg()[0]:.1f})")
    for tag in ("unbucketed", "bucketed"):
        base = statistics.median([v for v in results[(tag, "forfit")] if v] or [float("nan")])
        for (t, mode), values in results.items():
            values = [v for v in values if v]
            if t != tag:
                continue
            if mode == "data only":
                print(f"  {tag:10s} {mode:12s} {values[0]:7.1f} batches/s built "
                      f"({1000 / values[0]:.1f} ms a batch)")
            elif not values:
                print(f"  {tag:10s} {mode:12s} every run hit the signature trap")
            else:
                trapped = traps[(t, mode)]
                note = f", {trapped} runs hit the signature trap" if trapped else ""
                print(f"  {tag:10s} {mode:12s} {statistics.median(values):7.1f} steps/s  "
                      f"x{statistics.median(values) / base:.2f} vs forfit{note}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("pool", "transformer"), default="pool")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--maxlen", type=int, default=256)
    parser.add_argument("--steps", type=int, default=120, help="batches an epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-work", type=int, default=1,
                        help="tokenize every text this many times (heavier preprocessing)")
    args = parser.parse_args()

    data = SHARED / "sentiment" / "sentiment.train.data"
    vocab = SHARED / "vocab" / "chinese_vocab.txt"
    if not data.exists() or not vocab.exists():
        sys.exit(f"needs {data} and {vocab} (set BERTKIT_SHARED_DATA)")
    SentimentGenerator.tokenizer = CharTokenizer(vocab)
    SentimentGenerator.maxlen = args.maxlen
    items = load_items(data)
    padding_report(items, args)
    SentimentGenerator.extra_work = args.extra_work
    report(*measure(items, args), args)


if __name__ == "__main__":
    main()
