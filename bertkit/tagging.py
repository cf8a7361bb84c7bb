"""Sequence labelling: a linear-chain CRF over tag scores, and GlobalPointer span scores.

:class:`ConditionalRandomField` holds the tag-to-tag transition scores and leaves the
per-token tag scores (emissions, ``[B, T, K]``) as they are; :meth:`~ConditionalRandomField.loss`
is the negative sequence log-likelihood (the forward algorithm over padded batches) and
:meth:`~ConditionalRandomField.decode` the batched Viterbi path, both in Keras ops: a
scan over positions, never a Python loop over the batch. Padding follows
``sequence_padding(tags, value=-1)``: a tag below 0 marks a padded position, so the
loss needs no separate mask input.

Example:

>>> crf = ConditionalRandomField(lr_multiplier=100, name="CRF")
>>> emissions = crf(keras.layers.Dense(num_tags)(encoder.output))     # [B, T, K]
>>> model = keras.Model(encoder.inputs, emissions)
>>> model.compile(optimizer, loss=crf.loss)                        # tags padded with -1
>>> paths = crf.decode(model.predict(x), mask=token_ids > 0)       # [B, T] int32
"""
import keras
from keras import ops

from bertkit.positions import rotary_position_embedding

__all__ = ["ConditionalRandomField", "GlobalPointer", "EfficientGlobalPointer",
           "multilabel_categorical_crossentropy", "global_pointer_loss"]


@keras.saving.register_keras_serializable(package="bertkit")
class ConditionalRandomField(keras.layers.Layer):
    """A linear-chain CRF: transition scores between tags, on top of per-token scores.

    The layer's output is its input, the emissions ``[B, T, K]`` (in float32); what it
    adds is the ``[K, K]`` transition matrix (``transitions[i, j]`` scores tag ``j``
    after tag ``i``), the loss and the decoding. As in bert4keras there are no separate
    start and end scores.

    Args:
        lr_multiplier: the transitions learn this many times faster than the rest
            (bert4keras's ``lr_multiplier``; the transitions start at zero and see one
            gradient per sentence pair of tags, so a pretrained encoder's learning rate
            barely moves them). Implemented by storing ``transitions / lr_multiplier``.
    """

    def __init__(self, lr_multiplier=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # log-sum-exp over paths wants float32
        super().__init__(**kwargs)
        if not lr_multiplier > 0:
            raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier!r}")
        self.lr_multiplier = float(lr_multiplier)

    def build(self, input_shape):
        tags = input_shape[-1]
        if tags is None:
            raise ValueError(f"{self.name}: the number of tags (last axis) must be known")
        self.stored_transitions = self.add_weight(shape=(tags, tags), initializer="zeros",
                                                  name="transitions")

    @property
    def transitions(self):
        """The ``[K, K]`` transition scores."""
        return self.stored_transitions * self.lr_multiplier

    def call(self, inputs):
        return ops.cast(inputs, "float32")

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}

    # -- scores -------------------------------------------------------------------

    def path_score(self, emissions, tags, mask):
        """The score of the tag paths ``tags`` ``[B, T]``: emissions plus transitions over
        the unpadded positions (``mask`` ``[B, T]``, 1 at real tokens, padding last)."""
        mask = ops.cast(mask, "float32")
        tags = ops.cast(ops.maximum(tags, 0), "int32")
        emitted = ops.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]
        pairs = ops.take(ops.reshape(self.transitions, (-1,)),
                         tags[:, :-1] * ops.shape(self.transitions)[0] + tags[:, 1:])
        return ops.sum(emitted * mask, axis=1) + ops.sum(pairs * mask[:, 1:], axis=1)

    def log_partition(self, emissions, mask):
        """``log Z`` ``[B]``: the log-sum-exp of every path's score (forward algorithm)."""
        mask = ops.cast(mask, "float32")
        transitions = self.transitions

        def step(alpha, inputs):
            emission, keep = inputs                                  # [B, K], [B]
            # [B, K, 1] + [1, K, K] -> log-sum-exp over the previous tag -> [B, K]
            new = ops.logsumexp(alpha[:, :, None] + transitions[None], axis=1) + emission
            alpha = ops.where(keep[:, None] > 0, new, alpha)        # padding: unchanged
            return alpha, None

        # positions first: [B, T, K] -> [T, B, K]
        xs = (ops.transpose(emissions[:, 1:], (1, 0, 2)), ops.transpose(mask[:, 1:]))
        alpha, _ = ops.scan(step, emissions[:, 0], xs)
        return ops.logsumexp(alpha, axis=-1)

    def loss(self, y_true, y_pred):
        """Negative log-likelihood of the gold paths ``y_true`` ``[B, T]`` (padded with -1)
        given the emissions ``y_pred``: ``log Z - score(gold)``, one value a sentence."""
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:2]), "int32")
        mask = ops.cast(y_true >= 0, "float32")
        emissions = ops.cast(y_pred, "float32")
        return self.log_partition(emissions, mask) - self.path_score(emissions, y_true, mask)

    def decode(self, emissions, mask=None):
        """The best tag path of each sentence, ``[B, T]`` int32 (-1 at padding): batched
        Viterbi with back-pointers, in Keras ops.

        Args:
            emissions: ``[B, T, K]`` tag scores (``model.predict``'s output).
            mask: ``[B, T]``, 1 at real tokens (padding last); default: all real.
        """
        emissions = ops.cast(ops.convert_to_tensor(emissions), "float32")
        if mask is None:
            mask = ops.ones(ops.shape(emissions)[:2], "float32")
        mask = ops.cast(ops.convert_to_tensor(mask), "float32")
        transitions = self.transitions
        tags = ops.shape(emissions)[-1]

        def forward(score, inputs):
            emission, keep = inputs
            candidates = score[:, :, None] + transitions[None]          # [B, K, K]
            best = ops.cast(ops.argmax(candidates, axis=1), "int32")     # [B, K]
            new = ops.max(candidates, axis=1) + emission
            stay = ops.broadcast_to(ops.arange(tags, dtype="int32")[None], ops.shape(best))
            keep = keep[:, None] > 0
            # As float32: Keras's TensorFlow scan stacks outputs in the inputs' dtype.
            return ops.where(keep, new, score), ops.cast(ops.where(keep, best, stay), "float32")

        xs = (ops.transpose(emissions[:, 1:], (1, 0, 2)), ops.transpose(mask[:, 1:]))
        score, pointers = ops.scan(forward, emissions[:, 0], xs)        # pointers [T-1, B, K]
        pointers = ops.cast(pointers, "int32")
        last = ops.cast(ops.argmax(score, axis=-1), "int32")             # [B]

        def backward(tag, pointer):
            previous = ops.take_along_axis(pointer, tag[:, None], axis=1)[:, 0]
            return previous, tag

        first, later = ops.scan(backward, last, pointers, reverse=True)  # later [T-1, B]
        path = ops.concatenate([first[None], later], axis=0)             # [T, B]
        path = ops.transpose(path)
        return ops.where(mask > 0, path, -1)


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
        self.dense = keras.layers.Dense(head_size * 2, kernel_initializer=self.kernel_initializer,
                                        dtype=self.dtype_policy)
        self.bias_dense = keras.layers.Dense(heads * 2, kernel_initializer=self.kernel_initializer,
                                             dtype=self.dtype_policy)

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
