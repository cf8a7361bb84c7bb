"""Sequence labelling: a linear-chain conditional random field over tag scores.

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
