"""The linear-chain conditional random field: tag transitions, the sequence
log-likelihood over padded batches and batched Viterbi decoding.

The loss is the negative sequence log-likelihood (the forward algorithm, in Keras ops)
and the decoding the best path (in TensorFlow ops, so that it exports to ONNX): each a
scan over positions, never a Python loop over the batch. Tags padded with -1 mark padded
positions, so the loss needs no separate mask input. :class:`bertkit.CRFTaggingHead` puts
it on an encoder.
"""
import keras
import tensorflow as tf
from keras import ops

__all__ = ["ConditionalRandomField"]


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
            emission, keep = inputs[:, :-1], inputs[:, -1:]          # [B, K], [B, 1]
            # [B, K, 1] + [1, K, K] -> log-sum-exp over the previous tag -> [B, K]
            new = ops.logsumexp(alpha[:, :, None] + transitions[None], axis=1) + emission
            alpha = ops.where(keep > 0, new, alpha)                  # padding: unchanged
            return alpha, alpha  # TensorFlow's scan needs a per-step output (unused)

        alpha, _ = ops.scan(step, emissions[:, 0], _positions_first(emissions, mask))
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
        Viterbi with back-pointers, a scan over positions (never a loop over the batch).

        Written with TensorFlow's ``tf.scan`` rather than ``keras.ops.scan``, so that an
        exported decoder converts to ONNX: Keras's TensorFlow scan keeps its carry in a
        one-element ``TensorArray`` that tf2onnx cannot convert, and tf2onnx mis-converts
        reverse scans, so the backward pass scans reversed pointers forward.

        Args:
            emissions: ``[B, T, K]`` tag scores (``model.predict``'s output).
            mask: ``[B, T]``, 1 at real tokens (padding last); default: all real.
        """
        emissions = tf.cast(tf.convert_to_tensor(emissions), tf.float32)
        if mask is None:
            mask = tf.ones(tf.shape(emissions)[:2], tf.float32)
        mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
        transitions = tf.convert_to_tensor(self.transitions)
        tags = tf.shape(emissions)[-1]

        def forward(carry, inputs):
            score, _ = carry
            emission, keep = inputs[:, :-1], inputs[:, -1:] > 0        # [B, K], [B, 1]
            candidates = score[:, :, None] + transitions[None]           # [B, K, K]
            best, top = _argmax_and_max(candidates, axis=1)              # [B, K] each
            stay = tf.broadcast_to(tf.range(tags)[None], tf.shape(best))
            return tf.where(keep, top + emission, score), tf.where(keep, best, stay)

        first = emissions[:, 0]
        scores, pointers = tf.scan(forward, _positions_first(emissions, mask),
                                   initializer=(first, tf.zeros_like(first, tf.int32)))
        final = tf.concat([first[None], scores], axis=0)[-1]            # [B, K]
        last, _ = _argmax_and_max(final, axis=-1)                        # [B]

        def backward(tag, pointer):                                      # [B], [B, K]
            return tf.gather(pointer, tag[:, None], batch_dims=1)[:, 0]

        # pointers[t] holds, per tag at position t + 1, the best tag at t: [T-1, B, K].
        earlier = tf.reverse(tf.scan(backward, tf.reverse(pointers, [0]), initializer=last),
                             [0])                                        # [T-1, B]
        path = tf.transpose(tf.concat([earlier, last[None]], axis=0))    # [B, T]
        return tf.where(mask > 0, path, -1)


def _argmax_and_max(x, axis):
    """The first index of the maximum along ``axis`` (int32) and the maximum.

    Written with comparisons instead of ``argmax``, whose Keras TensorFlow form bit-casts
    floats (to order -0.0 before 0.0): ONNX has no such ops, so the Viterbi decoder would
    not export.
    """
    top = tf.reduce_max(x, axis=axis, keepdims=True)
    size = tf.shape(x)[axis]
    shape = [1] * len(x.shape)
    shape[axis] = -1
    index = tf.reshape(tf.range(size), shape)
    first = tf.reduce_min(tf.where(x == top, index, size), axis=axis)
    return first, tf.squeeze(top, axis=axis)


def _positions_first(emissions, mask):
    """Positions 1.. of the emissions and the mask as one ``[T-1, B, K+1]`` tensor to scan
    over (one tensor: Keras's TensorFlow scan fails on several with an unknown length)."""
    packed = ops.concatenate([emissions[:, 1:], mask[:, 1:, None]], axis=-1)
    return ops.transpose(packed, (1, 0, 2))
