"""The TensorFlow graphs behind bertkit's fast layers: op patterns that oneDNN fuses.

TensorFlow's oneDNN graph rewrite (grappler's remapper) turns fixed op patterns into fused
kernels: a 2-D ``MatMul`` followed by its bias add and activation into one matmul with an
epilogue, a batched matmul followed by an add into one batched matmul, the fused Keras 2
layer-norm graph into ``_MklLayerNorm``. These helpers write bertkit's dense layers, layer
norms and attention inputs as those patterns (``bertkit.layers`` calls them), and
:func:`graphs_for_converters` turns off what only serves the rewrites when a traced
function is converted for another runtime. ``tests/test_fused_paths.py`` checks the
rewrites on the graph TensorFlow runs.
"""
import contextlib
import functools
import math
import os

import keras
from keras import ops

__all__ = ["graphs_for_converters", "dense", "normalize", "weights_assumed_frozen"]


_TENSORFLOW_GRAPH_AIDS = [True]

FROZEN_WEIGHTS_IN_TRAINING = (
    "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS is set: TensorFlow then packs each weight for oneDNN "
    "the first time a fused matmul runs and never reads the variable again, so training "
    "would go on computing with the first weights. Unset it in a process that trains; it "
    "is for processes that only predict, with their weights loaded before the first call.")


def weights_assumed_frozen():
    """Whether ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`` is set (as TensorFlow reads it).

    With it, TensorFlow's fused matmuls (a matmul and its bias add, and activation)
    reorder each weight once into the blocked layout of oneDNN's matrix-unit kernels and
    keep that copy: on a CPU with AMX, bfloat16 inference of BERT-base runs about 1.5x
    faster. The copy is never refreshed, so it is only for a process that serves a
    model: :func:`dense` refuses to trace a training step under it, and a model's
    weights must be in place before its first prediction.
    """
    value = os.environ.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "").strip().lower()
    return value in ("1", "true")


@contextlib.contextmanager
def graphs_for_converters():
    """Within the block, layers trace graphs without the ops that only serve TensorFlow's
    own rewrites, for converting a traced function to another runtime: the layer norm is
    the plain mean and variance (the pattern ONNX Runtime and OpenVINO fuse; TensorFlow's
    batch-norm form kept a batch norm over all the rows, which OpenVINO ran 5x slower),
    and GELU is :func:`bertkit.layers.gelu_erf`, not ``tf.nn.gelu``, whose ``Erfc`` ONNX
    lacks.

    Example:

    >>> with graphs_for_converters():
    ...     tf2onnx.convert.from_function(serving_function(model), ...)
    """
    _TENSORFLOW_GRAPH_AIDS.append(False)
    try:
        yield
    finally:
        _TENSORFLOW_GRAPH_AIDS.pop()


def normalize(x, epsilon, fusable=True):
    """``(x - mean) / sqrt(variance + epsilon)`` over the last axis, statistics in float32.

    On TensorFlow this is the graph of the fused Keras 2 layer norm: the rows reshaped
    to the channels of a ``[1, rows, width, 1]`` batch norm in training mode. Its
    statistics are float32 for a bfloat16 input too (no casts of the activations), and
    followed by ``* gamma + beta`` it is the pattern TensorFlow's oneDNN rewrite turns
    into one ``_MklLayerNorm`` at inference (a sixth of the time of the ten separate
    ops; in training the batch norm and its gradient run as they are). The raw op is
    used because ``tf.nn.fused_batch_norm`` raises ``epsilon`` to 1.001e-5, and BERT's
    is 1e-12. ``fusable=False`` keeps the rewrite away, for a caller whose gain is not a
    ``[width]`` vector (the rewrite does not check, and its kernel then fails).
    """
    if keras.backend.backend() != "tensorflow" or not _TENSORFLOW_GRAPH_AIDS[-1]:
        # Converters get the plain mean and variance, the layer-norm pattern that ONNX
        # Runtime and OpenVINO fuse; a training-mode batch norm over the rows is not one.
        x32 = ops.cast(x, "float32")
        mean = ops.mean(x32, axis=-1, keepdims=True)
        variance = ops.var(x32, axis=-1, keepdims=True)
        return ops.cast((x32 - mean) * ops.rsqrt(variance + epsilon), x.dtype)
    import tensorflow as tf  # the TensorFlow fast path

    shape = tf.shape(x)
    # The rewrite looks for the Fill ops below; with a static input shape, constant
    # folding would turn them into constants first. A PlaceholderWithDefault is never
    # folded, so the row count stays a runtime value whatever the shape.
    rows = tf.raw_ops.PlaceholderWithDefault(input=tf.reduce_prod(shape[:-1]), shape=[])
    y = tf.reshape(x, tf.stack([1, rows, shape[-1], 1]))
    fill = tf.fill if fusable else lambda dims, value: tf.broadcast_to(value, dims)
    ones = fill(tf.expand_dims(rows, 0), 1.0)
    zeros = fill(tf.expand_dims(rows, 0), 0.0)
    empty = tf.constant([], "float32")
    y = tf.raw_ops.FusedBatchNormV3(x=y, scale=ones, offset=zeros, mean=empty, variance=empty,
                                    epsilon=epsilon, data_format="NCHW", is_training=True)[0]
    return tf.reshape(y, shape)


def dense(x, kernel, bias=None, activation=None, activation_name=None, training=None):
    """``activation(x @ kernel + bias)`` over the last axis of ``x``, written the way
    TensorFlow's oneDNN graph rewrites fuse it.

    The rewrites turn a 2-D ``MatMul`` followed directly by its bias add (and, at
    inference, by GELU or ReLU written as ``tf.nn`` ops) into one fused matmul whose
    epilogue adds the bias and applies the activation while the result is still in the
    matmul's float32 accumulators: no separate pass over a ``[B*T, I]`` tensor, and in
    bfloat16 no rounding between the matmul and the activation. ``ops.matmul`` on a 3-D
    input builds a reshape-matmul-reshape whose bias add comes after the second reshape,
    which no rewrite fuses. In training the matmul and bias add get the gradient of
    :func:`_biased_matmul`, and GELU (whose input the gradient needs, so it cannot live in
    the matmul's epilogue) is :func:`_compiled_gelu`.

    In bfloat16, a bias with no activation to fuse (and in training every bias) is added
    after a batched matmul instead: the fused kernel is oneDNN's inner product, which on
    plain (unpacked) weights runs a generic GEMM, while a batched matmul is oneDNN's
    matmul, whose kernel packs the weights for the matrix units itself. On BERT-base's
    projections that wins more than the separate bias add costs: a bf16 inference step
    6-9% faster, a training step 3-6%. In float32 the inner product is the faster
    kernel, and at inference a GELU epilogue is worth more than the faster matmul, so
    those stay fused; so does everything when the weights are packed once
    (:func:`weights_assumed_frozen`), where the inner product is the fastest kernel.
    """
    width = kernel.shape[-1]
    flat = x if len(x.shape) == 2 else ops.reshape(x, (-1, x.shape[-1]))
    if keras.backend.backend() != "tensorflow":
        y = ops.matmul(flat, kernel)
        y = y if bias is None else y + bias
        y = y if activation is None else activation(y)
    else:
        import tensorflow as tf  # the TensorFlow fast path

        fusable = _TENSORFLOW_GRAPH_AIDS[-1] and not training
        fused = _tf_activations().get(activation_name) if fusable else None
        frozen = weights_assumed_frozen()
        if training and frozen:
            raise RuntimeError(FROZEN_WEIGHTS_IN_TRAINING)
        batched = (bias is not None and x.dtype == tf.bfloat16 and len(x.shape) > 2
                   and fused is None and _TENSORFLOW_GRAPH_AIDS[-1] and not frozen)
        if bias is None:
            y = tf.matmul(flat, kernel)
        elif training:
            y = _biased_matmul(x if batched else flat, kernel, bias)
        elif batched:
            y = tf.matmul(x, kernel) + bias
        else:
            y = tf.nn.bias_add(tf.matmul(flat, kernel), bias)
        if fused is not None:
            y = fused(y)
        elif training and activation_name == "gelu" and _TENSORFLOW_GRAPH_AIDS[-1]:
            y = _compiled_gelu(y)
        elif activation is not None:
            y = activation(y)
    if len(x.shape) == 2:
        return y
    return ops.reshape(y, (*_leading_shape(x), width))


def _biased_matmul(x, kernel, bias):
    """``x @ kernel + bias`` over the last axis of ``x``, with the bias gradient summed by
    a matmul.

    TensorFlow's ``BiasAddGrad`` sums a bfloat16 gradient in bfloat16: over the 2,048
    rows of a BERT-base batch its result is off by 6-8% (against a float32 sum), and it
    is slower than a matmul. Here the bias gradient is ``ones @ dy``, which oneDNN
    accumulates in float32 (one rounding, 0.3%), in half of ``BiasAddGrad``'s time on
    the matrix units. The forward pass is the fused matmul and bias add for a 2-D ``x``,
    and a batched matmul and a separate add for a 3-D one (see :func:`dense`); the other
    two gradients are the matmul's own.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def biased_matmul(x, kernel, bias):
        def grad(upstream):
            rows = tf.reshape(upstream, [-1, tf.shape(upstream)[-1]])
            ones = tf.ones(tf.stack([1, tf.shape(rows)[0]]), upstream.dtype)
            x_rows = tf.reshape(x, [-1, tf.shape(x)[-1]])
            return (tf.matmul(upstream, kernel, transpose_b=True),
                    tf.matmul(x_rows, rows, transpose_a=True),
                    tf.reshape(tf.matmul(ones, rows), [-1]))

        if len(x.shape) > 2:
            return tf.matmul(x, kernel) + bias, grad
        return tf.nn.bias_add(tf.matmul(x, kernel), bias), grad

    return biased_matmul(x, kernel, bias)


def gelu_erf_and_cdf(x):
    """``(x * Phi(x), Phi(x))``: exact GELU and the normal CDF its gradient reuses."""
    cdf = 0.5 * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))
    return x * cdf, cdf


def gelu_erf_gradient(x, cdf, upstream):
    """The gradient of exact GELU, ``upstream * (Phi(x) + x * phi(x))``, from ``Phi(x)``."""
    pdf = ops.exp(-0.5 * ops.square(x)) * (1.0 / math.sqrt(2.0 * math.pi))
    return upstream * (cdf + x * pdf)


@functools.lru_cache(maxsize=None)
def _compiled_gelu_passes():
    import tensorflow as tf

    # reduce_retracing: one trace for every shape (XLA still compiles each shape once),
    # so that eager training on varying lengths does not retrace at every new length
    compile_ = functools.partial(tf.function, jit_compile=True, reduce_retracing=True)
    return compile_(gelu_erf_and_cdf), compile_(gelu_erf_gradient)


def _compiled_gelu(x):
    """GELU (erf), forward and gradient each one XLA-compiled loop over ``x``.

    :func:`bertkit.layers.gelu_erf`'s values and gradient, but TensorFlow runs that as
    five elementwise ops forward and seven backward, each a pass over the feed-forward's
    ``[B*T, I]`` activation (the largest tensor of a BERT step), and its bfloat16
    elementwise kernels are slow: on BERT-base's ``[2048, 3072]`` in bfloat16 the two
    passes took 47 ms against 25 compiled. Only the elementwise math is compiled (XLA's
    CPU matmuls do not use the matrix units), so the outer graph, its oneDNN matmuls and
    its rewrites stay as they are. XLA compiles each new activation shape once (about a
    tenth of a second for both passes, shared by every block); batches padded to a few
    lengths (:func:`bertkit.data.pad_to_bucket`) keep that to a few compilations.
    Converters get the plain ops (see :func:`graphs_for_converters`).
    """
    import tensorflow as tf

    forward, backward = _compiled_gelu_passes()

    @tf.custom_gradient
    def gelu(x):
        y, cdf = forward(x)
        return y, lambda upstream: backward(x, cdf, upstream)

    return gelu(x)


def _leading_shape(x):
    # Every axis but the last: static where known, -1 for a single unknown one.
    static = list(x.shape[:-1])
    if sum(d is None for d in static) <= 1:
        return [-1 if d is None else d for d in static]
    dynamic = ops.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def _tf_activations():
    # The activations as the tf.nn ops whose graphs the oneDNN rewrites recognise.
    import tensorflow as tf

    return {
        "gelu": lambda y: tf.nn.gelu(y, approximate=False),
        "gelu_tanh": lambda y: tf.nn.gelu(y, approximate=True),
        "relu": tf.nn.relu,
    }
