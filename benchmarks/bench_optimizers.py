"""Cost of bertkit's derived optimizers in a BERT training step.

Times ``model.fit`` steps of a 4-layer BERT classifier (hidden 256, 4 heads,
intermediate 1024, vocabulary 21128, batch 32, sequence 128, dropout 0.1) with

- ``keras-adam``: Keras's own Adam, the baseline;
- ``bertkit-adam``: bertkit's Adam (sparse embedding gradients made dense first);
- ``stack``: bertkit's Adam with weight decay + piecewise-linear LR + parameter-wise
  LR (layer-wise decay 0.9) + EMA + gradient accumulation (2 steps), i.e. one update
  every second step; the step time is the mean over both kinds of step;
- ``stack-every-step``: the same without gradient accumulation, so that every step
  pays for a full update (the worst case);
- ``stack-op-by-op``: ``stack-every-step`` with Adam's fused kernel declined, i.e. the
  captured op-by-op step (what layer adaptation or lazy optimization run on).

A second table times the optimizer's update alone (``optimizer.apply`` on the
gradients of one backward pass), which is what the extensions add to.

All variants live in one process and are measured in turn, A B C D A B C D ..., so
that a change in the machine's load hits them alike; the tables show the median and
the minimum over the rounds (on a shared machine the minimum is the steadier figure)
and their ratios to ``keras-adam``.

    python benchmarks/bench_optimizers.py                  # ~8 min on 2 cores
    python benchmarks/bench_optimizers.py --rounds 3 --steps 6 --jit
    python benchmarks/bench_optimizers.py --shape base --update-only   # BERT-base, 110M
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import cpu_name  # noqa: E402  (benchmarks/_common.py)

import bertkit  # noqa: E402,F401  (first: TensorFlow's oneDNN kernels on)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bertkit import optimizers as bo  # noqa: E402
from bertkit.ema import extend_with_exponential_moving_average  # noqa: E402
from bertkit.schedules import layerwise_lr_decay  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402

SHAPES = {
    "small": dict(vocab_size=21128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024),
    "base": dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072),
}
SHAPE = dict(SHAPES["small"])  # set from --shape in main()


def classifier():
    keras.utils.set_random_seed(0)
    encoder = build_transformer_model(None, with_pool=True, **SHAPE)
    probabilities = keras.layers.Dense(2, activation="softmax", name="Classifier")(encoder.output)
    return keras.Model(encoder.inputs, probabilities)


def optimizers(model):
    """name -> optimizer; the stack's schedules are those of a real fine-tuning run."""
    stack = extend_with_exponential_moving_average(bo.extend_with_parameter_wise_lr(
        bo.extend_with_piecewise_linear_lr(bo.extend_with_weight_decay(bo.Adam))))
    options = dict(weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"],
                   lr_schedule={100: 1.0, 1000: 0.1}, ema_momentum=0.999,
                   paramwise_lr_schedule=layerwise_lr_decay(model, decay=0.9))
    class OpByOp(stack):
        def apply_step_in_place(self, *args, **kwargs):
            return False  # decline the fused kernel: the captured op-by-op step

    return {
        "keras-adam": keras.optimizers.Adam(1e-4),
        "bertkit-adam": bo.Adam(1e-4),
        "stack": bo.extend_with_gradient_accumulation(stack)(1e-4, grad_accum_steps=2, **options),
        "stack-every-step": stack(1e-4, **options),
        "stack-op-by-op": OpByOp(1e-4, **options),
    }


def batch(args):
    rng = np.random.RandomState(0)
    tokens = rng.randint(1, SHAPE["vocab_size"], (args.batch, args.seq)).astype("int32")
    return (tokens, np.zeros_like(tokens)), rng.randint(0, 2, (args.batch,)).astype("int32")


def train_step_timers(args):
    """name -> function timing ``args.steps`` fit steps, in seconds per step."""
    data = tf.data.Dataset.from_tensors(batch(args)).repeat()
    timers = {}
    for name, optimizer in optimizers(classifier()).items():
        model = classifier()
        model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=args.jit)
        model.fit(data, steps_per_epoch=4, epochs=1, verbose=0)  # trace, build, warm up

        def timer(model=model):
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
            return (time.perf_counter() - start) / args.steps
        timers[name] = timer
    return timers


def update_timers(args):
    """name -> function timing the optimizer's update alone, on one backward pass's gradients."""
    model = classifier()
    variables = model.trainable_variables
    (x, y) = batch(args)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    gradients = tape.gradient(loss, variables)  # embedding gradients are tf.IndexedSlices
    timers = {}
    for name, optimizer in optimizers(model).items():
        optimizer.build(variables)
        apply = tf.function(lambda g, o=optimizer: o.apply(g, variables), jit_compile=args.jit)
        apply(gradients)

        def timer(apply=apply):
            start = time.perf_counter()
            for _ in range(args.steps):
                apply(gradients)
            variables[0].numpy()  # wait for the last update
            return (time.perf_counter() - start) / args.steps
        timers[name] = timer
    return timers


def measure(timers, rounds):
    """Runs the timers in turn, A B C D A B C D ..., and returns name -> list of times."""
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return times


def report(title, times):
    print(f"\n{title}")
    median0, min0 = statistics.median(times["keras-adam"]), min(times["keras-adam"])
    print(f"{'optimizer':<18}{'median ms':>11}{'min ms':>9}{'max ms':>9}"
          f"{'median ratio':>14}{'min ratio':>11}")
    for name, values in times.items():
        median, low = statistics.median(values), min(values)
        print(f"{name:<18}{median * 1e3:>11.1f}{low * 1e3:>9.1f}{max(values) * 1e3:>9.1f}"
              f"{median / median0:>13.3f}x{low / min0:>10.3f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurement rounds (default 5)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round, even (default 10)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small",
                        help="the encoder: small (4 layers, hidden 256; default) or base")
    parser.add_argument("--update-only", action="store_true",
                        help="time the optimizer update alone, not the training step")
    args = parser.parse_args()
    SHAPE.update(SHAPES[args.shape])
    if args.steps % 2:
        parser.error("--steps must be even: the stack updates every second step")

    params = classifier().count_params()
    print(f"CPU: {cpu_name()}; {SHAPE['num_hidden_layers']}-layer BERT classifier "
          f"(hidden {SHAPE['hidden_size']}), {params / 1e6:.1f}M parameters, batch {args.batch}, "
          f"seq {args.seq}, jit_compile={args.jit}, {args.rounds} rounds of {args.steps} steps; "
          f"ratios are to keras-adam")
    if not args.update_only:
        report("training step (model.fit)", measure(train_step_timers(args), args.rounds))
    report("optimizer update alone (optimizer.apply on fixed gradients)",
           measure(update_timers(args), args.rounds))


if __name__ == "__main__":
    main()
