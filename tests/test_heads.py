"""Task heads: ClassificationHead numerics, errors, and a user-written head end to end."""
import keras
import numpy as np
import pytest

import bertkit  # noqa: F401
from bertkit.tasks.classification import ClassificationHead, TaskHead
from bertkit.models import build_transformer_model
from conftest import TINY_CONFIG

TOKENS = np.array([[2, 7, 9, 3, 0, 0], [2, 5, 6, 8, 11, 3]])
SEGMENTS = np.zeros_like(TOKENS)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_classification_head_matches_numpy(pooling):
    encoder = build_transformer_model(with_pool=pooling == "pooler", **TINY_CONFIG)
    model = ClassificationHead(3, pooling=pooling, name="Classifier").attach(encoder)
    hidden = encoder.predict([TOKENS, SEGMENTS], verbose=0)
    if pooling == "cls":
        vector = hidden[:, 0]
    elif pooling == "mean":
        mask = (TOKENS > 0)[..., None]
        vector = (hidden * mask).sum(1) / mask.sum(1)
    else:
        vector = hidden
    kernel, bias = model.get_layer("Classifier").get_weights()
    expected = softmax(vector @ kernel + bias)
    np.testing.assert_allclose(model.predict([TOKENS, SEGMENTS], verbose=0), expected, atol=1e-5)


def test_classification_head_errors():
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationHead(1)
    with pytest.raises(ValueError, match="pooling must be one of"):
        ClassificationHead(2, pooling="max")
    with pytest.raises(ValueError, match="with_pool=True"):
        ClassificationHead(2, pooling="pooler").attach(build_transformer_model(**TINY_CONFIG))
    two_outputs = build_transformer_model(with_pool=True, with_mlm=True, **TINY_CONFIG)
    with pytest.raises(ValueError, match="needs an encoder with one output"):
        ClassificationHead(2).attach(two_outputs)


@keras.saving.register_keras_serializable(package="bertkit_tests")
class TokenTaggingHead(TaskHead):
    """Per-token labels; padded positions get a fixed 'O' distribution [1, 0, ...]."""

    def __init__(self, num_tags, **kwargs):
        super().__init__(**kwargs)
        self.num_tags = num_tags
        self.dense = keras.layers.Dense(num_tags, dtype="float32")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs, padding_mask=None, training=None):
        probs = keras.ops.softmax(self.dense(inputs))
        outside = keras.ops.one_hot(keras.ops.zeros_like(padding_mask, "int32"), self.num_tags)
        keep = padding_mask[..., None]
        return probs * keep + outside * (1 - keep)

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags}


def test_user_written_head_trains_and_serializes(tmp_path):
    model = TokenTaggingHead(4).attach(build_transformer_model(**TINY_CONFIG))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    tags = np.where(TOKENS > 0, TOKENS % 4, 0)
    losses = model.fit([TOKENS, SEGMENTS], tags, epochs=15, verbose=0).history["loss"]
    assert losses[-1] < losses[0] * 0.5
    probs = model.predict([TOKENS, SEGMENTS], verbose=0)
    np.testing.assert_array_equal(probs[0, 4:], np.eye(4)[[0, 0]])  # padding is 'O'
    model.save(tmp_path / "tagger.keras")
    reloaded = keras.models.load_model(tmp_path / "tagger.keras")
    np.testing.assert_allclose(reloaded.predict([TOKENS, SEGMENTS], verbose=0), probs, atol=1e-6)
