"""What the CRF costs: its loss in a training step, Viterbi in a prediction batch, and
decoding throughput against bert4keras's ``ViterbiDecoder``.

On a 4-layer BERT (hidden 256, 4 heads, intermediate 1024, vocabulary 21128; the NER
example's from-scratch model), batch 32, 7 IOB2 tags (PER / LOC / ORG):

1. Training step: ``model.fit`` steps of the encoder with ``CRFTaggingHead`` (CRF
   log-likelihood loss) against the same encoder with ``SoftmaxTaggingHead`` (masked
   cross-entropy), measured in turn (A B A B ...); the CRF's share is the difference
   over the CRF step. The loss and its gradient alone are timed too.
2. Prediction batch: ``predict_on_batch`` of the emissions against the CRF head's
   decoder model (emissions + batched Viterbi in the same graph).
3. Decoding throughput (sentences/s) of N random emission matrices: bertkit's batched
   Viterbi (graph mode, batches of 64) against bert4keras 0.11.5's ``ViterbiDecoder``
   (NumPy, one sentence at a time, as its NER example decodes), run in its own
   virtualenv (``--bert4keras-python``, see ``peer_bert4keras_viterbi.py``), with the
   paths checked to agree.

Run it on a quiet machine: a busy core fakes every ratio.

    python benchmarks/bench_crf.py --bert4keras-python /path/to/b4k-venv/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import bertkit  # noqa: E402,F401  (first: TensorFlow's oneDNN kernels on)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.tasks.tagging import (ConditionalRandomField, CRFTaggingHead,  # noqa: E402
                                   SoftmaxTaggingHead)
from _common import cpu_name  # noqa: E402  (benchmarks/_common.py)

SHAPE = dict(vocab_size=21128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
             intermediate_size=1024)
TYPES = ["PER", "LOC", "ORG"]
TAGS = 1 + 2 * len(TYPES)



def batch(size, length, seed=0):
    """Token ids with real lengths between half and all of ``length``, and IOB2 tags."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, size)
    ids = np.zeros((size, length), "int32")
    tags = np.full((size, length), -1, "int32")
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(106, SHAPE["vocab_size"], n)
        tags[b, :n] = rng.integers(0, TAGS, n)
    return [ids, np.zeros_like(ids)], tags


def tagger(kind):
    keras.utils.set_random_seed(0)
    encoder = build_transformer_model(None, **SHAPE)
    head = (CRFTaggingHead(TYPES, lr_multiplier=100) if kind == "crf"
            else SoftmaxTaggingHead(TYPES))
    model = head.attach(encoder)
    model.compile(keras.optimizers.Adam(1e-4), loss=head.loss)
    return head, model


def per_call(function, repeats):
    """Median seconds of ``function()`` over ``repeats`` calls (after one warm-up)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def training_share(args):
    x, y = batch(args.batch_size, args.length)
    models = {kind: tagger(kind) for kind in ("softmax", "crf")}
    steps = {kind: [] for kind in models}
    for kind, (_, model) in models.items():  # trace and warm up
        model.train_on_batch(x, y)
    for _ in range(args.rounds):
        for kind, (_, model) in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            steps[kind].append((time.perf_counter() - start) / args.steps)
    step = {kind: float(np.median(t)) for kind, t in steps.items()}

    crf = models["crf"][0].crf
    emissions = tf.constant(np.random.default_rng(1).normal(size=(args.batch_size, args.length,
                                                                   TAGS)), tf.float32)

    @tf.function
    def loss_and_gradient():
        with tf.GradientTape() as tape:
            tape.watch(emissions)
            loss = tf.reduce_mean(crf.loss(y, emissions))
        return tape.gradient(loss, [emissions, crf.stored_transitions])

    alone = per_call(loss_and_gradient, args.rounds * args.steps)
    return step, alone


def prediction_share(args):
    x, _ = batch(args.batch_size, args.length, seed=2)
    head, model = tagger("crf")
    decoder = head.decoder(model)
    times = {"emissions": [], "emissions+viterbi": []}
    for name, m in (("emissions", model), ("emissions+viterbi", decoder)):
        m.predict_on_batch(x)
    for _ in range(args.rounds * args.steps):
        for name, m in (("emissions", model), ("emissions+viterbi", decoder)):
            start = time.perf_counter()
            m.predict_on_batch(x)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def decoding_throughput(args, directory):
    rng = np.random.default_rng(3)
    emissions = rng.normal(size=(args.sentences, args.length, TAGS)).astype("float32")
    transitions = rng.normal(size=(TAGS, TAGS)).astype("float32")
    path = os.path.join(directory, "emissions.npz")
    np.savez(path, emissions=emissions, transitions=transitions)

    crf = ConditionalRandomField()
    crf.build((None, None, TAGS))
    crf.stored_transitions.assign(transitions)
    decode = tf.function(crf.decode, reduce_retracing=True)
    chunk = 64
    decode(emissions[:chunk])  # trace
    start = time.perf_counter()
    paths = np.concatenate([decode(emissions[k:k + chunk]).numpy()
                            for k in range(0, len(emissions), chunk)])
    bertkit_rate = len(emissions) / (time.perf_counter() - start)
    result = {"bertkit": bertkit_rate}
    if args.bert4keras_python:
        out = os.path.join(directory, "paths.npz")
        script = os.path.join(HERE, "peer_bert4keras_viterbi.py")
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_KERAS="1")
        done = subprocess.run([args.bert4keras_python, script, "--npz", path, "--out", out],
                              capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            raise RuntimeError(f"bert4keras's decoder failed:\n{done.stdout}\n{done.stderr}")
        peer = json.loads(lines[-1][len("RESULT "):])
        result["bert4keras"] = peer["sentences_per_second"]
        theirs = np.load(out)["paths"]
        result["paths agree"] = float(np.mean(np.all(theirs == paths, axis=1)))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--length", type=int, default=64, help="padded tokens a sentence")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--sentences", type=int, default=2000, help="for decoding throughput")
    p.add_argument("--bert4keras-python", help="the python of a virtualenv with bert4keras "
                   "0.11.5 (tf-keras); leave out to time bertkit alone")
    args = p.parse_args(argv)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"4-layer BERT (hidden 256), batch {args.batch_size}, length {args.length}, "
          f"{TAGS} tags\n")

    step, alone = training_share(args)
    extra = step["crf"] - step["softmax"]
    print("training step (model.fit's train_on_batch, median s):")
    print(f"  softmax head {step['softmax']:.4f}   crf head {step['crf']:.4f}   "
          f"CRF's share {extra / step['crf']:6.1%}")
    print(f"  CRF loss + gradient alone {alone:.4f} s = {alone / step['crf']:6.1%} of the step")

    predict = prediction_share(args)
    share = (predict["emissions+viterbi"] - predict["emissions"]) / predict["emissions+viterbi"]
    print("prediction batch (predict_on_batch, median s):")
    print(f"  emissions {predict['emissions']:.4f}   emissions + Viterbi "
          f"{predict['emissions+viterbi']:.4f}   Viterbi's share {share:6.1%}")

    with tempfile.TemporaryDirectory() as directory:
        rates = decoding_throughput(args, directory)
    print(f"decoding {args.sentences} sentences of {args.length} tokens (sentences/s):")
    print(f"  bertkit batched Viterbi {rates['bertkit']:10.0f}")
    if "bert4keras" in rates:
        print(f"  bert4keras ViterbiDecoder {rates['bert4keras']:8.0f}   bertkit / bert4keras "
              f"{rates['bertkit'] / rates['bert4keras']:.1f}x   identical paths "
              f"{rates['paths agree']:.1%}")
    return step, alone, predict, rates


if __name__ == "__main__":
    main()
