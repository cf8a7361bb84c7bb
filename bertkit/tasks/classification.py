"""Sentence classification: a softmax over a sentence vector of the encoder.

>>> encoder = build_transformer_model(config, checkpoint, with_pool=True)
>>> model = ClassificationHead(2, pooling='pooler').attach(encoder)
>>> model.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])
"""
import keras
import tensorflow as tf
from keras import ops

from bertkit.tasks.base import TaskHead, masked_mean

__all__ = ["ClassificationHead"]


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

    def serving_outputs(self, outputs, padding_mask):
        """``probabilities`` ``[B, num_classes]`` (float32) and ``label`` ``[B]`` (int32,
        the most probable class)."""
        return {"probabilities": outputs,
                "label": tf.argmax(outputs, axis=-1, output_type=tf.int32)}

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, pooling=self.pooling,
                      dropout_rate=self.dropout_rate,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
