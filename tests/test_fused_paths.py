"""The layers' TensorFlow fast paths: the graphs oneDNN's rewrites fuse, and their numerics.

``bertkit.layers`` writes the dense layers, the layer norm and the attention scores as
the op patterns TensorFlow's oneDNN graph rewrites turn into fused kernels. The values
are checked against numpy written here; the rewrite itself is checked on the graph
TensorFlow actually ran (its partition graphs after optimisation), since a change in
either Keras or TensorFlow that breaks a pattern would otherwise only show as a slower
benchmark.
"""
import collections
import math
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context

from bertkit import layers as bk_layers
from bertkit._onednn import is_x86, onednn_enabled, onednn_runs_bfloat16
from bertkit.models import build_transformer_model


def numpy_layer_norm(x, gamma, beta, epsilon):
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + epsilon) * gamma + beta


def numpy_gelu(x, approximate=False):
    x = np.asarray(x, np.float64)
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize("shape", [(3, 5, 16), (7, 16)])
@pytest.mark.parametrize("static", [True, False])
def test_layer_norm_matches_numpy_values_and_gradients(shape, static):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    # Variance 1e-4: an epsilon raised to 1e-5 (as tf.nn.fused_batch_norm does) is off by 5%.
    x[0] = 1.0 + 1e-2 * rng.standard_normal(shape[-1])
    gamma = rng.uniform(0.5, 1.5, shape[-1]).astype("float32")
    beta = rng.normal(size=shape[-1]).astype("float32")
    weight = rng.normal(size=shape).astype("float32")
    layer = bk_layers.LayerNormalization(epsilon=1e-12)
    layer.build(shape)
    layer.set_weights([gamma, beta])
    spec = tf.TensorSpec(shape if static else [None] * len(shape), "float32")

    @tf.function(input_signature=[spec])
    def run(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs)
            loss = tf.reduce_sum(y * weight)
        return (y, *tape.gradient(loss, [inputs, layer.gamma, layer.beta]))

    y, dx, dgamma, dbeta = (t.numpy() for t in run(tf.constant(x)))
    np.testing.assert_allclose(y, numpy_layer_norm(x, gamma, beta, 1e-12), atol=2e-5)
    # Gradients of sum(w * LN(x)) from the closed form.
    x64 = x.astype(np.float64)
    centered = x64 - x64.mean(-1, keepdims=True)
    inv = 1 / np.sqrt(x64.var(-1, keepdims=True) + 1e-12)
    normed = centered * inv
    g = weight * gamma
    expected_dx = inv * (g - g.mean(-1, keepdims=True)
                         - normed * (g * normed).mean(-1, keepdims=True))
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-3, atol=1e-3 * np.abs(expected_dx).max())
    np.testing.assert_allclose(dgamma, (weight * normed).sum(axes), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta, weight.sum(axes), rtol=1e-5, atol=1e-4)


def test_layer_norm_in_bfloat16_takes_its_statistics_in_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(100.0, 0.5, (4, 6, 64)).astype("float32")  # mean far above the spread
    layer = bk_layers.LayerNormalization(epsilon=1e-12, dtype="mixed_bfloat16")
    x_bf16 = tf.cast(x, "bfloat16")
    y = layer(x_bf16)
    assert y.dtype == tf.bfloat16
    ref = numpy_layer_norm(tf.cast(x_bf16, "float32").numpy(), 1.0, 0.0, 1e-12)
    # Within bfloat16 rounding of the output (values of order 1 to 3): statistics taken in
    # bfloat16 would be off by whole units here.
    assert np.abs(tf.cast(y, "float32").numpy() - ref).max() < 0.02


def test_layer_norm_is_keras_layer_norm_in_config_and_weights():
    layer = bk_layers.LayerNormalization(epsilon=1e-12, name="Embedding-Norm")
    layer.build((None, None, 8))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["gamma", "beta"]
    keras_layer = keras.layers.LayerNormalization(epsilon=1e-12, name="Embedding-Norm")
    keras_layer.build((None, None, 8))
    assert layer.get_config() == keras_layer.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is bk_layers.LayerNormalization
    # Configurations the fused path does not cover fall back to Keras's own layer.
    x = np.random.default_rng(2).normal(size=(2, 3, 8)).astype("float32")
    no_center = bk_layers.LayerNormalization(center=False, epsilon=1e-3)
    np.testing.assert_allclose(no_center(x), numpy_layer_norm(x, 1.0, 0.0, 1e-3), atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("shape", [(2, 5, 8), (6, 8)])
def test_feed_forward_matches_numpy_at_inference_and_in_training(activation, shape):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype("float32")
    layer = bk_layers.FeedForward(12, activation=activation)
    layer.build(shape)
    w1, b1, w2, b2 = (rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights)
    layer.set_weights([w1, b1, w2, b2])
    hidden = x @ w1 + b1
    if activation == "relu":
        hidden = np.maximum(hidden, 0)
    else:
        hidden = numpy_gelu(hidden, approximate=activation == "gelu_tanh")
    expected = hidden @ w2 + b2
    for training in (False, True):
        out = tf.function(lambda t: layer(t, training=training))(tf.constant(x))
        assert out.shape == shape
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_dense_keeps_unknown_leading_axes():
    layer = bk_layers.FeedForward(4)
    layer.build((None, None, 3))
    run = tf.function(layer, input_signature=[tf.TensorSpec([None, None, 3], "float32")])
    assert run.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 3]
    assert run(tf.zeros((2, 7, 3))).shape == (2, 7, 3)


def ran_ops(function, *args):
    """Op types of the graphs TensorFlow ran for ``function(*args)``, after its rewrites."""
    context.enable_graph_collection()
    try:
        function(*args)
        metadata = context.export_run_metadata()
    finally:
        context.disable_graph_collection()
    nodes = [node for graph in metadata.partition_graphs for node in graph.node]
    fused = collections.Counter(tuple(s.decode() for s in node.attr["fused_ops"].list.s)
                                for node in nodes if node.op == "_MklNativeFusedMatMul")
    return collections.Counter(node.op for node in nodes), fused


onednn = pytest.mark.skipif(
    not onednn_enabled(),
    reason="TensorFlow's oneDNN rewrites are off (TF_ENABLE_ONEDNN_OPTS=0, or not x86)")


@onednn
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_inference_graph_runs_the_fused_kernels(policy):
    if policy != "float32" and not onednn_runs_bfloat16():
        pytest.skip("oneDNN runs no bfloat16 kernels on this CPU (TensorFlow: AVX-512 only)")
    layers = 3
    model = build_transformer_model(vocab_size=50, hidden_size=32, num_hidden_layers=layers,
                                    num_attention_heads=4, intermediate_size=64, dtype=policy)
    token_ids = np.random.default_rng(4).integers(1, 50, (2, 9))
    token_ids[1, 5:] = 0
    ops, fused = ran_ops(model.predict_on_batch, [token_ids, np.zeros_like(token_ids)])
    if not any("Mkl" in op for op in ops):
        pytest.skip("this TensorFlow build does not rewrite to oneDNN kernels")
    assert ops["_MklLayerNorm"] == 2 * layers + 1           # embeddings and two per block
    assert ops["_MklFusedBatchMatMulV2"] == layers           # scores with the mask bias
    assert fused[("BiasAdd", "GeluExact")] == layers         # feed-forward in
    if policy == "float32":
        assert fused[("BiasAdd",)] == 5 * layers             # q, k, v, output, ff out
    else:  # the same five as oneDNN's matmul, with the bias added after it
        assert fused[("BiasAdd",)] == 0
        assert ops["_MklBatchMatMulV2"] == 5 * layers + layers   # and the context product
    assert not {"Erf", "Erfc", "FusedBatchNormV3", "MatMul", "BiasAdd"} & set(ops)


KERNELS_SCRIPT = """
import json, os, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] == "tensorflow-first":
        import tensorflow
    import bertkit
from tensorflow.python.util import _pywrap_util_port
print(json.dumps(dict(switch=os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                      onednn=bool(_pywrap_util_port.IsMklEnabled()),
                      warnings=[str(w.message) for w in caught
                                if issubclass(w.category, RuntimeWarning)])))
"""


def run_kernels_script(order, switch=None):
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    if switch is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = switch
    done = subprocess.run([sys.executable, "-c", KERNELS_SCRIPT, order], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not is_x86(), reason="TensorFlow's oneDNN kernels are x86 ones")
def test_importing_bertkit_first_turns_on_onednn_and_a_users_choice_is_kept():
    first = run_kernels_script("bertkit-first")
    assert first == dict(switch="1", onednn=True, warnings=[])
    kept = run_kernels_script("bertkit-first", switch="0")
    assert kept == dict(switch="0", onednn=False, warnings=[])
    # TensorFlow loaded before bertkit decides by itself; bertkit warns only if it left
    # the kernels off (CPUs without AVX512_VNNI, AVX512_BF16 or AMX).
    late = run_kernels_script("tensorflow-first")
    assert late["switch"] is None
    if late["onednn"]:
        assert late["warnings"] == []
    else:
        assert len(late["warnings"]) == 1 and "Import bertkit before" in late["warnings"][0]
    assert run_kernels_script("tensorflow-first", switch="0")["warnings"] == []


FROZEN_WEIGHTS_SCRIPT = '''
import json, sys
import bertkit  # before Keras, as in the examples: TensorFlow's oneDNN kernels on
import keras, numpy as np
from bertkit.models import build_transformer_model
keras.mixed_precision.set_global_policy(sys.argv[1])
model = build_transformer_model(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64)
model.load_weights(sys.argv[2])
rng = np.random.default_rng(8)
outputs = []
for length in (9, 9, 6):  # two batches through one traced function, then another length
    token_ids = rng.integers(1, 50, (3, length))
    token_ids[1, length // 2:] = 0
    outputs.append(np.asarray(model.predict_on_batch([token_ids, np.zeros_like(token_ids)]),
                              np.float32).tolist())
try:
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch([token_ids, np.zeros_like(token_ids)], np.zeros((3, length, 32)))
    refused = ""
except RuntimeError as error:
    refused = str(error)
print(json.dumps({"outputs": outputs, "refused": refused}))
'''


@onednn
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_frozen_weights_predict_as_the_default_path_and_refuse_training(policy, tmp_path):
    # TF_ONEDNN_ASSUME_FROZEN_WEIGHTS is read once per process: each setting runs apart.
    if policy != "float32" and not onednn_runs_bfloat16():
        pytest.skip("oneDNN runs no bfloat16 kernels on this CPU (TensorFlow: AVX-512 only)")
    import json
    import subprocess
    import sys

    model = build_transformer_model(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64)
    weights = str(tmp_path / "model.weights.h5")
    model.save_weights(weights)
    script = tmp_path / "predict.py"
    script.write_text(FROZEN_WEIGHTS_SCRIPT)

    def run(frozen):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", ONEDNN_VERBOSE="1",
                   TF_ONEDNN_ASSUME_FROZEN_WEIGHTS="1" if frozen else "0",
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                               os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run([sys.executable, str(script), policy, weights], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = done.stdout.strip().splitlines()
        kernels = [line for line in lines if ",exec," in line and "inner_product" in line]
        return dict(json.loads(lines[-1]), kernels=kernels)

    default, frozen = run(False), run(True)
    assert default["refused"] == ""
    assert "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS" in frozen["refused"]
    # TensorFlow took the weights as constants: oneDNN's inner products ran for inference
    # (with the weights packed once), every dense layer of the encoder among them.
    assert len([k for k in frozen["kernels"] if "forward_inference" in k]) >= 3 * 6 * 2
    bound = 1e-4 if policy == "float32" else 5e-2   # bf16: other kernels, other roundings
    for got, expected in zip(frozen["outputs"], default["outputs"]):
        got, expected = np.asarray(got), np.asarray(expected)
        assert np.abs(got - expected).max() < bound * np.abs(expected).max()
    # The batches differ, so equal outputs are not one batch's result cached.
    assert not np.allclose(frozen["outputs"][0], frozen["outputs"][1])


def feed_forward_in_training(activation, policy, x, upstream, seed, units):
    """A FeedForward with random weights, run in training: its output, the gradients
    of ``sum(output * upstream)`` (input, then each weight) and the weights."""
    rng = np.random.default_rng(seed)
    layer = bk_layers.FeedForward(units, activation=activation, dtype=policy)
    layer.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights]
    layer.set_weights(weights)

    @tf.function
    def values_and_gradients(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = tf.cast(layer(inputs, training=True), "float32")
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [inputs, *layer.trainable_weights])

    y, gradients = values_and_gradients(tf.constant(x))
    return y.numpy(), [g.numpy() for g in gradients], [w.astype(np.float64) for w in weights]


def assert_gradients_close(policy, got, expected, bound):
    for name, g, e in zip(["x", "kernel 1", "bias 1", "kernel 2", "bias 2"], got, expected):
        error = np.abs(g - e).max() / np.abs(e).max()
        assert error < bound, f"{policy} gradient of {name}: relative error {error:.2e}"


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_feed_forward_gradients_match_numpy_and_sum_the_bias_gradient_in_float32(policy):
    # 2,048 rows, as in a BERT-base batch: a bias gradient summed in bfloat16 (as
    # TensorFlow's BiasAddGrad sums it) is off by several percent there.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 128, 8)).astype("float32")
    upstream = rng.normal(1.0, 1.0, size=(16, 128, 8)).astype("float32")
    _, got, (w1, b1, w2, _) = feed_forward_in_training("linear", policy, x, upstream, 5, 12)
    rows, dy = x.reshape(-1, 8).astype(np.float64), upstream.reshape(-1, 8)
    hidden = rows @ w1 + b1
    dhidden = dy @ w2.T
    expected = [(dhidden @ w1.T).reshape(x.shape), rows.T @ dhidden, dhidden.sum(0),
                hidden.T @ dy, dy.sum(0)]
    assert_gradients_close(policy, got, expected, 1e-4 if policy == "float32" else 2e-2)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_feed_forward_gelu_in_training_matches_numpy_values_and_gradients(policy):
    # In training the GELU runs XLA-compiled with its own gradient: checked against
    # x * Phi(x) and Phi(x) + x * phi(x) in float64, through both matmuls.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 9, 8)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    y, got, (w1, b1, w2, b2) = feed_forward_in_training("gelu", policy, x, upstream, 6, 24)
    rows, dy = x.reshape(-1, 8).astype(np.float64), upstream.reshape(-1, 8)
    z = rows @ w1 + b1
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    hidden = z * cdf
    dz = (dy @ w2.T) * (cdf + z * pdf)
    expected = [(dz @ w1.T).reshape(x.shape), rows.T @ dz, dz.sum(0), hidden.T @ dy, dy.sum(0)]
    bound = 1e-5 if policy == "float32" else 2e-2
    output = hidden @ w2 + b2
    assert np.abs(y.reshape(-1, 8) - output).max() < bound * np.abs(output).max()
    assert_gradients_close(policy, got, expected, bound)


def test_training_graph_compiles_only_the_gelu():
    # The GELU's two passes are XLA functions; the matmuls stay in the outer graph.
    layer = bk_layers.FeedForward(16, activation="gelu")
    x = tf.constant(np.random.default_rng(7).normal(size=(2, 5, 8)).astype("float32"))
    layer.build(x.shape)

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs, training=True))
        return tape.gradient(loss, inputs)

    graph = step.get_concrete_function(x).graph.as_graph_def()
    compiled = {f.signature.name for f in graph.library.function
                if f.attr["_XlaMustCompile"].b}
    assert len(compiled) == 2, compiled                         # forward and backward
    compiled_ops = {node.op for f in graph.library.function if f.signature.name in compiled
                    for node in f.node_def}
    assert "Erf" in compiled_ops and "Exp" in compiled_ops
    assert not {"MatMul", "BatchMatMulV2"} & compiled_ops
    outer_ops = {node.op for node in graph.node}
    assert "MatMul" in outer_ops and "Erf" not in outer_ops
    inference = tf.function(lambda t: layer(t, training=False)).get_concrete_function(x)
    assert not any(f.attr["_XlaMustCompile"].b
                   for f in inference.graph.as_graph_def().library.function)
