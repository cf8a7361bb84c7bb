"""Shared test fixtures: real data location, tiny Google-format checkpoints, round trips.

The checkpoint writer here is deliberately independent of ``bertkit.checkpoints``: it
lays out Google's variable names and shapes itself and saves them with
``tf.compat.v1.train.Saver``, exactly as Google's TF1 code does, so that loading is
tested against the format rather than against bertkit's own writer.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bertkit before any test imports TensorFlow, as in the examples (see bertkit._onednn),
# without TensorFlow's native start-up lines.
sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
import quiet  # noqa: E402,F401

TINY_CONFIG = {
    "vocab_size": 40,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 24,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}


# Runs in a process where bertkit is not importable; writes each format's outputs.
# OpenVINO runs in f32, so that the comparison is not blurred by the bf16 it picks on
# CPUs with the units.
READER = r"""
import os
import sys
sys.modules["bertkit"] = None  # any import of bertkit now fails
import numpy as np
directory, inputs_file, result_file = sys.argv[1:]
inputs = dict(np.load(inputs_file))
results = {}
if os.path.isdir(directory + "/saved_model"):
    import tensorflow as tf
    serve = tf.saved_model.load(directory + "/saved_model").signatures["serving_default"]
    for name, value in serve(**{k: tf.constant(v) for k, v in inputs.items()}).items():
        results["saved_model/" + name] = value.numpy()
for fmt, file in (("onnx", "/model.onnx"), ("onnx-int8", "/model.int8.onnx")):
    if os.path.isfile(directory + file):
        import onnxruntime
        session = onnxruntime.InferenceSession(directory + file)
        names = [o.name for o in session.get_outputs()]
        for name, value in zip(names, session.run(None, inputs)):
            results[fmt + "/" + name] = value
if os.path.isfile(directory + "/openvino/model.xml"):
    import openvino
    compiled = openvino.Core().compile_model(directory + "/openvino/model.xml", "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    answer = compiled(inputs)
    for output in compiled.outputs:
        results["openvino/" + output.get_any_name()] = answer[output]
np.savez(result_file, **results)
"""


def read_export(tmp_path, directory, inputs):
    """``{format: {output: array}}`` as a process without bertkit reads the export."""
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    done = subprocess.run([sys.executable, str(script), str(directory),
                           str(tmp_path / "inputs.npz"), str(tmp_path / "results.npz")],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for key, value in np.load(tmp_path / "results.npz").items():
        fmt, name = key.split("/", 1)
        results.setdefault(fmt, {})[name] = value
    return results


def shared_data_dir():
    """``$BERTKIT_SHARED_DATA`` or ``<repo>/../shared/data``; None when absent."""
    path = os.environ.get("BERTKIT_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
    return path if os.path.isdir(path) else None


@pytest.fixture
def shared_data():
    """The shared real-data directory, or skip the test with the reason."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data not found: set BERTKIT_SHARED_DATA or place ../shared/data")
    return path


def google_variable_shapes(config, albert=False):
    """Google's variable names and shapes for a BERT or ALBERT config, all heads included."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    e = config.get("embedding_size") or h
    shapes = {
        "bert/embeddings/word_embeddings": (v, e),
        "bert/embeddings/token_type_embeddings": (config["type_vocab_size"], e),
        "bert/embeddings/position_embeddings": (config["max_position_embeddings"], e),
        "bert/embeddings/LayerNorm/gamma": (e,),
        "bert/embeddings/LayerNorm/beta": (e,),
        "bert/pooler/dense/kernel": (h, h),
        "bert/pooler/dense/bias": (h,),
        "cls/predictions/transform/dense/kernel": (h, e),
        "cls/predictions/transform/dense/bias": (e,),
        "cls/predictions/transform/LayerNorm/gamma": (e,),
        "cls/predictions/transform/LayerNorm/beta": (e,),
        "cls/predictions/output_bias": (v,),
        "cls/seq_relationship/output_weights": (2, h),
        "cls/seq_relationship/output_bias": (2,),
    }

    def block(prefix, attention, ffn_in, ffn_out, norm1, norm2):
        for piece in ("query", "key", "value"):
            shapes[f"{prefix}{attention}/self/{piece}/kernel"] = (h, h)
            shapes[f"{prefix}{attention}/self/{piece}/bias"] = (h,)
        shapes[f"{prefix}{attention}/output/dense/kernel"] = (h, h)
        shapes[f"{prefix}{attention}/output/dense/bias"] = (h,)
        shapes[f"{prefix}{norm1}/gamma"] = (h,)
        shapes[f"{prefix}{norm1}/beta"] = (h,)
        shapes[f"{prefix}{ffn_in}/kernel"] = (h, i)
        shapes[f"{prefix}{ffn_in}/bias"] = (i,)
        shapes[f"{prefix}{ffn_out}/kernel"] = (i, h)
        shapes[f"{prefix}{ffn_out}/bias"] = (h,)
        shapes[f"{prefix}{norm2}/gamma"] = (h,)
        shapes[f"{prefix}{norm2}/beta"] = (h,)

    if albert:
        shapes["bert/encoder/embedding_hidden_mapping_in/kernel"] = (e, h)
        shapes["bert/encoder/embedding_hidden_mapping_in/bias"] = (h,)
        block("bert/encoder/transformer/group_0/inner_group_0/", "attention_1",
              "ffn_1/intermediate/dense", "ffn_1/intermediate/output/dense",
              "LayerNorm", "LayerNorm_1")
    else:
        for layer in range(config["num_hidden_layers"]):
            block(f"bert/encoder/layer_{layer}/", "attention", "intermediate/dense",
                  "output/dense", "attention/output/LayerNorm", "output/LayerNorm")
    return shapes


def random_google_weights(config, albert=False, seed=0):
    """Random float32 values under Google's names (gammas near 1, visible biases)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in google_variable_shapes(config, albert).items():
        scale = 0.2 if name.endswith(("kernel", "embeddings", "output_weights")) else 0.1
        value = rng.normal(0.0, scale, size=shape)
        if name.endswith("gamma"):
            value += 1.0
        weights[name] = value.astype("float32")
    return weights


def write_google_checkpoint(directory, config, weights, extra=None):
    """Writes ``bert_config.json`` and ``bert_model.ckpt.*`` as Google's TF1 code does."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        json.dump(config, f)
    values = dict(weights, **(extra or {}))
    prefix = os.path.join(directory, "bert_model.ckpt")
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(tf.constant(value), name=name)
                     for name, value in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)
    return prefix


@pytest.fixture
def tiny_bert(tmp_path):
    """``(config dict, weights dict, checkpoint prefix)`` of a tiny Google BERT."""
    weights = random_google_weights(TINY_CONFIG, seed=1)
    # Adam slots and the step counter, as a real pretraining checkpoint carries them.
    extra = {"bert/embeddings/word_embeddings/adam_m": np.zeros((40, 32), "float32"),
             "global_step": np.int64(1000)}
    prefix = write_google_checkpoint(str(tmp_path / "bert"), TINY_CONFIG, weights, extra)
    return dict(TINY_CONFIG), weights, prefix


@pytest.fixture
def tiny_albert(tmp_path):
    """``(config dict, weights dict, checkpoint prefix)`` of a tiny Google ALBERT."""
    config = dict(TINY_CONFIG, embedding_size=16, num_hidden_layers=3, hidden_act="gelu_tanh",
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    weights = random_google_weights(config, albert=True, seed=2)
    prefix = write_google_checkpoint(str(tmp_path / "albert"), config, weights)
    return config, weights, prefix


def assert_layer_round_trip(layer, inputs, **call_kwargs):
    """A layer rebuilt from its config, with the same weights, gives the same outputs."""
    import keras

    expected = keras.ops.convert_to_numpy(layer(inputs, **call_kwargs))
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    clone(inputs, **call_kwargs)  # builds the clone
    clone.set_weights(layer.get_weights())
    actual = keras.ops.convert_to_numpy(clone(inputs, **call_kwargs))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


@pytest.fixture
def global_bf16_policy():
    """Keras's global dtype policy set to ``mixed_bfloat16`` for one test, then restored."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.fixture
def demo_dir(tmp_path, monkeypatch):
    """Points the examples' demo checkpoint at a temporary directory, and makes it tinier."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
    import demo

    directory = str(tmp_path / "demo")
    monkeypatch.setattr(demo, "DEMO_DIR", directory)
    monkeypatch.setattr(demo, "DEMO_CONFIG", dict(demo.DEMO_CONFIG, hidden_size=32,
                                                   intermediate_size=64))
    return directory


# Characters of the tiny vocabulary (with [PAD] [UNK] [CLS] [SEP] [MASK]: 40 tokens).
CHARS = "好差很太了非常满意失望推荐购买不质量物流快慢喜欢一般值得还可以价格便宜贵东西"[:35]


@pytest.fixture
def checkpoint(tiny_bert, tmp_path):
    """``--config --checkpoint --vocab`` of the tiny Google BERT, with a vocabulary."""
    _, _, prefix = tiny_bert
    vocab = tmp_path / "vocab.txt"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(CHARS)
    assert len(tokens) == TINY_CONFIG["vocab_size"]
    vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    config = os.path.join(os.path.dirname(prefix), "bert_config.json")
    return {"config": config, "checkpoint": prefix, "vocab": str(vocab)}
