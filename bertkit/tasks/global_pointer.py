"""GlobalPointer (Su Jianlin): every span scored for every entity type, with rotary
positions, and the multi-label categorical cross-entropy it trains with.

:class:`GlobalPointer` gives each type its own query and key; :class:`EfficientGlobalPointer`
shares one query and key between types and adds per-type start and end biases.
:class:`bertkit.GlobalPointerHead` puts either on an encoder.
"""
import keras
from keras import ops

from bertkit.layers import fresh_initializer
from bertkit.positions import rotary_position_embedding

__all__ = ["GlobalPointer", "EfficientGlobalPointer", "multilabel_categorical_crossentropy",
           "global_pointer_loss"]


def _span_masks(logits, mask):
    """``logits`` ``[B, N, T, T]`` with padded rows/columns and ``end < start`` set to -1e12."""
    mask = ops.cast(mask, logits.dtype)
    pair = mask[:, None, :, None] * mask[:, None, None, :]              # [B, 1, T, T]
    length = ops.shape(logits)[-1]
    upper = ops.triu(ops.ones((length, length), logits.dtype))         # start <= end
    return logits - (1.0 - pair * upper[None, None]) * 1e12


@keras.saving.register_keras_serializable(package="bertkit")
class GlobalPointer(keras.layers.Layer):
    """GlobalPointer (Su Jianlin): every span ``(start, end)`` scored for every entity type.

    ``layer(x, padding_mask=m)`` with ``x`` ``[B, T, H]`` and ``m`` ``[B, T]`` gives logits
    ``[B, N, T, T]`` (``N`` types): a query and a key per type and position, both rotated
    by their positions (:func:`bertkit.positions.rotary_position_embedding`, so a score
    depends on the span's length), ``q_start . k_end / sqrt(D)``. Spans with ``end <
    start`` or a padded end score -1e12. Train with
    :func:`multilabel_categorical_crossentropy` (``global_pointer_loss``); a span is
    predicted where its logit is above 0.

    Args:
        heads: the number of entity types ``N``.
        head_size: the width ``D`` of each query and key (even).
        kernel_initializer: of the projection.
    """

    def __init__(self, heads, head_size, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.heads, self.head_size = heads, head_size
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(heads * head_size * 2,
                                        kernel_initializer=self.kernel_initializer,
                                        dtype=self.dtype_policy)

    def build(self, inputs_shape, padding_mask_shape=None):
        self.dense.build(inputs_shape)

    def call(self, inputs, padding_mask=None):
        x = self.dense(inputs)                                            # [B, T, N*2D]
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.heads, 2 * self.head_size))
        query, key = x[..., : self.head_size], x[..., self.head_size:]    # [B, T, N, D]
        query, key = rotary_position_embedding(query), rotary_position_embedding(key)
        logits = ops.einsum("bmnd,bknd->bnmk", query, key)                # [B, N, T, T]
        logits = ops.cast(logits, "float32") / self.head_size ** 0.5
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(inputs)[:2], "float32")
        return _span_masks(logits, padding_mask)

    def compute_output_spec(self, inputs, padding_mask=None):
        b, t = inputs.shape[0], inputs.shape[1]
        return keras.KerasTensor((b, self.heads, t, t), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_size": self.head_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="bertkit")
class EfficientGlobalPointer(GlobalPointer):
    """Efficient GlobalPointer: one query and key shared by all types, plus a per-type
    bias of the start and of the end (far fewer parameters than :class:`GlobalPointer`).

    ``logits[b, n, i, j] = q_i . k_j / sqrt(D) + (s_n(i) + e_n(j)) / 2`` with the shared
    query and key taken as the even and odd features of one projection (rotated by
    position), and ``s_n``, ``e_n`` from a dense layer of the projection.
    """

    def __init__(self, heads, head_size, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(heads, head_size, kernel_initializer=kernel_initializer, **kwargs)
        self.dense = keras.layers.Dense(head_size * 2, dtype=self.dtype_policy,
                                        kernel_initializer=fresh_initializer(
                                            self.kernel_initializer))
        self.bias_dense = keras.layers.Dense(heads * 2, dtype=self.dtype_policy,
                                             kernel_initializer=fresh_initializer(
                                                 self.kernel_initializer))

    def build(self, inputs_shape, padding_mask_shape=None):
        self.dense.build(inputs_shape)
        self.bias_dense.build((*inputs_shape[:-1], self.head_size * 2))

    def call(self, inputs, padding_mask=None):
        x = self.dense(inputs)                                            # [B, T, 2D]
        query = rotary_position_embedding(x[..., ::2])
        key = rotary_position_embedding(x[..., 1::2])
        logits = ops.einsum("bmd,bkd->bmk", query, key) / self.head_size ** 0.5
        bias = ops.transpose(self.bias_dense(x), (0, 2, 1)) / 2           # [B, 2N, T]
        logits = (ops.cast(logits, "float32")[:, None]
                  + ops.cast(bias[:, ::2, :, None] + bias[:, 1::2, None, :], "float32"))
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(inputs)[:2], "float32")
        return _span_masks(logits, padding_mask)


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Su Jianlin's multi-label softmax loss over the last axis: ``log(1 + sum_neg e^s) +
    log(1 + sum_pos e^-s)``, which pushes positive scores above 0 and negatives below.

    Args:
        y_true: 0/1 labels, any shape ``[..., C]``.
        y_pred: scores (logits) of the same shape.

    Returns:
        ``[...]``, one value per row.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = (1.0 - 2.0 * y_true) * ops.cast(y_pred, "float32")     # positives negated
    negatives = y_pred - y_true * 1e12
    positives = y_pred - (1.0 - y_true) * 1e12
    zeros = ops.zeros_like(y_pred[..., :1])
    return (ops.logsumexp(ops.concatenate([negatives, zeros], axis=-1), axis=-1)
            + ops.logsumexp(ops.concatenate([positives, zeros], axis=-1), axis=-1))


def global_pointer_loss(y_true, y_pred):
    """:func:`multilabel_categorical_crossentropy` over every span of each type:
    ``[B, N, T, T]`` labels and logits -> ``[B]`` (the mean over types)."""
    shape = ops.shape(y_pred)
    y_true = ops.reshape(y_true, (shape[0] * shape[1], -1))
    y_pred = ops.reshape(y_pred, (shape[0] * shape[1], -1))
    return ops.mean(ops.reshape(multilabel_categorical_crossentropy(y_true, y_pred),
                                (shape[0], shape[1])), axis=1)
