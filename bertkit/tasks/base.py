"""The task contract: a head is a Keras layer on the encoder's output, and a task is the
``keras.Model`` that :meth:`TaskHead.attach` builds from an encoder and a head.

A head receives the encoder's output (the sequence ``[B, T, H]``, or the pooled vector
``[B, H]`` of ``build_transformer_model(with_pool=True)``), any conditions (extra model
inputs, such as the subject span a triple's object head is asked about) and a padding
mask ``[B, T]`` (1 at real tokens). ``attach`` returns the whole model, inputs
``[Input-Token, Input-Segment, *conditions]``. The loss and the decoding that belong to a
head are its methods or live beside it in its task module, so an example script only
wires data to them; :class:`bertkit.callbacks.Evaluator` scores any task after each
epoch (on the moving-average weights when the optimizer keeps them).

Writing a new head takes a ``build`` and a ``call``:

>>> @keras.saving.register_keras_serializable(package='my_project')
... class TokenScoreHead(TaskHead):
...     '''One score per token: [B, T, H] -> [B, T].'''
...     def build(self, input_shape):
...         self.dense = keras.layers.Dense(1, dtype='float32')
...         self.dense.build(input_shape)
...     def call(self, inputs, padding_mask=None, training=None):
...         return self.dense(inputs)[..., 0]
>>> model = TokenScoreHead().attach(build_transformer_model(config, checkpoint))
"""
import keras
from keras import ops

__all__ = ["TaskHead", "masked_mean", "padding_mask_of"]


class TaskHead(keras.layers.Layer):
    """Base class of task heads.

    Subclasses implement ``call(self, inputs, *conditions, padding_mask=None,
    training=None)``, where ``inputs`` is the encoder's output, ``conditions`` are the
    extra inputs the head takes (none for most heads) and ``padding_mask`` is ``[B, T]``
    float (1 for real tokens, 0 for padding), plus ``build`` and ``get_config`` as any
    Keras layer.
    """

    def attach(self, encoder, conditions=(), name=None):
        """Applies the head to ``encoder``'s output; returns the end-to-end Keras model.

        Args:
            encoder: a model from ``build_transformer_model`` with one output.
            conditions: ``keras.Input`` tensors the head takes after the encoder's output;
                they become the model's last inputs.
            name: the new model's name (defaults to the encoder's plus the head's).
        """
        if isinstance(encoder.output, (list, tuple)):
            raise ValueError(
                f"{type(self).__name__}.attach needs an encoder with one output; "
                f"{encoder.name!r} has {len(encoder.output)} (build it without extra heads)"
            )
        conditions = list(conditions)
        outputs = self(encoder.output, *conditions, padding_mask=padding_mask_of(encoder))
        return keras.Model(list(encoder.inputs) + conditions, outputs,
                           name=name or f"{encoder.name}_{self.name}")

    def call(self, inputs, *conditions, padding_mask=None, training=None):
        raise NotImplementedError(f"{type(self).__name__} must implement call()")

    def serving_outputs(self, outputs, padding_mask):
        """The named outputs of an exported model (:mod:`bertkit.export`), from this
        head's output ``outputs`` and the ``[B, T]`` padding mask (1 at real tokens).

        Written in TensorFlow ops: they become part of the serving graph (SavedModel,
        ONNX, OpenVINO), so a server needs no Python decoding. Heads override this to add
        what a client wants (labels, tag paths, spans); the default names the output
        ``outputs``.

        Returns:
            A dict from output name to tensor.
        """
        return {"outputs": outputs}


def padding_mask_of(encoder):
    """The encoder's padding mask ``[B, T]`` (1 at real tokens): its ``Attention-Mask``
    layer's output, else ``token_ids != 0``."""
    try:
        return encoder.get_layer("Attention-Mask").output
    except ValueError:
        token_ids = encoder.inputs[0]
        return ops.cast(ops.not_equal(token_ids, 0), "float32")


def masked_mean(sequence, padding_mask):
    """Mean over the real tokens of each sequence: ``[B, T, H], [B, T] -> [B, H]``."""
    mask = ops.cast(padding_mask, sequence.dtype)[..., None]
    total = ops.sum(sequence * mask, axis=1)
    count = ops.maximum(ops.sum(mask, axis=1), ops.cast(1, sequence.dtype))
    return total / count
