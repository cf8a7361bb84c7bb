"""Task heads: layers that turn the encoder's outputs into a task's predictions.

A head is a Keras layer that receives the encoder's output (the sequence ``[B, T, H]``,
or the pooled vector ``[B, H]`` of ``build_transformer_model(with_pool=True)``) and a
padding mask ``[B, T]`` (1 at real tokens). :meth:`TaskHead.attach` puts a head on top
of an encoder and returns the whole model, inputs ``[Input-Token, Input-Segment]``.

Writing a new head takes a ``build`` and a ``call``:

>>> @keras.saving.register_keras_serializable(package='my_project')
... class TokenTaggingHead(TaskHead):
...     '''Per-token labels, e.g. for named entities: [B, T, H] -> [B, T, num_tags].'''
...     def __init__(self, num_tags, **kwargs):
...         super().__init__(**kwargs)
...         self.num_tags = num_tags
...     def build(self, input_shape):
...         self.dense = keras.layers.Dense(self.num_tags, activation='softmax', dtype='float32')
...         self.dense.build(input_shape)
...     def call(self, inputs, padding_mask=None, training=None):
...         return self.dense(inputs)
...     def get_config(self):
...         return {**super().get_config(), 'num_tags': self.num_tags}
>>> model = TokenTaggingHead(9).attach(build_transformer_model(config, checkpoint))
"""
import keras
from keras import ops

__all__ = ["TaskHead", "masked_mean", "ClassificationHead"]


class TaskHead(keras.layers.Layer):
    """Base class of task heads.

    Subclasses implement ``call(self, inputs, padding_mask=None, training=None)``, where
    ``inputs`` is the encoder's output and ``padding_mask`` is ``[B, T]`` float (1 for
    real tokens, 0 for padding), plus ``build`` and ``get_config`` as any Keras layer.
    """

    def attach(self, encoder, name=None):
        """Applies the head to ``encoder``'s output; returns the end-to-end Keras model.

        Args:
            encoder: a model from ``build_transformer_model`` with one output.
            name: the new model's name (defaults to the encoder's plus the head's).
        """
        if isinstance(encoder.output, (list, tuple)):
            raise ValueError(
                f"{type(self).__name__}.attach needs an encoder with one output; "
                f"{encoder.name!r} has {len(encoder.output)} (build it without extra heads)"
            )
        mask = _padding_mask(encoder)
        outputs = self(encoder.output, padding_mask=mask)
        return keras.Model(encoder.inputs, outputs, name=name or f"{encoder.name}_{self.name}")

    def call(self, inputs, padding_mask=None, training=None):
        raise NotImplementedError(f"{type(self).__name__} must implement call()")


def _padding_mask(encoder):
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


@keras.saving.register_keras_serializable(package="bertkit")
class ClassificationHead(TaskHead):
    """Sentence classification: dropout then a softmax layer over a sentence vector.

    Args:
        num_classes: number of labels.
        pooling: the sentence vector. ``'cls'``: the ``[CLS]`` hidden state;
            ``'pooler'``: BERT's pretrained pooler output (build the encoder with
            ``with_pool=True``); ``'mean'``: the mean over real tokens.
        dropout_rate: dropout on the sentence vector during training.
        kernel_initializer: initializer of the output layer.

    Returns (when called): class probabilities ``[B, num_classes]``, in float32.

    Example:

    >>> encoder = build_transformer_model(config, checkpoint, with_pool=True)
    >>> model = ClassificationHead(2, pooling='pooler').attach(encoder)
    >>> model.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])
    """

    POOLINGS = ("cls", "pooler", "mean")

    def __init__(self, num_classes, pooling="cls", dropout_rate=0.1,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout_rate = dropout_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                             kernel_initializer=self.kernel_initializer,
                                             name="classifier")

    def build(self, input_shape):
        expected_rank = 2 if self.pooling == "pooler" else 3
        if len(input_shape) != expected_rank:
            hint = ("build the encoder with with_pool=True" if self.pooling == "pooler"
                    else "build the encoder without with_pool")
            raise ValueError(f"pooling={self.pooling!r} expects a rank-{expected_rank} encoder "
                             f"output, got shape {tuple(input_shape)}: {hint}")
        self.classifier.build((input_shape[0], input_shape[-1]))

    def call(self, inputs, padding_mask=None, training=None):
        if self.pooling == "cls":
            vector = inputs[:, 0]
        elif self.pooling == "mean":
            if padding_mask is None:
                padding_mask = ops.ones(ops.shape(inputs)[:2])
            vector = masked_mean(inputs, padding_mask)
        else:
            vector = inputs
        return self.classifier(self.dropout(vector, training=training))

    def compute_output_spec(self, inputs, padding_mask=None, training=None):
        return keras.KerasTensor((inputs.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, pooling=self.pooling,
                      dropout_rate=self.dropout_rate,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
