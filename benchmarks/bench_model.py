"""Encoder speed: bertkit against keras-hub and Hugging Face (PyTorch), same run.

Measures, for each model shape, sequences/s of

- inference: the encoder's forward pass (sequence and pooled outputs);
- training: one fine-tuning step of a classifier on the pooled ``[CLS]`` vector
  (forward, backward, AdamW update), with dropout 0.1 as in BERT's fine-tuning; each
  library with its own fine-tuning optimizer: bertkit's ``fine_tuning_optimizer``
  (what its examples use), Keras's ``AdamW`` for keras-hub, ``torch.optim.AdamW``;

for bertkit (Keras graph mode, which is what ``jit_compile='auto'`` gives on a CPU,
and XLA with ``jit_compile=True``), keras-hub's ``BertBackbone`` on the same Keras and
TensorFlow, and Hugging Face ``BertModel`` on PyTorch; bertkit and keras-hub also under
Keras's ``mixed_bfloat16`` policy (the header says whether the CPU has bfloat16 units;
without them bf16 is emulated and not expected to be faster). The machine's limit, for
each precision, is the best matmul throughput that TensorFlow or PyTorch reach on the
very matmuls the model runs (projections, feed-forward and the attention products,
forward and backward), in float32 for the fp32 rows and in bfloat16 for the bf16 rows;
each implementation's achieved GFLOP/s is reported as a fraction of the limit of its
own precision ("of limit"). ``x fp32`` divides a bf16 row by the same library's fp32
row.

``bertkit-frozen`` and ``bertkit-bf16-frozen`` are inference in a serving process, with
``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1``: TensorFlow then packs each weight once into the
blocked layout of oneDNN's matrix-unit kernels instead of reading the variable at every
call (``bertkit._fused.weights_assumed_frozen``; training refuses it, so these rows
measure inference only). ``bertkit-bf16-serving-frozen`` is that process predicting with
``bertkit.export.serving_twin`` of the model (its attention and feed-forward weights
stored in bfloat16, what the SavedModel export holds: the same outputs without a cast of
every weight at every call). ``hf-torch-bf16-weights`` is PyTorch's counterpart, the
model converted with ``.to(torch.bfloat16)`` (its layer norms then run in bfloat16 too,
unlike autocast's): inference only as well.

TensorFlow runs its oneDNN kernels by default only on x86 CPUs with AVX512_VNNI,
AVX512_BF16 or AMX; ``import bertkit`` turns them on elsewhere too (``bertkit._onednn``),
so bertkit's workers import it first, as a user's script does. Where TensorFlow's default
is off, ``bertkit-eigen`` (and ``bertkit-bf16-eigen``) show bertkit with Eigen's kernels
(``TF_ENABLE_ONEDNN_OPTS=0``), ``keras-hub-onednn`` (and ``keras-hub-bf16-onednn``)
keras-hub with oneDNN's, and the matmul limit takes TensorFlow's matmuls under both.

Every implementation runs in its own worker process (its own thread pools and its own
peak RSS). The workers of one (shape, workload) group are started together and
measured in turn, A B C A B C ..., so that a change in the machine's load hits them
alike; the table shows medians, min-max over the repeats and ratios to the fastest
peer. A last section feeds batches of varying lengths to an XLA-compiled training
step, with and without ``bertkit.data.pad_to_bucket``, and counts traces and
compilations after warm-up.

Peers are not bertkit dependencies; install them in a separate virtualenv (see
``benchmarks/README.md``), then:

    python benchmarks/bench_model.py                         # the default rows, ~35 min
    python benchmarks/bench_model.py --shapes small --repeats 3
    python benchmarks/bench_model.py --impls bertkit-xla,keras-hub-xla --workloads train
    python benchmarks/bench_model.py --impls all             # adds XLA+oneDNN, bf16 XLA and torch
"""
import argparse
import ctypes
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import cpu_flags, cpu_name  # benchmarks/_common.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
TAG = "@@bench "

SHAPES = {
    "base": dict(layers=12, hidden=768, heads=12, intermediate=3072, vocab=21128,
                 batch=16, seq=128),
    "small": dict(layers=4, hidden=256, heads=4, intermediate=1024, vocab=21128,
                  batch=32, seq=128),
}

# name: (library, jit_compile, dtype policy); "+onednn": XLA with oneDNN matmuls
IMPLS = {
    "bertkit": ("bertkit", False, "float32"),
    "bertkit-xla": ("bertkit", True, "float32"),
    "keras-hub": ("keras_hub", False, "float32"),
    "keras-hub-xla": ("keras_hub", True, "float32"),
    "hf-torch": ("torch", False, "float32"),
    "bertkit-xla+onednn": ("bertkit", True, "float32"),
    "bertkit-bf16": ("bertkit", False, "mixed_bfloat16"),
    "bertkit-xla-bf16": ("bertkit", True, "mixed_bfloat16"),
    "keras-hub-bf16": ("keras_hub", False, "mixed_bfloat16"),
    "hf-torch-bf16": ("torch", False, "bfloat16"),
    "bertkit-frozen": ("bertkit", False, "float32"),
    "bertkit-bf16-frozen": ("bertkit", False, "mixed_bfloat16"),
    "bertkit-bf16-serving-frozen": ("bertkit", False, "mixed_bfloat16"),
    "hf-torch-bf16-weights": ("torch", False, "bfloat16"),
    "bertkit-eigen": ("bertkit", False, "float32"),
    "bertkit-bf16-eigen": ("bertkit", False, "mixed_bfloat16"),
    "keras-hub-onednn": ("keras_hub", False, "float32"),
    "keras-hub-bf16-onednn": ("keras_hub", False, "mixed_bfloat16"),
}
FROZEN_ENV = {"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1"}  # the "-frozen" rows: inference only
# Rows whose weights are stored in bfloat16 for inference (a serving twin, a converted
# PyTorch model): inference only, like the "-frozen" ones.
BF16_WEIGHTS = {"bertkit-bf16-serving-frozen", "hf-torch-bf16-weights"}
DEFAULT_IMPLS = ["bertkit", "bertkit-xla", "keras-hub", "keras-hub-xla", "hf-torch",
                 "bertkit-bf16", "keras-hub-bf16"]
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bfloat16 matmul units
# The /proc/cpuinfo flags with which TensorFlow turns its oneDNN kernels on by default.
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
                        "amx_int8")
# Rows and probes run with TensorFlow's oneDNN kernels off or on, whatever its default.
KERNEL_ENVS = {"-eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
               "-onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}}
# The "-onednn" probes run only where TensorFlow's default is off (else they repeat).
MATMUL_WORKERS = {"float32": ["matmul-tf", "matmul-tf-onednn", "matmul-torch"],
                  "bfloat16": ["matmul-tf-bf16", "matmul-tf-bf16-onednn",
                               "matmul-torch-bf16"]}


def variant(name):
    """The suffix that sets a row's process apart (``-frozen``, ``-eigen``, ...), or ''."""
    return next((suffix for suffix in ("-frozen", *KERNEL_ENVS) if name.endswith(suffix)), "")


def inference_only(name):
    """Whether implementation ``name`` is measured for inference only."""
    return name.endswith("-frozen") or name in BF16_WEIGHTS


# -- FLOPs ----------------------------------------------------------------------------

def matmuls(shape):
    """The matmuls of one forward pass as ``(batch, m, k, n, count)`` tuples."""
    b, t, h = shape["batch"], shape["seq"], shape["hidden"]
    i, heads, layers = shape["intermediate"], shape["heads"], shape["layers"]
    tokens, d = b * t, h // heads
    return [
        (1, tokens, h, h, 4 * layers),          # query, key, value, output projections
        (1, tokens, h, i, layers),              # feed-forward in
        (1, tokens, i, h, layers),              # feed-forward out
        (b * heads, t, d, t, layers),           # scores = Q K^T
        (b * heads, t, t, d, layers),           # context = P V
        (1, b, h, h, 1),                        # pooler
    ]


def training_matmuls(shape):
    """Forward matmuls plus the two backward ones of each (input and weight gradients)."""
    out = []
    for batch, m, k, n, count in matmuls(shape):
        out += [(batch, m, k, n, count), (batch, m, n, k, count), (batch, k, m, n, count)]
    return out


def flops(products):
    return sum(2.0 * batch * m * k * n * count for batch, m, k, n, count in products)


def workload_matmuls(shape, workload):
    return training_matmuls(shape) if workload == "train" else matmuls(shape)


def bf16_units():
    """The CPU's bfloat16 matmul flags (``avx512_bf16``, ``amx_bf16``); empty when it has
    none."""
    flags = cpu_flags()
    return [flag for flag in BF16_FLAGS if flag in flags]


def onednn_by_default():
    """Whether TensorFlow turns its oneDNN kernels on by itself on this CPU."""
    return any(flag in cpu_flags() for flag in ONEDNN_DEFAULT_FLAGS)


def describe_kernels():
    if onednn_by_default():
        return "TensorFlow's oneDNN kernels: on by TensorFlow's default on this CPU"
    return ("TensorFlow's oneDNN kernels: off by TensorFlow's default on this CPU (no "
            "AVX512_VNNI, AVX512_BF16 or AMX); bertkit turns them on, '-eigen' rows keep "
            "them off, '-onednn' rows turn them on for keras-hub")


def describe_bf16_support():
    units = bf16_units()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if units and cap and "AMX" not in cap and cap != "ALL":
        return (f"bf16 units: yes ({', '.join(units)}), but oneDNN may use only {cap} "
                "(ONEDNN_MAX_CPU_ISA): no AMX")
    if units:
        return f"bf16 units: yes ({', '.join(units)})"
    return ("bf16 units: none found; the bf16 rows are not expected to be faster than "
            "fp32 here (bfloat16 is then emulated in fp32 units)")


# -- workers --------------------------------------------------------------------------

def release_memory():
    """Hands freed heap pages back to the OS, so that an idle worker holds little RSS.

    The workers of a group stay alive side by side; without this each would keep its
    training peak resident (several GB for BERT-base) while the others run. The peak
    itself, ``ru_maxrss``, is unaffected.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def available_gb():
    """MemAvailable from ``/proc/meminfo`` in GiB (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        return None
    return None


def reply(**values):
    values["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(TAG + json.dumps(values), flush=True)


def timed(step, min_time, min_steps):
    """Runs ``step`` until both ``min_steps`` steps and ``min_time`` seconds are done."""
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if count >= min_steps and elapsed >= min_time:
            return count, elapsed


def random_batch(shape, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    b, t = shape["batch"], shape["seq"]
    token_ids = rng.integers(1, shape["vocab"], size=(b, t)).astype("int32")
    segment_ids = np.zeros((b, t), "int32")
    segment_ids[:, t // 2:] = 1
    labels = rng.integers(0, 2, size=(b,)).astype("int32")
    return token_ids, segment_ids, labels


def keras_encoder(library, shape, workload):
    """``(inputs, sequence, pooled, feed)`` for bertkit or keras-hub at ``shape``.

    bertkit's training model is what ``with_pool=True`` gives a classifier: its last
    block runs on ``[CLS]`` only (``cls_only_last_layer``), so ``sequence`` there is
    ``[B, 1, H]``; inference keeps the whole sequence.
    """
    if library == "bertkit":
        from bertkit.models import build_transformer_model

        builder = build_transformer_model(
            vocab_size=shape["vocab"], hidden_size=shape["hidden"],
            num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
            intermediate_size=shape["intermediate"], type_vocab_size=2,
            with_pool=True, cls_only_last_layer=workload == "train",
            return_keras_model=False)
        model = builder.model
        sequence = builder.layer("Pooler").input
        return model.inputs, sequence, model.output, lambda tok, seg: [tok, seg]
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=shape["vocab"], num_layers=shape["layers"],
        num_heads=shape["heads"], hidden_dim=shape["hidden"],
        intermediate_dim=shape["intermediate"], max_sequence_length=512)
    out = backbone.output
    feed = lambda tok, seg: {"token_ids": tok, "segment_ids": seg,  # noqa: E731
                             "padding_mask": (tok != 0).astype("int32")}
    return backbone.inputs, out["sequence_output"], out["pooled_output"], feed


def keras_step(library, xla, policy, shape, workload, bf16_weights=False):
    """A zero-argument function running one inference batch or one training step;
    ``bf16_weights`` predicts with bertkit's serving twin of the model."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
    inputs, sequence, pooled, feed = keras_encoder(library, shape, workload)
    token_ids, segment_ids, labels = random_batch(shape)
    x = feed(token_ids, segment_ids)
    if workload == "infer":
        model = keras.Model(inputs, [sequence, pooled])
        if bf16_weights:
            from bertkit.export import serving_twin
            model = serving_twin(model)
        model.compile(jit_compile=xla)
        return lambda: model.predict_on_batch(x)
    logits = keras.layers.Dense(2, dtype="float32", name="Classifier")(
        keras.layers.Dropout(0.1)(pooled))
    model = keras.Model(inputs, logits)
    if library == "bertkit":  # what bertkit's examples fine-tune with (fused Adam step)
        from bertkit.optimizers import fine_tuning_optimizer
        optimizer = fine_tuning_optimizer(2e-5, total_steps=100_000, warmup_steps=1)
    else:  # keras-hub's fine-tuning guides compile with Keras's AdamW
        optimizer = keras.optimizers.AdamW(2e-5, weight_decay=0.01)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=xla)
    return lambda: model.train_on_batch(x, labels)


def torch_step(policy, shape, workload, bf16_weights=False):
    """One Hugging Face ``BertModel`` inference batch or fine-tuning step;
    ``bf16_weights`` converts the model to bfloat16 instead of autocasting."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"], type_vocab_size=2)
    model = transformers.BertModel(config)
    token_ids, segment_ids, labels = (torch.from_numpy(a).long() for a in random_batch(shape))
    feed = dict(input_ids=token_ids, token_type_ids=segment_ids,
                attention_mask=(token_ids != 0).long())
    autocast = torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=policy == "bfloat16" and not bf16_weights)
    if bf16_weights:
        model = model.to(torch.bfloat16)
    if workload == "infer":
        model.eval()

        def infer():
            with torch.inference_mode(), autocast:
                return model(**feed)
        return infer
    head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(shape["hidden"], 2))
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
    model.train()

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = head(model(**feed).pooler_output)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return loss.item()
    return train


def matmul_probe(library, products, dtype="float32"):
    """A function timing each distinct matmul once; returns ``{key: GFLOP/s}``.

    ``dtype`` ``'bfloat16'`` multiplies bfloat16 matrices (on the CPU's bf16 units where
    it has them), the limit of the bf16 rows.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = sorted({(batch, m, k, n) for batch, m, k, n, _ in products})
    if library == "torch":
        import torch

        def tensor(shape):
            array = torch.from_numpy(rng.standard_normal(shape, "float32"))
            return array.to(torch.bfloat16) if dtype == "bfloat16" else array

        pairs = {s: (tensor((s[0], s[1], s[2])), tensor((s[0], s[2], s[3]))) for s in shapes}
        run = lambda a, b: torch.matmul(a, b)  # noqa: E731
    else:
        import tensorflow as tf

        def tensor(shape):
            return tf.cast(tf.constant(rng.standard_normal(shape, "float32")), dtype)

        pairs = {s: (tensor((s[0], s[1], s[2])), tensor((s[0], s[2], s[3]))) for s in shapes}
        run = lambda a, b: tf.matmul(a, b).numpy()  # noqa: E731

    def probe():
        rates = {}
        for s, (a, b) in pairs.items():
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                run(a, b)
                best = min(best, time.perf_counter() - start)
            rates[json.dumps(s)] = 2.0 * s[0] * s[1] * s[2] * s[3] / best / 1e9
        return rates
    return probe


def worker(args):
    """Builds one implementation, warms it up, then measures on each ``run`` line."""
    sys.path.insert(0, str(ROOT))
    shape = SHAPES[args.shape]
    start = time.perf_counter()
    if args.worker.startswith("matmul-"):
        library = args.worker.split("-")[1]
        dtype = "bfloat16" if "-bf16" in args.worker else "float32"
        probe = matmul_probe(library, workload_matmuls(shape, args.workload), dtype)
        probe()
        reply(ready=True, warmup_s=time.perf_counter() - start)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            reply(rates=probe())
        return
    library, xla, policy = IMPLS[args.worker]
    if library == "bertkit":  # first, as a user's script: it turns on oneDNN's kernels
        import bertkit  # noqa: F401
    if library == "torch":
        step = torch_step(policy, shape, args.workload, args.worker in BF16_WEIGHTS)
    else:
        step = keras_step(library, xla, policy, shape, args.workload,
                          args.worker in BF16_WEIGHTS)
    for _ in range(args.warmup):
        step()
    warmup = time.perf_counter() - start
    release_memory()
    reply(ready=True, warmup_s=warmup)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        count, elapsed = timed(step, args.min_time, args.min_steps)
        release_memory()
        reply(seqs_per_s=count * shape["batch"] / elapsed, steps=count)


# -- the varying-length demonstration ---------------------------------------------------

def retrace_worker(args):
    """XLA training on batches of varying lengths: traces and compilations after warm-up.

    XLA compiles one executable per input shape. Warm-up feeds one batch at each
    bucket length; then ``--retrace-steps`` batches of random lengths follow, either
    as they are (``raw``) or padded up to their bucket (``bucketed``).
    """
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import keras
    from bertkit.data import DEFAULT_LENGTH_BUCKETS, pad_to_bucket

    shape = SHAPES[args.shape]
    compile_log = open(os.environ["BENCH_LOG"])  # this process's own stderr
    traces = []

    def loss(y_true, y_pred):  # Python code runs once per trace
        traces.append(1)
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    inputs, _, pooled, feed = keras_encoder("bertkit", shape, "train")
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    model.compile(optimizer=keras.optimizers.AdamW(2e-5), loss=loss, jit_compile=True)
    token_ids, segment_ids, labels = random_batch(shape)
    buckets = [b for b in DEFAULT_LENGTH_BUCKETS if b <= shape["seq"]]
    rng = np.random.default_rng(1)
    lengths = rng.integers(8, shape["seq"] + 1, size=args.retrace_steps)

    def step(length):
        tok, seg = token_ids[:, :length].copy(), segment_ids[:, :length]
        tok[:, length - 1:] = 0  # [SEP]-free tail; real lengths vary inside the batch too
        if args.mode == "bucketed":
            tok, seg = pad_to_bucket([tok, seg], buckets)
        model.train_on_batch(feed(tok, seg), labels)
        return tok.shape[1]

    def compilations():
        compile_log.seek(0)
        return sum("Compilation of XLA executable" in line for line in compile_log)

    for length in buckets:
        step(length)
    warm = {"traces": len(traces), "compilations": compilations()}
    start = time.perf_counter()
    padded = sum(step(int(length)) for length in lengths)
    reply(mode=args.mode, steps=len(lengths), seconds=time.perf_counter() - start,
          warmup_traces=warm["traces"], warmup_compilations=warm["compilations"],
          traces_after=len(traces) - warm["traces"],
          compilations_after=compilations() - warm["compilations"],
          padding_overhead=padded / float(lengths.sum()) - 1.0)


# -- the driver -----------------------------------------------------------------------

class Worker:
    """A worker process, spoken to by lines on stdin and ``@@bench`` JSON on stdout."""

    def __init__(self, name, args, shape, workload, extra=(), env=None, label=None):
        self.name = name
        log_path = Path(args.log_dir) / f"{shape}-{workload}-{label or name}.log"
        self.log = open(log_path, "w+")
        command = [sys.executable, os.path.abspath(__file__), "--worker", name,
                   "--shape", shape, "--workload", workload,
                   "--min-time", str(args.min_time), "--min-steps", str(args.min_steps),
                   "--warmup", str(args.warmup), *extra]
        worker_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", BENCH_LOG=str(log_path))
        worker_env.update(env or {})
        if name.endswith("-frozen"):  # read by TensorFlow when it first runs a matmul
            worker_env.update(FROZEN_ENV)
        for suffix, kernel_env in KERNEL_ENVS.items():  # read by TensorFlow when it loads
            if name.endswith(suffix):
                worker_env.update(kernel_env)
        if name.endswith("+onednn"):  # read by XLA when it first compiles
            worker_env["XLA_FLAGS"] = (worker_env.get("XLA_FLAGS", "")
                                       + " --xla_cpu_use_onednn=true").strip()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=worker_env)

    def read(self):
        for line in self.process.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        self.log.seek(0)
        tail = "".join(self.log.readlines()[-15:])
        raise RuntimeError(f"worker {self.name} exited ({self.process.wait()}):\n{tail}")

    def run(self):
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self.read()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        self.log.close()


def check_memory(args):
    """Stops the run, rather than let the kernel kill a process, when memory runs low."""
    available = available_gb()
    if available is not None and available < args.min_available_gb:
        raise SystemExit(f"only {available:.1f} GiB of memory available (--min-available-gb "
                         f"{args.min_available_gb:g}); measure fewer --impls at a time")


def measure_group(args, shape, workload, impls):
    """Interleaved repeats of every implementation plus the matmul probes."""
    precisions = {"float32"} | {"bfloat16" for name in impls
                                if IMPLS[name][2] in ("mixed_bfloat16", "bfloat16")}
    probes = [name for precision in sorted(precisions) for name in MATMUL_WORKERS[precision]
              if not (name.endswith("-onednn") and onednn_by_default())]
    names = impls + [name for name in probes if "torch" not in name
                     or importlib.util.find_spec("torch") is not None]
    workers, results = [], {name: [] for name in names}
    try:
        for name in names:  # one at a time, so that warm-ups do not overlap
            check_memory(args)
            workers.append(Worker(name, args, shape, workload))
            ready = workers[-1].read()
            results[name + ":warmup"] = ready["warmup_s"]
            print(f"  {shape}/{workload}: {name} ready after {ready['warmup_s']:.0f} s",
                  flush=True)
        for repeat in range(args.repeats):
            order = workers[repeat % len(workers):] + workers[:repeat % len(workers)]
            for w in order:
                time.sleep(0.3)  # let the previous worker's spinning threads go idle
                check_memory(args)
                results[w.name].append(w.run())
    finally:
        for w in workers:
            w.close()
    return results


def matmul_limit(results, products, precision="float32"):
    """GFLOP/s if every matmul ran at the best rate measured for its shape in
    ``precision`` (``(nan, nan)`` when that precision was not probed)."""
    best = {}
    for name in MATMUL_WORKERS[precision]:
        for sample in results.get(name, []):
            for key, rate in sample["rates"].items():
                best[key] = max(best.get(key, 0.0), rate)
    if not best:
        return float("nan"), float("nan")
    seconds = sum(2.0 * b * m * k * n * c / (best[json.dumps([b, m, k, n])] * 1e9)
                  for b, m, k, n, c in products)
    return flops(products) / seconds / 1e9, max(best.values())


def summarize(shape_name, workload, impls, results):
    shape = SHAPES[shape_name]
    products = workload_matmuls(shape, workload)
    limits = {precision: matmul_limit(results, products, precision)
              for precision in MATMUL_WORKERS}
    limit, peak = limits["float32"]
    gflop_per_seq = flops(products) / shape["batch"] / 1e9
    rows = []
    for name in impls:
        rates = [r["seqs_per_s"] for r in results[name]]
        rows.append(dict(
            impl=name, median=statistics.median(rates), low=min(rates), high=max(rates),
            gflops=statistics.median(rates) * gflop_per_seq,
            rss=max(r["peak_rss_mb"] for r in results[name]),
            warmup=results[name + ":warmup"], precision=IMPLS[name][2]))
    peers = [r for r in rows if IMPLS[r["impl"]][0] != "bertkit"]
    for row in rows:
        own = "float32" if row["precision"] == "float32" else "bfloat16"
        row["fraction"] = row["gflops"] / limits[own][0]
        # The fastest peer of the same precision (fp32 ones when there is none).
        fp32 = row["precision"] == "float32"
        same = [p["median"] for p in peers if (p["precision"] == "float32") == fp32]
        rivals = same or [p["median"] for p in peers if p["precision"] == "float32"]
        row["vs_peer"] = row["median"] / max(rivals) if rivals else float("nan")
        # A mixed-precision row against the same library's fp32 row of the same mode.
        library, xla, _ = IMPLS[row["impl"]]
        own = [r["median"] for r in rows if IMPLS[r["impl"]] == (library, xla, "float32")
               and variant(r["impl"]) == variant(row["impl"])]
        row["vs_fp32"] = row["median"] / own[0] if own and not fp32 else float("nan")
    bf16_limit, bf16_peak = limits["bfloat16"]
    return dict(shape=shape_name, workload=workload, limit=limit, peak=peak,
                bf16_limit=bf16_limit, bf16_peak=bf16_peak,
                gflop_per_seq=gflop_per_seq, rows=rows)


def print_table(summary):
    s = summary
    bf16 = ("" if s["bf16_limit"] != s["bf16_limit"] else  # NaN: bf16 not probed
            f"; bf16 limit {s['bf16_limit']:.0f}, best single bf16 matmul {s['bf16_peak']:.0f}")
    print(f"\n{s['shape']} {s['workload']} ({s['gflop_per_seq']:.2f} GFLOP per sequence; "
          f"fp32 matmul limit {s['limit']:.0f} GFLOP/s, best single matmul {s['peak']:.0f}"
          f"{bf16}; 'of limit' is against the row's own precision)")
    width = max(18, *(len(r["impl"]) for r in s["rows"]))
    header = (f"| {'implementation':<{width}} | {'seq/s':>7} | {'min-max':>13} | {'x peer':>6} "
              f"| {'x fp32':>6} "
              f"| {'GFLOP/s':>7} | {'of limit':>8} | {'peak RSS':>8} | {'warm-up':>7} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in s["rows"]:
        ratio = "-" if r["vs_peer"] != r["vs_peer"] else f"{r['vs_peer']:.2f}"  # NaN: no peer
        vs_fp32 = "-" if r["vs_fp32"] != r["vs_fp32"] else f"{r['vs_fp32']:.2f}"
        print(f"| {r['impl']:<{width}} | {r['median']:>7.2f} | {r['low']:>6.2f}-{r['high']:<6.2f} "
              f"| {ratio:>6} | {vs_fp32:>6} | {r['gflops']:>7.1f} | {r['fraction']:>8.0%} "
              f"| {r['rss']:>5.0f} MB | {r['warmup']:>5.0f} s |")


def run_retrace_demo(args):
    print(f"\nVarying lengths, bertkit-xla training, {args.retrace_shape} shape, "
          f"{args.retrace_steps} batches of random lengths after one warm-up batch per bucket:")
    for mode in ("raw", "bucketed"):
        env = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_compiler=1"}
        w = Worker("retrace", args, args.retrace_shape, "train", label=f"retrace-{mode}",
                   extra=["--mode", mode, "--retrace-steps", str(args.retrace_steps)], env=env)
        try:
            r = w.read()
        finally:
            w.close()
        print(f"  {mode:>8}: traces after warm-up {r['traces_after']}, XLA compilations "
              f"after warm-up {r['compilations_after']} "
              f"(warm-up: {r['warmup_traces']} traces, {r['warmup_compilations']} "
              f"compilations); {r['seconds']:.1f} s for the {r['steps']} batches; "
              f"padding adds {r['padding_overhead']:.0%} tokens")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="base,small")
    parser.add_argument("--workloads", default="infer,train")
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                        help=f"comma-separated, or 'all'; known: {', '.join(IMPLS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=3.0,
                        help="seconds of steps per repeat (at least --min-steps steps)")
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="steps before timing")
    parser.add_argument("--retrace-steps", type=int, default=16)
    parser.add_argument("--retrace-shape", default="small")
    parser.add_argument("--no-retrace", action="store_true")
    parser.add_argument("--json", help="also write the summaries to this file")
    parser.add_argument("--min-available-gb", type=float, default=7.0,
                        help="stop before starting or running a worker with less free memory")
    parser.add_argument("--log-dir", default=None, help="worker logs (default: a temp dir)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "retrace":
        return retrace_worker(args)
    if args.worker:
        return worker(args)

    import tempfile

    impls = list(IMPLS) if args.impls == "all" else args.impls.split(",")
    unknown = [name for name in impls if name not in IMPLS]
    if unknown:
        parser.error(f"unknown --impls {unknown}; known: {', '.join(IMPLS)}")
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="bench_model_")
    os.makedirs(args.log_dir, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{args.repeats} interleaved repeats of >= {args.min_time:g} s; logs in {args.log_dir}",
          flush=True)
    print(describe_bf16_support(), flush=True)
    print(describe_kernels(), flush=True)
    summaries = []
    for shape in args.shapes.split(","):
        for workload in args.workloads.split(","):
            # Frozen or bf16-stored weights are for serving: a training step refuses them.
            group = [name for name in impls if workload == "infer" or not inference_only(name)]
            if not group:
                continue
            results = measure_group(args, shape, workload, group)
            summaries.append(summarize(shape, workload, group, results))
            print_table(summaries[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=1))
    if not args.no_retrace:
        run_retrace_demo(args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return summaries


if __name__ == "__main__":
    main()
