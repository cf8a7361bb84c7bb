"""Serving speed: a bertkit classifier in Keras, as a SavedModel, in onnxruntime and in
OpenVINO, against keras-hub's Keras ``predict``, same run.

For each model shape (BERT-base and the small 4-layer / 256 model, random weights), a
sentence classifier (``[CLS]`` pooling, 2 classes) is built and exported once with
``bertkit.export.export_model``; the ONNX file is also quantized to int8 by
onnxruntime's dynamic quantization, and the OpenVINO IR to int8 by NNCF's post-training
quantization (when ``nncf`` is installed). Then each implementation runs in its own
worker process, 2 threads, measured in turn (A B C A B C ...) so that a change in the
machine's load hits them alike; the table shows medians over the repeats:

- ``keras``, ``keras-bf16``: bertkit's model, ``model.predict`` (``mixed_bfloat16``);
- ``saved_model``, ``saved_model-bf16``: the exported ``serving_default`` called from
  TensorFlow (the bf16 one exported from the ``mixed_bfloat16`` model);
  ``saved_model-bf16-frozen`` the same in a process with
  ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1``, as a serving process can run it (each weight
  packed once for oneDNN's matrix-unit kernels);
- ``onnxruntime``, ``onnxruntime-int8``; ``onnxruntime-int8-7bit`` (only when asked for, and
  always in the accuracy table) quantized with ``reduce_range=True``, 7-bit weights and
  activations, which onnxruntime advises on CPUs without VNNI: their int8 kernels add pairs of
  8-bit products in 16 bits, which full-range values can overflow;
- ``openvino``, ``openvino-bf16``, ``openvino-int8``: OpenVINO's CPU plugin with the
  inference precision f32 or bf16 (its default on CPUs with AMX or AVX-512 bf16), and the
  NNCF-quantized IR;
- ``keras-hub``, ``keras-hub-bf16``: keras-hub's ``BertTextClassifier`` backbone + a dense
  layer, ``model.predict`` (the peer);
- ``saved_model-onednn`` (only when asked for): the SavedModel in a TensorFlow process with
  ``TF_ENABLE_ONEDNN_OPTS=1``, what a serving process that does not import bertkit must set
  on CPUs where TensorFlow leaves its oneDNN kernels off (no AVX512_VNNI, AVX512_BF16 or AMX).

With ``--sentiment-run DIR`` (the ``--output-dir`` of a finished
``task_sentiment_classification.py`` run) and ``--data-dir``, the run's classifier is
exported and every runtime's accuracy on the test split is reported beside Keras fp32's,
with how many predictions changed and the largest change of a probability.

Peers and runtimes live in the benchmark virtualenv (``benchmarks/README.md``); bertkit
is imported from this checkout:

    python benchmarks/bench_export.py --shapes small,base --repeats 3
    python benchmarks/bench_export.py --shapes small --sentiment-run outputs/sentiment \\
        --data-dir ../shared/data/sentiment
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
from _common import cpu_flags, cpu_name  # noqa: E402  (benchmarks/_common.py)
TAG = "@@bench "
THREADS = 2

SHAPES = {
    "base": dict(layers=12, hidden=768, heads=12, intermediate=3072, vocab=21128,
                 batch=16, seq=128),
    "small": dict(layers=4, hidden=256, heads=4, intermediate=1024, vocab=21128,
                  batch=32, seq=128),
    "tiny": dict(layers=1, hidden=32, heads=2, intermediate=64, vocab=21128,  # a smoke test
                 batch=4, seq=16),
}
IMPLS = ["keras", "keras-bf16", "saved_model", "saved_model-bf16", "saved_model-bf16-frozen",
         "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8",
         "keras-hub", "keras-hub-bf16"]
# Asked for by name only: the SavedModel in a TensorFlow process with TF_ENABLE_ONEDNN_OPTS=1,
# which differs from "saved_model" only on CPUs where TensorFlow leaves oneDNN off by default.
OPTIONAL_IMPLS = ["saved_model-onednn", "onnxruntime-int8-7bit"]



def matrix_units():
    """The CPU's bf16 and int8 matmul flags, sorted."""
    return sorted(cpu_flags() & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"})


def random_batch(shape, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    b, t = shape["batch"], shape["seq"]
    tokens = rng.integers(1, shape["vocab"], size=(b, t)).astype("int32")
    segments = np.zeros((b, t), "int32")
    segments[:, t // 2:] = 1
    return tokens, segments


# -- preparing the models (in a process of their own) ------------------------------------


def bertkit_classifier(shape, policy=None):
    import keras

    from bertkit.models import build_transformer_model
    from bertkit.tasks.classification import ClassificationHead

    encoder = build_transformer_model(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"], type_vocab_size=2, dtype=policy)
    keras.utils.set_random_seed(0)
    return ClassificationHead(2, name="Classifier", dtype=policy).attach(encoder)


def quantize_onnx(source, target, reduce_range=False):
    """onnxruntime's dynamic int8 quantization (weights int8, activations per batch);
    ``reduce_range`` keeps both to 7 bits, the setting for CPUs without VNNI."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=reduce_range)


ONNX_FILES = {"onnxruntime": os.path.join("fp32", "model.onnx"),
              "onnxruntime-int8": "model.int8.onnx",
              "onnxruntime-int8-7bit": "model.int8-7bit.onnx"}


def quantize_onnx_variants(directory):
    """Writes both int8 variants of ``directory``'s fp32 ONNX file."""
    source = os.path.join(directory, ONNX_FILES["onnxruntime"])
    quantize_onnx(source, os.path.join(directory, ONNX_FILES["onnxruntime-int8"]))
    quantize_onnx(source, os.path.join(directory, ONNX_FILES["onnxruntime-int8-7bit"]),
                  reduce_range=True)


def quantize_openvino(source, target, shape):
    """NNCF's post-training int8 quantization of the IR, calibrated on random batches of
    the shape (speed only; ``--sentiment-run`` calibrates on real text)."""
    import nncf
    import openvino as ov

    batches = [dict(zip(("Input-Token", "Input-Segment"), random_batch(shape, seed)))
               for seed in range(8)]
    quantized = nncf.quantize(ov.Core().read_model(source), nncf.Dataset(batches),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))
    ov.save_model(quantized, target, compress_to_fp16=False)


def prepare(shape_name, directory):
    """Exports the fp32 and bf16 classifiers of the shape and the int8 variants."""
    import bertkit  # noqa: F401  (first, as a user's script: TensorFlow's oneDNN kernels on)
    import keras

    from bertkit.export import export_model

    shape = SHAPES[shape_name]
    model = bertkit_classifier(shape)
    model.save_weights(os.path.join(directory, "weights.weights.h5"))
    export_model(model, os.path.join(directory, "fp32"), outputs=model.get_layer("Classifier"))
    keras.config.set_dtype_policy("mixed_bfloat16")
    bf16 = bertkit_classifier(shape, "mixed_bfloat16")
    bf16.set_weights(model.get_weights())
    export_model(bf16, os.path.join(directory, "bf16"), outputs=bf16.get_layer("Classifier"),
                 formats=["saved_model"])
    quantize_onnx_variants(directory)
    try:
        quantize_openvino(os.path.join(directory, "fp32", "openvino", "model.xml"),
                          os.path.join(directory, "openvino.int8.xml"), shape)
    except ImportError:
        print("nncf is not installed: no openvino-int8 row", file=sys.stderr)


# -- workers ---------------------------------------------------------------------------


def runner(impl, shape, directory):
    """A function ``(tokens, segments) -> probabilities`` for the implementation."""
    import numpy as np

    if impl.startswith("keras"):
        if not impl.startswith("keras-hub"):  # first, as a user's script: oneDNN's kernels on
            import bertkit  # noqa: F401
        import keras
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        policy = "mixed_bfloat16" if impl.endswith("bf16") else "float32"
        keras.config.set_dtype_policy(policy)
        if impl.startswith("keras-hub"):
            import keras_hub

            backbone = keras_hub.models.BertBackbone(
                vocabulary_size=shape["vocab"], num_layers=shape["layers"],
                num_heads=shape["heads"], hidden_dim=shape["hidden"],
                intermediate_dim=shape["intermediate"], max_sequence_length=512)
            probs = keras.layers.Dense(2, activation="softmax", dtype="float32")(
                backbone.output["pooled_output"])
            model = keras.Model(backbone.inputs, probs)
            return lambda tok, seg: model.predict(
                {"token_ids": tok, "segment_ids": seg,
                 "padding_mask": (tok != 0).astype("int32")}, batch_size=len(tok), verbose=0)
        model = bertkit_classifier(shape, policy)
        model.load_weights(os.path.join(directory, "weights.weights.h5"))
        return lambda tok, seg: model.predict([tok, seg], batch_size=len(tok), verbose=0)
    if impl.startswith("saved_model"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        kind = "bf16" if "-bf16" in impl else "fp32"
        serve = tf.saved_model.load(os.path.join(directory, kind, "saved_model")) \
            .signatures["serving_default"]
        return lambda tok, seg: serve(**{"Input-Token": tf.constant(tok), "Input-Segment":
                                         tf.constant(seg)})["probabilities"].numpy()
    if impl.startswith("onnxruntime"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        path = os.path.join(directory, ONNX_FILES[impl])
        session = onnxruntime.InferenceSession(path, options,
                                               providers=["CPUExecutionProvider"])
        index = [o.name for o in session.get_outputs()].index("probabilities")
        return lambda tok, seg: session.run(None, {"Input-Token": tok,
                                                   "Input-Segment": seg})[index]
    if impl.startswith("openvino"):
        import openvino as ov

        core = ov.Core()
        path = os.path.join(directory, "openvino.int8.xml") if impl.endswith("int8") \
            else os.path.join(directory, "fp32", "openvino", "model.xml")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} was not made (is nncf installed?)")
        precision = "bf16" if impl.endswith("bf16") else "f32"
        config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"}
        if not impl.endswith("int8"):
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = core.compile_model(path, "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.output("probabilities")

        def run(tok, seg):
            return np.array(request.infer({"Input-Token": tok, "Input-Segment": seg})[output])
        return run
    raise ValueError(f"unknown implementation {impl!r}")


def worker(args):
    """Loads one implementation, then answers ``run`` lines with a timed measurement and
    ``predict FILE`` lines with the test split's predictions."""
    import numpy as np

    shape = SHAPES[args.shape]
    run = runner(args.worker, shape, args.directory)
    tokens, segments = random_batch(shape)
    for _ in range(args.warmup):
        run(tokens, segments)
    print(TAG + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            count, start = 0, time.perf_counter()
            while count < 2 or time.perf_counter() - start < args.min_time:
                run(tokens, segments)
                count += 1
            elapsed = time.perf_counter() - start
            print(TAG + json.dumps({"seq_per_s": count * shape["batch"] / elapsed}), flush=True)
        elif command[0] == "predict":
            data = np.load(command[1])
            probabilities = []
            for start in range(0, len(data["tokens"]), shape["batch"]):
                tok = data["tokens"][start:start + shape["batch"]]
                seg = data["segments"][start:start + shape["batch"]]
                probabilities.extend(np.asarray(run(tok, seg), "float64").tolist())
            print(TAG + json.dumps({"probabilities": probabilities}), flush=True)


class Worker:
    def __init__(self, impl, args, shape_name, directory):
        self.impl = impl
        self.log = open(Path(directory) / f"{impl}.log", "w+")
        command = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--shape",
                   shape_name, "--directory", directory, "--min-time", str(args.min_time),
                   "--warmup", str(args.warmup)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(THREADS))
        if impl.endswith("-frozen"):  # read by TensorFlow when it first runs a matmul
            env["TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"] = "1"
        if impl.endswith("-onednn"):  # read by TensorFlow when it loads
            env["TF_ENABLE_ONEDNN_OPTS"] = "1"
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=env)

    def read(self):
        for line in self.process.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        self.log.seek(0)
        tail = "".join(self.log.readlines()[-12:])
        raise RuntimeError(f"worker {self.impl} exited ({self.process.wait()}):\n{tail}")

    def ask(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        self.log.close()


def measure(args, shape_name, directory):
    """Median sequences/s of each implementation, measured in turn; one at a time alive
    would be fairer to memory, but interleaving is what keeps the ratios honest."""
    results = {}
    workers = []
    for impl in args.impls:
        try:
            w = Worker(impl, args, shape_name, directory)
            w.read()  # ready
            workers.append(w)
        except RuntimeError as error:
            print(f"  {impl}: skipped ({str(error).splitlines()[-1]})")
    try:
        for repeat in range(args.repeats):
            for w in workers:
                results.setdefault(w.impl, []).append(w.ask("run")["seq_per_s"])
    finally:
        for w in workers:
            w.close()
    return {impl: statistics.median(values) for impl, values in results.items()}


def print_table(shape_name, speeds):
    peer = speeds.get("keras-hub")
    fastest = max(speeds, key=speeds.get)
    shape = SHAPES[shape_name]
    print(f"\n{shape_name}: {shape['layers']} layers, hidden {shape['hidden']}, batch "
          f"{shape['batch']} x {shape['seq']} tokens, {THREADS} threads")
    print("| implementation | seq/s | x keras fp32 | x keras-hub fp32 |")
    print("| --- | --- | --- | --- |")
    for impl in IMPLS + OPTIONAL_IMPLS:
        if impl in speeds:
            ratio = speeds[impl] / speeds["keras"] if "keras" in speeds else float("nan")
            vs_peer = speeds[impl] / peer if peer else float("nan")
            mark = " (fastest)" if impl == fastest else ""
            print(f"| {impl}{mark} | {speeds[impl]:.1f} | {ratio:.2f} | {vs_peer:.2f} |")


# -- accuracy on the sentiment test split ------------------------------------------------


def sentiment_accuracy(args):
    """Exports the fine-tuned run's classifier and reports each runtime's test accuracy."""
    sys.path.insert(0, str(ROOT / "examples"))
    import numpy as np

    import task_sentiment_classification as example
    from bertkit.data import sequence_padding

    work = tempfile.mkdtemp(prefix="bench_export_sentiment_")
    ns = example.parse_args(["--output-dir", args.sentiment_run, "--predict", "x"])
    model, tokenizer = example.load_classifier(ns)
    test = example.read_labelled_lines(example.find_split(args.data_dir, "test"))
    encoded = [tokenizer.encode(text, maxlen=ns.maxlen) for text, _ in test]
    labels = np.array([label for _, label in test])
    tokens = sequence_padding([ids for ids, _ in encoded], length=ns.maxlen).astype("int32")
    segments = sequence_padding([s for _, s in encoded], length=ns.maxlen).astype("int32")
    np.savez(os.path.join(work, "test.npz"), tokens=tokens, segments=segments)
    # The runtimes load the run's weights through the same prepared layout.
    model.save_weights(os.path.join(work, "weights.weights.h5"))
    from bertkit.export import export_model
    import keras

    export_model(model, os.path.join(work, "fp32"), outputs=model.get_layer("Classifier"))
    keras.config.set_dtype_policy("mixed_bfloat16")
    bf16 = example.build_classifier(ns, model.output.shape[-1])
    bf16.set_weights(model.get_weights())
    export_model(bf16, os.path.join(work, "bf16"), outputs=bf16.get_layer("Classifier"),
                 formats=["saved_model"])
    keras.config.set_dtype_policy("float32")
    quantize_onnx_variants(work)
    try:
        import nncf
        import openvino as ov

        calibration = [{"Input-Token": tokens[i:i + 32], "Input-Segment": segments[i:i + 32]}
                       for i in range(0, min(len(tokens), 320), 32)]
        quantized = nncf.quantize(ov.Core().read_model(os.path.join(work, "fp32", "openvino",
                                                                    "model.xml")),
                                  nncf.Dataset(calibration), subset_size=len(calibration),
                                  model_type=nncf.ModelType.TRANSFORMER)
        ov.save_model(quantized, os.path.join(work, "openvino.int8.xml"),
                      compress_to_fp16=False)
    except ImportError:
        pass
    print(f"\nsentiment test split ({len(labels)} texts, maxlen {ns.maxlen}), run "
          f"{args.sentiment_run}")
    print("| implementation | accuracy | predictions changed vs keras fp32 | largest change of a "
          "probability |")
    print("| --- | --- | --- | --- |")
    impls = ["saved_model", "saved_model-bf16", "onnxruntime", "onnxruntime-int8",
             "onnxruntime-int8-7bit", "openvino", "openvino-bf16", "openvino-int8"]
    expected = model.predict([tokens, segments], batch_size=64, verbose=0)
    reference = expected.argmax(-1)
    print(f"| keras | {np.mean(reference == labels):.4f} | - | - |")
    for impl in impls:
        try:
            w = Worker(impl, argparse.Namespace(min_time=0, warmup=0), "sentiment", work)
            w.read()
            answer = w.ask(f"predict {os.path.join(work, 'test.npz')}")
            w.close()
        except RuntimeError as error:
            print(f"| {impl} | skipped: {str(error).splitlines()[-1]} | | |")
            continue
        probabilities = np.array(answer["probabilities"])
        predicted = probabilities.argmax(-1)
        print(f"| {impl} | {np.mean(predicted == labels):.4f} | "
              f"{int(np.sum(predicted != reference))} | "
              f"{np.abs(probabilities - expected).max():.4f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="small,base")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-time", type=float, default=8.0, help="seconds per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sentiment-run", help="--output-dir of a sentiment fine-tuning run")
    p.add_argument("--data-dir", help="the sentiment data (with *.test.data)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--directory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        return prepare(args.shape, args.directory)
    if args.worker:
        if args.shape == "sentiment":
            SHAPES["sentiment"] = dict(SHAPES["small"], batch=32, seq=128)
        return worker(args)
    args.impls = [i for i in args.impls.split(",") if i]
    unknown = set(args.impls) - set(IMPLS) - set(OPTIONAL_IMPLS)
    if unknown:
        p.error(f"unknown --impls {sorted(unknown)}; choose from {IMPLS + OPTIONAL_IMPLS}")
    units = " ".join(matrix_units()) or "no bf16/int8 units"
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores; {units})")
    for shape_name in [s for s in args.shapes.split(",") if s]:
        directory = tempfile.mkdtemp(prefix=f"bench_export_{shape_name}_")
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--prepare",
                               "--shape", shape_name, "--directory", directory],
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"preparing {shape_name} failed:\n{done.stderr[-3000:]}")
        print_table(shape_name, measure(args, shape_name, directory))
    if args.sentiment_run:
        sentiment_accuracy(args)


if __name__ == "__main__":
    main()
