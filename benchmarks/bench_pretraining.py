"""MLM pretraining step speed: bertkit's gathered head against the dense peer, same run.

Times one masked-language-model training step (forward, backward, Adam update) of
the small Chinese BERT that ``examples/pretrain_mlm.py`` trains (4 layers, hidden 256,
vocabulary 21128, batch 32 x 128 tokens, 15% masked, no dropout), as
``model.fit`` runs it, in three variants:

- ``bertkit``: :func:`bertkit.tasks.pretraining.build_pretraining_model` and
  :func:`~bertkit.tasks.pretraining.compile_pretraining_model`: hidden states gathered at the
  20 prediction slots before the tied vocabulary projection, and
  :class:`~bertkit.tasks.pretraining.MaskedLMAccuracy`;
- ``keras-accuracy``: the same model with Keras's ``SparseCategoricalAccuracy``,
  whose ``ops.argmax`` makes five extra passes over the ``[B, P, V]`` logits;
- ``dense``: the MLM head over all 128 positions with per-position weights, the
  way bert4keras's ``with_mlm=True`` model is trained (the peer's design; bert4keras
  itself does not run on this TensorFlow).

Variants are built in one process and timed in turn, A B C A B C ..., so a change in
the machine's load hits them alike; the table gives the median ms a step, min-max
over the repeats and the ratio to ``bertkit``. Run from the repository root:

    python benchmarks/bench_pretraining.py                 # ~3 min on 2 cores
    python benchmarks/bench_pretraining.py --repeats 7 --steps 20 --policy float32
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bertkit  # noqa: E402,F401  (first: TensorFlow's oneDNN kernels on)
import keras  # noqa: E402

from bertkit.tasks import pretraining  # noqa: E402
from bertkit.config import BertConfig  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed rounds a variant")
    p.add_argument("--steps", type=int, default=10, help="training steps a round")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--policy", default="mixed_bfloat16",
                   help="Keras dtype policy (mixed_bfloat16, as --mixed-precision bf16)")
    return p.parse_args(argv)


def small_config():
    return BertConfig(vocab_size=21128, num_hidden_layers=4, hidden_size=256,
                      num_attention_heads=4, intermediate_size=1024, hidden_act="gelu",
                      max_position_embeddings=512, type_vocab_size=2,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def make_batches(args, vocab_size, slots):
    """Random ids, 15% of positions masked: gathered and dense forms of one batch."""
    rng = np.random.default_rng(0)
    b, t = args.batch_size, args.maxlen
    ids = rng.integers(5, vocab_size, size=(b, t)).astype("int32")
    positions = np.stack([np.sort(rng.choice(np.arange(1, t), slots, replace=False))
                          for _ in range(b)]).astype("int32")
    labels = rng.integers(5, vocab_size, size=(b, slots)).astype("int32")
    weights = np.ones((b, slots), "float32")
    gathered = ((ids, np.zeros_like(ids), positions), labels, weights)
    dense_labels = np.zeros((b, t), "int32")
    dense_weights = np.zeros((b, t), "float32")
    np.put_along_axis(dense_labels, positions, labels, axis=1)
    np.put_along_axis(dense_weights, positions, 1.0, axis=1)
    dense = ((ids, np.zeros_like(ids)), dense_labels, dense_weights)
    return gathered, dense


def stock_loss():
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight")


def build_variants(args):
    """name -> (compiled model, batch)."""
    slots = pretraining.max_predictions_for(args.maxlen)
    gathered, dense = make_batches(args, 21128, slots)
    variants = {}
    for name in ("bertkit", "keras-accuracy", "dense"):
        keras.utils.set_random_seed(0)
        builder = build_transformer_model(small_config(), dtype=args.policy,
                                          with_mlm="linear" if name == "dense" else True,
                                          return_keras_model=False)
        optimizer = keras.optimizers.Adam(1e-4)
        if name == "bertkit":
            model = pretraining.build_pretraining_model(builder, slots)
            pretraining.compile_pretraining_model(model, optimizer)
            batch = gathered
        elif name == "keras-accuracy":
            model = pretraining.build_pretraining_model(builder, slots)
            model.compile(optimizer, stock_loss(),
                          weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
            batch = gathered
        else:
            encoder = builder.model  # the MLM logits at every position
            logits = keras.layers.Activation("linear", dtype="float32")(encoder.outputs[0])
            model = keras.Model(encoder.inputs, logits)
            model.compile(optimizer, stock_loss(),
                          weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
            batch = dense
        variants[name] = (model, batch)
    return variants


def time_round(model, batch, steps):
    x, y, w = batch
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y, sample_weight=w)
    return (time.perf_counter() - start) / steps * 1e3


def main(argv=None):
    args = parse_args(argv)
    print(f"MLM pretraining step, 4L/H256/V21128, batch {args.batch_size} x {args.maxlen}, "
          f"{args.policy}, {os.cpu_count()} CPUs; {args.repeats} rounds of {args.steps} steps")
    variants = build_variants(args)
    for model, batch in variants.values():  # trace and warm up
        time_round(model, batch, 3)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (model, batch) in variants.items():
            times[name].append(time_round(model, batch, args.steps))
    base = statistics.median(times["bertkit"])
    print(f"{'variant':16s} {'ms/step':>9s} {'min-max':>13s} {'x bertkit':>10s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:16s} {median:9.0f} {min(values):6.0f}-{max(values):<6.0f} "
              f"{median / base:10.2f}")


if __name__ == "__main__":
    main()
