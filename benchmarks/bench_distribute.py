"""Multi-worker training speed and the cost of saving for --resume, same run.

The small model (4 layers, hidden 256, random weights) with a sentence-classification
head trains on random token sequences (a fixed global batch, 128 tokens), through
``bertkit.resume.fit_epochs`` as the examples do, in these set-ups:

- ``1 process, 2 threads``: one process using both cores (the usual run);
- ``1 worker, 1 thread``: one process on one core;
- ``2 workers, 1 thread each``: ``--distribute multiworker`` on loopback ports, each
  worker one core and half of every global batch;
- ``1 process, 2 threads, saving``: as the first, with the training state (weights,
  Adam's slots, position) committed every ``--save-every`` steps, as
  ``--save-every-steps`` does; each save is timed too, which measures its cost better
  than the difference of two speeds on a machine whose speed drifts.

Each set-up runs in fresh processes, in turn, ``--repeats`` times; the figures are
medians of the steps per second after ``--warmup`` untimed steps (which trace the
graph). Run it on a quiet machine: another job on a core distorts the ratios.

    python benchmarks/bench_distribute.py --steps 150 --repeats 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
from _common import cpu_name  # noqa: E402  (benchmarks/_common.py)
TAG = "@@bench "
SMALL = dict(vocab_size=21128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
             intermediate_size=1024, hidden_act="gelu", max_position_embeddings=512,
             type_vocab_size=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)



def worker(args):
    """One training process: prints the timed steps per second (the chief only)."""
    import bertkit  # noqa: F401  (first: TensorFlow's oneDNN kernels on)
    import keras
    import numpy as np

    from bertkit import distribute
    from bertkit.data import DataGenerator, sequence_padding
    from bertkit.models import build_transformer_model
    from bertkit.optimizers import fine_tuning_optimizer
    from bertkit.resume import TrainingBackup, fit_epochs
    from bertkit.storage import RunDirectory
    from bertkit.tasks import ClassificationHead

    kind = "multiworker" if "TF_CONFIG" in os.environ else "none"
    strategy = distribute.make_strategy(kind)

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

    rng = np.random.RandomState(0)
    steps = args.warmup + args.steps
    items = [(list(rng.randint(5, 21128, args.seq)), int(rng.randint(2)))
             for _ in range(steps * args.batch)]
    generator = Generator(items, batch_size=args.batch, seed=1)
    with strategy.scope():
        model = ClassificationHead(2).attach(build_transformer_model(**SMALL))
        model.compile(fine_tuning_optimizer(5e-5, steps), "sparse_categorical_crossentropy")

    class Clock(keras.callbacks.Callback):
        """Times the steps after the warm-up, up to the last step's end (the epoch-end
        save comes after it); a save every N steps falls inside."""
        seen, started, ended = 0, None, None

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == args.warmup:
                self.started = time.perf_counter()
            self.ended = time.perf_counter()

    class TimedBackup(TrainingBackup):
        seconds = []

        def save(self):
            start = time.perf_counter()
            super().save()
            self.seconds.append(time.perf_counter() - start)

    clock, backup = Clock(), None
    with tempfile.TemporaryDirectory() as directory:
        if args.save_every:
            backup = TimedBackup(RunDirectory(directory), {}, len(generator),
                                 save_every_steps=args.save_every)
            backup.set_model(model)
        fit_epochs(model, generator, lambda g: g.to_dataset(repeat=False), 1,
                   callbacks=[clock], backup=backup, strategy=strategy, verbose=0)
    if distribute.is_chief(strategy):
        print(TAG + json.dumps({"steps_per_second": args.steps / (clock.ended - clock.started),
                                "save_seconds": TimedBackup.seconds}), flush=True)


SETUPS = {  # name: (workers, threads a worker, save every)
    "1 process, 2 threads": (1, 2, 0),
    "1 worker, 1 thread": (1, 1, 0),
    "2 workers, 1 thread each": (2, 1, 0),
    "1 process, 2 threads, saving": (1, 2, "save"),
}


def measure(name, args):
    """Runs one set-up in fresh processes; returns the chief's steps per second."""
    from local_cluster import worker_environments

    workers, threads, save = SETUPS[name]
    command = [sys.executable, __file__, "--worker", "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq),
               "--save-every", str(args.save_every if save else 0)]
    base = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads),
                TF_NUM_INTEROP_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2",
                CUDA_VISIBLE_DEVICES="")
    environments = worker_environments(workers, threads, base) if workers > 1 else [base]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for env in environments]
    outputs = [p.communicate() for p in processes]
    for p, (_, err) in zip(processes, outputs):
        if p.returncode:
            raise SystemExit(f"{name}: a worker failed:\n{err[-3000:]}")
    line = next(line for line in outputs[0][0].splitlines() if line.startswith(TAG))
    return json.loads(line[len(TAG):])


def state_megabytes():
    """The state's size: weights and Adam's two slots, float32, of the small model."""
    hidden, layers, inner, vocab = (SMALL[k] for k in ("hidden_size", "num_hidden_layers",
                                                        "intermediate_size", "vocab_size"))
    embeddings = (vocab + SMALL["max_position_embeddings"] + 2) * hidden
    block = 4 * hidden * hidden + 2 * hidden * inner
    return 3 * 4 * (embeddings + layers * block + hidden * hidden) / 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150, help="timed steps a run")
    p.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    p.add_argument("--batch", type=int, default=16, help="the global batch")
    p.add_argument("--seq", type=int, default=128, help="tokens a sequence")
    p.add_argument("--save-every", type=int, default=100, help="steps between saves")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; small model (4 layers, hidden 256), "
          f"global batch {args.batch} x {args.seq} tokens, {args.steps} timed steps after "
          f"{args.warmup}, medians of {args.repeats}")
    figures, saves = {name: [] for name in SETUPS}, []
    for _ in range(args.repeats):
        for name in SETUPS:
            found = measure(name, args)
            figures[name].append(found["steps_per_second"])
            saves += found["save_seconds"]
            print(f"  {name}: {figures[name][-1]:.3f} steps/s", flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    reference = medians["1 process, 2 threads"]
    print("\n| set-up | steps/s | sequences/s | vs 1 process, 2 threads |")
    print("| --- | --- | --- | --- |")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} | {value * args.batch:.1f} | {value / reference:.2f}x |")
    saving = 1 - medians["1 process, 2 threads, saving"] / reference
    save = statistics.median(saves)
    share = save / (save + args.save_every / reference)
    print(f"\none save of the training state (weights, Adam's slots, position: "
          f"{state_megabytes():.0f} MB) takes {save:.2f} s (median of {len(saves)}); every "
          f"{args.save_every} steps that is {share:.1%} of the training time at "
          f"{reference:.2f} steps/s (the speed difference between the two runs measured "
          f"{saving:.1%})")


if __name__ == "__main__":
    main()
