"""Serializable Keras layers that BERT and ALBERT are built from.

Every layer here is registered with Keras under the ``bertkit`` package and has a
``get_config``, so models that use them round-trip through ``model.save('m.keras')``
and ``keras.models.load_model`` once ``bertkit`` is imported.

Shapes follow the letter code of Google's ``modeling.py``: B batch, T sequence length,
H hidden size, N attention heads, D width of one head (H = N * D), I intermediate
size, V vocabulary size, E embedding size.
"""
import math

import keras
from keras import ops

from bertkit._fused import dense, graphs_for_converters, normalize  # noqa: F401 (re-exported)
from bertkit._fused import gelu_erf_and_cdf, gelu_erf_gradient
from bertkit.positions import relative_position_table, rotary_position_embedding

__all__ = ["gelu_tanh", "gelu_erf", "get_activation", "Embedding", "PositionEmbedding",
           "Dropout", "PaddingMask", "MultiHeadAttention", "FeedForward", "RMSNorm",
           "BiasAdd", "TakeToken", "LayerNormalization", "ConditionalLayerNormalization",
           "fresh_initializer", "graphs_for_converters"]

_PACKAGE = "bertkit"


def _register(cls):
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def gelu_tanh(x):
    """GELU with the tanh approximation, as Google's ``modeling.py`` computes it."""
    return ops.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def gelu_erf(x):
    """GELU in its exact erf form, as Hugging Face and bert4keras compute ``gelu``.

    ``x * Phi(x)`` with the derivative ``Phi(x) + x * phi(x)`` written out: it reuses
    ``Phi(x)`` from the forward pass, where differentiating the composite op takes
    about 1.5x as long in TensorFlow's graph mode (the feed-forward activation is
    the largest elementwise tensor of a BERT step).
    """
    return _gelu_erf(x)


@ops.custom_gradient
def _gelu_erf(x):
    y, cdf = gelu_erf_and_cdf(x)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return gelu_erf_gradient(x, cdf, upstream)

    return y, grad


def get_activation(name):
    """The activation function for a config's canonical ``hidden_act`` name."""
    functions = {
        "gelu": gelu_erf,
        "gelu_tanh": gelu_tanh,
        "relu": keras.activations.relu,
        "swish": keras.activations.silu,
        "tanh": keras.activations.tanh,
        "linear": keras.activations.linear,
    }
    if name not in functions:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(functions)}")
    return functions[name]


def _initializer(value):
    return keras.initializers.get(value)


def fresh_initializer(initializer):
    """A new instance of ``initializer`` (anything ``keras.initializers.get`` takes), for
    one more weight.

    A Keras 3 random initializer picks its seed when it is made and then draws the same
    values at every call, so one instance shared by several weights starts them equal: an
    attention layer's query, key, value and output kernels would begin as one matrix, every
    token's query its own key. An unseeded initializer gets a seed of its own here (drawn
    from Python's ``random``, which ``keras.utils.set_random_seed`` seeds, so a seeded run
    stays reproducible); one given an explicit seed is returned as it is.
    """
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    if "seed" in config and config["seed"] is None:
        return initializer.__class__.from_config(config)
    return initializer


@_register
class Embedding(keras.layers.Embedding):
    """A token embedding that can also act as the tied output projection.

    ``layer(ids)`` looks rows up as usual; ``layer(x, mode='dense')`` multiplies
    hidden states by the transposed table, ``[B, T, E] -> [B, T, V]``, which is how
    BERT's MLM head shares its output matrix with the input embedding;
    ``layer(x, mode='project')`` multiplies by the table itself,
    ``[B, T, V] -> [B, T, E]`` (ALBERT-zh's embedding projection, used both ways).

    Example:

    >>> embedding = Embedding(21128, 768, name='Embedding-Token')
    >>> x = embedding(token_ids)            # [B, T] -> [B, T, 768]
    >>> logits = embedding(x, mode='dense') # [B, T, 768] -> [B, T, 21128]
    """

    def call(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().call(inputs)
        if mode in ("dense", "project"):
            kernel = ops.cast(self.embeddings, self.compute_dtype)
            return ops.matmul(inputs, ops.transpose(kernel) if mode == "dense" else kernel)
        raise ValueError(f"Embedding mode must be 'embedding', 'dense' or 'project', got "
                         f"{mode!r}")

    def compute_output_spec(self, inputs, mode="embedding"):
        if mode == "dense":
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        if mode == "project":
            return keras.KerasTensor((*inputs.shape[:-1], self.output_dim),
                                     dtype=self.compute_dtype)
        return keras.KerasTensor((*inputs.shape, self.output_dim), dtype=self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        # Padding is masked explicitly through the attention mask, not Keras masking.
        return None


@_register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to its input: ``[B, T, E]``.

    Args:
        input_dim: the number of positions (``max_position_embeddings``).
        output_dim: the embedding width.
        embeddings_initializer: initializer of the ``[input_dim, output_dim]`` table.

    Raises:
        ValueError: at build or call time, when the sequence is longer than
            ``input_dim`` (a BERT cannot encode positions it was not trained on).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = _initializer(embeddings_initializer)

    def build(self, input_shape):
        self._check_length(input_shape[1])
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
            name="embeddings",
        )

    def _check_length(self, length):
        if length is not None and length > self.input_dim:
            raise ValueError(
                f"{self.name}: sequence length {length} exceeds max_position_embeddings "
                f"= {self.input_dim}; truncate the inputs (e.g. Tokenizer.encode(maxlen=...))"
            )

    def call(self, inputs):
        length = inputs.shape[1]
        self._check_length(length)
        if length is None:
            length = ops.shape(inputs)[1]
        positions = ops.cast(self.embeddings[:length], self.compute_dtype)  # [T, E]
        return inputs + positions[None]

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@_register
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` whose random mask XLA compiles into fast code.

    On the TensorFlow backend Keras draws dropout masks with the default stateless
    random algorithm, which XLA (``jit_compile=True``) compiles on a CPU into slow
    code: 1.4 s for one BERT-base attention mask ``[16, 12, 128, 128]``, against 45 ms
    for the same floats drawn with Philox, so the masks of a training step take
    longer than its matmuls. This layer draws Philox bits, two 16-bit numbers per
    32-bit word (about 19 ms for that mask, with or without XLA), and drops a unit
    when its number is below
    ``round(rate * 65536)``: the drop probability is ``rate`` to within 1/131072,
    and kept units are scaled so that the expectation is unchanged. With a
    ``noise_shape``, on other backends, and at inference it is Keras's ``Dropout``.

    Example:

    >>> y = Dropout(0.1, name='Embedding-Dropout')(x, training=True)
    """

    def call(self, inputs, training=False):
        threshold = round(self.rate * 65536)
        if (not training or self.noise_shape is not None or not 0 < threshold < 65536
                or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training)
        return _philox_dropout(inputs, threshold, self.seed_generator.next())


def _philox_dropout(inputs, threshold, seed):
    import tensorflow as tf  # the TensorFlow-only fast path of Dropout

    # int32 seeds: XLA rejects the int64 state of Keras's SeedGenerator.
    seed = tf.cast(tf.math.floormod(seed, 2 ** 31 - 1), "int32")
    shape = tf.shape(inputs)
    if inputs.shape[-1] is not None and inputs.shape[-1] % 2 == 0:
        # [..., C/2] words -> [..., C/2, 2] halves -> [..., C]: no slicing, XLA fuses it
        words_shape = tf.concat([shape[:-1], [inputs.shape[-1] // 2]], 0)
        words = tf.random.stateless_uniform(words_shape, seed=seed, minval=None, maxval=None,
                                            dtype="uint32", alg="philox")
        draws = tf.reshape(tf.bitcast(words, "uint16"), shape)
    else:
        size = tf.size(inputs)
        words = tf.random.stateless_uniform([(size + 1) // 2], seed=seed, minval=None,
                                            maxval=None, dtype="uint32", alg="philox")
        draws = tf.reshape(tf.reshape(tf.bitcast(words, "uint16"), [-1])[:size], shape)
    keep = draws >= tf.constant(threshold, "uint16")
    scale = tf.cast(65536.0 / (65536 - threshold), inputs.dtype)
    return tf.where(keep, inputs * scale, tf.zeros_like(inputs))


@_register
class PaddingMask(keras.layers.Layer):
    """``[B, T]`` token ids to a float mask, 1 at real tokens and 0 at padding (id 0)."""

    def call(self, token_ids):
        return ops.cast(ops.not_equal(token_ids, 0), "float32")

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="float32")


@_register
class MultiHeadAttention(keras.layers.Layer):
    """BERT's multi-head self-attention, query/key/value and output projections included.

    ``layer(x, attention_mask=mask)`` with ``x: [B, T, H]`` and ``mask: [B, T]`` (1 for
    tokens to attend to, 0 for padding; or ``[B, T, T]``, a mask per query, such as a
    causal or UniLM mask) returns ``[B, T, H]``. ``query=q`` with
    ``q: [B, Q, H]`` computes the outputs of those ``Q`` positions only, attending to
    all of ``x`` (``[B, Q, H]``; the builder's pooled-output models use it for the
    last block, whose other positions nothing reads). As in Google's
    ``modeling.py`` the mask adds -10000 to the scores of padded keys before the
    softmax, and scores, mask and softmax are computed in float32 whatever the layer's
    compute dtype. ``return_attention_scores=True`` also returns the attention
    probabilities ``[B, N, T, T]`` (``[B, N, Q, T]`` with ``query``; see
    ``bertkit.models.attention_model``).

    Args:
        heads: number of attention heads N.
        head_size: width D of one head.
        out_dim: output width; defaults to ``heads * head_size``.
        attention_dropout: dropout rate on the attention probabilities.
        kernel_initializer: initializer of the four kernels (biases start at zero).
        use_bias: projections with biases (RoFormer-v2 has none).
        position_encoding: positions inside attention, for families without absolute
            position embeddings: ``None``; ``'rotary'`` (RoFormer: queries and keys
            rotated by :func:`rotary_position_embedding`); ``'relative'`` (NEZHA:
            :func:`relative_position_table` added to the keys and to the values).
        max_relative_position: the clipping distance of ``'relative'``.
    """

    POSITION_ENCODINGS = (None, "rotary", "relative")

    def __init__(
        self,
        heads,
        head_size,
        out_dim=None,
        attention_dropout=0.0,
        kernel_initializer="glorot_uniform",
        use_bias=True,
        position_encoding=None,
        max_relative_position=64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_encoding not in self.POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {self.POSITION_ENCODINGS}, "
                             f"got {position_encoding!r}")
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim or heads * head_size
        self.attention_dropout = attention_dropout
        self.kernel_initializer = _initializer(kernel_initializer)
        self.use_bias = use_bias
        self.position_encoding = position_encoding
        self.max_relative_position = max_relative_position
        self.dropout = Dropout(attention_dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        width = input_shape[-1]
        inner = self.heads * self.head_size
        for prefix, shape in (
            ("query", (width, inner)),
            ("key", (width, inner)),
            ("value", (width, inner)),
            ("output", (inner, self.out_dim)),
        ):
            kernel = self.add_weight(shape=shape, name=f"{prefix}_kernel",
                                     initializer=fresh_initializer(self.kernel_initializer))
            setattr(self, f"{prefix}_kernel", kernel)
            if self.use_bias:
                bias = self.add_weight(shape=shape[-1:], initializer="zeros",
                                       name=f"{prefix}_bias")
                setattr(self, f"{prefix}_bias", bias)

    def _project(self, x, prefix, training=None):
        kernel = ops.cast(getattr(self, f"{prefix}_kernel"), self.compute_dtype)
        bias = (ops.cast(getattr(self, f"{prefix}_bias"), self.compute_dtype)
                if self.use_bias else None)
        return dense(x, kernel, bias, training=training)

    def _split_heads(self, x):
        # [B, T, N*D] -> [B, T, N, D]
        return ops.reshape(x, (ops.shape(x)[0], -1, self.heads, self.head_size))

    def call(self, inputs, attention_mask=None, return_attention_scores=False, training=None,
             query=None):
        query = self._split_heads(self._project(inputs if query is None else query, "query",
                                                training))
        key = self._split_heads(self._project(inputs, "key", training))
        value = self._split_heads(self._project(inputs, "value", training))
        relative = None
        if self.position_encoding == "rotary":
            # A [CLS]-only query is position 0, the first of the keys' positions.
            query, key = rotary_position_embedding(query), rotary_position_embedding(key)
        elif self.position_encoding == "relative":
            relative = ops.cast(relative_position_table(
                ops.shape(query)[1], ops.shape(key)[1], self.head_size,
                self.max_relative_position), self.compute_dtype)       # [T, S, D]
        if (relative is None and not return_attention_scores
                and keras.backend.backend() == "tensorflow"):
            probs = self._fused_probabilities(query, key, attention_mask)
            return self._attend(probs, value, None, training)
        # [B, T, N, D] x [B, S, N, D] -> [B, N, T, S], in float32 for a stable softmax
        scores = ops.einsum("btnd,bsnd->bnts", query, key)
        if relative is not None:  # q_i . R_ij, added before the scaling as NEZHA does
            scores = scores + ops.einsum("btnd,tsd->bnts", query, relative)
        scores = ops.cast(scores, "float32") / math.sqrt(self.head_size)
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "float32")
            # [B, S] (padding) -> [B, 1, 1, S]; [B, T, S] (per query) -> [B, 1, T, S]
            mask = mask[:, None, None, :] if len(mask.shape) == 2 else mask[:, None]
            scores = scores + (1.0 - mask) * -10000.0
        probs = ops.softmax(scores, axis=-1)
        output = self._attend(ops.cast(probs, self.compute_dtype), value, relative, training)
        if return_attention_scores:
            return output, probs
        return output

    def _fused_probabilities(self, query, key, attention_mask):
        """The attention probabilities ``[B, N, T, S]`` in the compute dtype, written as
        the ``BatchMatMulV2 -> AddV2`` pattern that TensorFlow's oneDNN rewrite fuses
        into one batched matmul: the mask bias is added to its float32 accumulators, and
        the softmax (oneDNN's, float32 inside) reads the result.

        Under ``mixed_bfloat16`` the scores are rounded to bfloat16 once, where the
        unfused path also rounded them (the matmul's output) before its float32 softmax.
        """
        import tensorflow as tf  # the TensorFlow fast path

        dtype = self.compute_dtype
        # Scaling the query rather than the scores: a Mul between the batched matmul and
        # the mask's AddV2 stops the rewrite in most blocks of a model.
        query = tf.transpose(query, [0, 2, 1, 3])       # [B, N, T, D]
        key = tf.transpose(key, [0, 2, 1, 3])           # [B, N, S, D]
        scale = tf.constant(1.0 / math.sqrt(self.head_size), dtype)
        scores = tf.matmul(query * scale, key, transpose_b=True)
        if attention_mask is not None:
            mask = tf.cast(attention_mask, "float32")
            # A query with every key masked (a sequence of padding only) gets
            # softmax(scores - 10000) = softmax(scores) in float32; in bfloat16 the shifted
            # scores would round to one value (uniform weights). Unmasking all its keys
            # gives it the float32 result; every other row keeps its mask.
            mask = tf.maximum(mask, 1.0 - tf.reduce_max(mask, axis=-1, keepdims=True))
            mask = mask[:, None, None, :] if len(mask.shape) == 2 else mask[:, None]
            scores = scores + tf.cast((1.0 - mask) * -10000.0, dtype)
        return tf.nn.softmax(scores, axis=-1)

    def _attend(self, probs, value, relative, training):
        """Dropout on ``probs``, the weighted sum of ``value`` and the output projection."""
        dropped = self.dropout(probs, training=training)
        # [B, N, T, S] x [B, S, N, D] -> [B, T, N, D] -> [B, T, N*D]
        context = ops.einsum("bnts,bsnd->btnd", dropped, value)
        if relative is not None:  # sum_j p_ij R_ij
            context = context + ops.einsum("bnts,tsd->btnd", dropped, relative)
        context = ops.reshape(context, (ops.shape(context)[0], -1, self.heads * self.head_size))
        return self._project(context, "output", training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.out_dim)

    def compute_output_spec(self, inputs, attention_mask=None, return_attention_scores=False,
                            training=None, query=None):
        queries = inputs if query is None else query
        output = keras.KerasTensor((*queries.shape[:-1], self.out_dim), dtype=self.compute_dtype)
        if return_attention_scores:
            batch, length = inputs.shape[0], inputs.shape[1]
            probs = keras.KerasTensor((batch, self.heads, queries.shape[1], length),
                                      dtype="float32")
            return output, probs
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            out_dim=self.out_dim,
            attention_dropout=self.attention_dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            use_bias=self.use_bias,
            position_encoding=self.position_encoding,
            max_relative_position=self.max_relative_position,
        )
        return config


@_register
class FeedForward(keras.layers.Layer):
    """BERT's position-wise feed-forward block: ``[B, T, H] -> [B, T, I] -> [B, T, H]``.

    Args:
        units: the intermediate width I.
        activation: ``'gelu'`` (erf), ``'gelu_tanh'``, ``'relu'``, ``'swish'``, ...
        kernel_initializer: initializer of both kernels (biases start at zero).
        use_bias: dense layers with biases (RoFormer-v2 has none).
    """

    def __init__(self, units, activation="gelu", kernel_initializer="glorot_uniform",
                 use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.activation = activation
        self.activation_fn = get_activation(activation)
        self.kernel_initializer = _initializer(kernel_initializer)

    def build(self, input_shape):
        width = input_shape[-1]
        self.intermediate_kernel = self.add_weight(
            shape=(width, self.units), initializer=fresh_initializer(self.kernel_initializer),
            name="intermediate_kernel"
        )
        if self.use_bias:
            self.intermediate_bias = self.add_weight(
                shape=(self.units,), initializer="zeros", name="intermediate_bias"
            )
        self.output_kernel = self.add_weight(
            shape=(self.units, width), initializer=fresh_initializer(self.kernel_initializer),
            name="output_kernel"
        )
        if self.use_bias:
            self.output_bias = self.add_weight(shape=(width,), initializer="zeros",
                                               name="output_bias")

    def call(self, inputs, training=None):
        dtype = self.compute_dtype
        cast = lambda weight: ops.cast(weight, dtype)  # noqa: E731
        x = dense(inputs, cast(self.intermediate_kernel),
                   cast(self.intermediate_bias) if self.use_bias else None,
                   self.activation_fn, self.activation, training=training)
        return dense(x, cast(self.output_kernel),
                      cast(self.output_bias) if self.use_bias else None, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=self.activation,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            use_bias=self.use_bias,
        )
        return config


@_register
class RMSNorm(keras.layers.Layer):
    """Parameter-free RMS normalisation, RoFormer-v2's norm: ``x / sqrt(mean(x^2) + eps)``.

    No mean is subtracted and there is no gain or bias (so nothing to load or train).
    Computed in float32 whatever the compute dtype.
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        x = x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@_register
class BiasAdd(keras.layers.Layer):
    """Adds a learned bias over the last axis (the MLM head's ``output_bias``)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, inputs):
        return inputs + ops.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class TakeToken(keras.layers.Layer):
    """Picks one position of a sequence, ``[B, T, H] -> [B, H]`` (``[CLS]`` by default).

    ``keepdims=True`` keeps the length axis: ``[B, T, H] -> [B, 1, H]``.
    """

    def __init__(self, index=0, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.index = index
        self.keepdims = keepdims

    def call(self, inputs):
        token = inputs[:, self.index]
        return ops.expand_dims(token, 1) if self.keepdims else token

    def compute_output_shape(self, input_shape):
        kept = (1,) if self.keepdims else ()
        return (input_shape[0], *kept, *input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index, keepdims=self.keepdims)
        return config


@_register
class LayerNormalization(keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` (same weights, arguments and config) that
    TensorFlow computes as one fused op.

    Over the last axis with both ``gamma`` and ``beta`` it normalises through
    :func:`bertkit._fused.normalize`, statistics in float32, then applies ``gamma`` and ``beta`` in the
    compute dtype; any other configuration is Keras's own layer.

    Example:

    >>> y = LayerNormalization(epsilon=1e-12, name='Embedding-Norm')(x)
    """

    def call(self, inputs):
        axis = self.axis if isinstance(self.axis, int) else tuple(self.axis)
        last = axis in (-1, len(inputs.shape) - 1, (-1,), (len(inputs.shape) - 1,))
        if not (last and self.center and self.scale) or self.rms_scaling:
            return super().call(inputs)
        x = ops.cast(inputs, self.compute_dtype)
        dtype = self.compute_dtype
        return normalize(x, self.epsilon) * ops.cast(self.gamma, dtype) + ops.cast(self.beta,
                                                                                   dtype)


@_register
class ConditionalLayerNormalization(keras.layers.Layer):
    """Layer normalization whose gain and bias are shifted by a condition vector.

    ``layer(x, condition=c)``, with ``x: [B, T, H]`` (or ``[B, H]``) and ``c: [B, C]``,
    normalises ``x`` over its last axis and returns
    ``x_hat * (gamma + c @ W_gamma) + (beta + c @ W_beta)``, the condition broadcast over
    the middle axes. ``W_gamma`` and ``W_beta`` start at zero, so a new layer is exactly
    the plain layer norm with gain ``gamma`` and bias ``beta`` (and, loaded from a
    checkpoint, exactly the pretrained norm) until training moves them. This is the
    "conditional layer normalization" of bert4keras (Su Jianlin), used to feed a
    subject into the object pointer of a triple extractor or a class into a generator.
    Without ``condition`` the layer is the plain layer norm (:class:`LayerNormalization`'s
    fused path). Statistics are computed in float32 whatever the compute dtype, and with a
    condition the gain and bias are applied in float32 too.

    Weights, in this order: ``gamma`` and ``beta`` (shaped and named as those of
    ``keras.layers.LayerNormalization``, so checkpoint tables map onto them), then
    ``hidden_kernel`` (with ``hidden_units``), ``gamma_kernel`` and ``beta_kernel``.

    Args:
        epsilon: added to the variance (BERT: 1e-12).
        hidden_units: if set, the condition is first mapped by a bias-free dense layer
            of this width (useful when the condition is much wider than ``H``).
        hidden_activation: activation of that mapping (a name of
            :func:`get_activation`), default ``'linear'``.
        hidden_initializer: initializer of ``hidden_kernel``.

    Example:

    >>> norm = ConditionalLayerNormalization(epsilon=1e-12, name='Object-Norm')
    >>> y = norm(hidden, condition=subject_vector)   # [B, T, H], [B, 2H] -> [B, T, H]
    """

    def __init__(self, epsilon=1e-12, hidden_units=None, hidden_activation="linear",
                 hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if hidden_units is not None and (not isinstance(hidden_units, int) or hidden_units < 1):
            raise ValueError(f"hidden_units must be a positive int or None, got {hidden_units!r}")
        self.epsilon = epsilon
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.hidden_activation_fn = get_activation(hidden_activation)
        self.hidden_initializer = _initializer(hidden_initializer)
        self.condition_size = None

    def build(self, inputs_shape, condition_shape=None):
        width = inputs_shape[-1]
        # gamma and beta first: checkpoint tables map the first two weights.
        self.gamma = self.add_weight(shape=(width,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(width,), initializer="zeros", name="beta")
        if condition_shape is None:
            return
        self.condition_size = condition_shape[-1]
        if self.condition_size is None:
            raise ValueError(f"{self.name}: the condition's last axis must be known")
        size = self.condition_size
        if self.hidden_units:
            self.hidden_kernel = self.add_weight(
                shape=(size, self.hidden_units), initializer=self.hidden_initializer,
                name="hidden_kernel")
            size = self.hidden_units
        self.gamma_kernel = self.add_weight(shape=(size, width), initializer="zeros",
                                            name="gamma_kernel")
        self.beta_kernel = self.add_weight(shape=(size, width), initializer="zeros",
                                           name="beta_kernel")

    def call(self, inputs, condition=None):
        if condition is None:  # the plain layer norm, fused where TensorFlow can
            dtype = self.compute_dtype
            normed = normalize(ops.cast(inputs, dtype), self.epsilon)
            return normed * ops.cast(self.gamma, dtype) + ops.cast(self.beta, dtype)
        if self.condition_size is None:
            raise ValueError(f"{self.name} was built without a condition; call it with "
                             "`condition=` the first time too")
        normed = normalize(ops.cast(inputs, "float32"), self.epsilon, fusable=False)
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        shift_gamma, shift_beta = self._condition_shifts(condition)
        # [B, H] -> [B, 1, ..., H] to broadcast over the positions of `inputs`.
        for _ in range(len(normed.shape) - len(shift_gamma.shape)):
            shift_gamma = ops.expand_dims(shift_gamma, 1)
            shift_beta = ops.expand_dims(shift_beta, 1)
        gamma, beta = gamma + shift_gamma, beta + shift_beta
        return ops.cast(normed * gamma + beta, self.compute_dtype)

    def _condition_shifts(self, condition):
        dtype = self.compute_dtype
        c = ops.cast(condition, dtype)
        if self.hidden_units:
            c = self.hidden_activation_fn(ops.matmul(c, ops.cast(self.hidden_kernel, dtype)))
        shift_gamma = ops.matmul(c, ops.cast(self.gamma_kernel, dtype))
        shift_beta = ops.matmul(c, ops.cast(self.beta_kernel, dtype))
        return ops.cast(shift_gamma, "float32"), ops.cast(shift_beta, "float32")

    def compute_output_shape(self, inputs_shape, condition_shape=None):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            hidden_units=self.hidden_units,
            hidden_activation=self.hidden_activation,
            hidden_initializer=keras.initializers.serialize(self.hidden_initializer),
        )
        return config
