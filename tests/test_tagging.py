"""The CRF against brute-force enumeration of every tag path, padding included."""
import itertools

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401
from bertkit.tasks.tagging import ConditionalRandomField

RNG = np.random.default_rng(0)
B, T, K = 3, 4, 3
EMISSIONS = RNG.normal(size=(B, T, K)).astype("float32")
TRANSITIONS = RNG.normal(size=(K, K)).astype("float32")
LENGTHS = [4, 2, 1]  # padding at the end of the second and third sentence


def crf(lr_multiplier=1.0):
    layer = ConditionalRandomField(lr_multiplier=lr_multiplier)
    layer.build((None, None, K))
    layer.stored_transitions.assign(TRANSITIONS / lr_multiplier)
    return layer


def brute_force(b):
    """Every path of sentence b: ``{path: score}``, scored by hand."""
    n = LENGTHS[b]
    scores = {}
    for path in itertools.product(range(K), repeat=n):
        score = sum(float(EMISSIONS[b, t, path[t]]) for t in range(n))
        score += sum(float(TRANSITIONS[path[t - 1], path[t]]) for t in range(1, n))
        scores[path] = score
    return scores


def test_loss_is_the_negative_log_likelihood_of_the_gold_path():
    gold = np.full((B, T), -1)
    expected = []
    for b in range(B):
        scores = brute_force(b)
        path = list(scores)[(7 * b + 1) % len(scores)]
        gold[b, :LENGTHS[b]] = path
        log_z = np.log(np.sum(np.exp(np.array(list(scores.values()), "float64"))))
        expected.append(log_z - scores[path])
    for multiplier in (1.0, 100.0):  # the stored value is scaled, the scores are not
        loss = keras.ops.convert_to_numpy(crf(multiplier).loss(gold, EMISSIONS))
        np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_viterbi_finds_the_best_path_under_padding():
    mask = (np.arange(T)[None] < np.array(LENGTHS)[:, None]).astype("float32")
    paths = keras.ops.convert_to_numpy(crf().decode(EMISSIONS, mask))
    for b in range(B):
        scores = brute_force(b)
        best = max(scores, key=scores.get)
        assert tuple(paths[b, :LENGTHS[b]]) == best
        assert (paths[b, LENGTHS[b]:] == -1).all()


def test_the_layer_trains_its_transitions_and_round_trips():
    inputs = keras.Input((None, 4))
    layer = ConditionalRandomField(lr_multiplier=10, name="CRF")
    model = keras.Model(inputs, layer(keras.layers.Dense(K)(inputs)))
    model.compile("adam", loss=layer.loss)
    x = RNG.normal(size=(2, T, 4)).astype("float32")
    y = np.array([[0, 1, 2, -1], [2, 2, -1, -1]])
    before = keras.ops.convert_to_numpy(layer.transitions)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(before, keras.ops.convert_to_numpy(layer.transitions))
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.lr_multiplier == 10
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        ConditionalRandomField(lr_multiplier=0)


def rotate(x):
    """RoFormer's rotation of ``[B, T, ..., D]`` by position, in float64 numpy."""
    t, d = x.shape[1], x.shape[-1]
    angles = np.arange(t)[:, None] * 10000.0 ** (-np.arange(0, d, 2) / d)   # [T, D/2]
    shape = (1, t) + (1,) * (x.ndim - 3) + (d,)
    sin = np.repeat(np.sin(angles), 2, axis=-1).reshape(shape)
    cos = np.repeat(np.cos(angles), 2, axis=-1).reshape(shape)
    turned = np.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
    return x * cos + turned * sin


def span_masks(logits, mask):
    pair = mask[:, None, :, None] * mask[:, None, None, :]
    upper = np.triu(np.ones(logits.shape[-2:]))
    return logits - (1 - pair * upper) * 1e12


def test_global_pointers_against_numpy():
    from bertkit.tasks.tagging import EfficientGlobalPointer, GlobalPointer

    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], "float32")
    heads, size = 3, 4
    layer = GlobalPointer(heads, size)
    actual = keras.ops.convert_to_numpy(layer(x, padding_mask=mask))
    kernel, bias = (w.astype("float64") for w in layer.dense.get_weights())
    h = (x @ kernel + bias).reshape(2, 5, heads, 2 * size)
    q, k = rotate(h[..., :size]), rotate(h[..., size:])
    expected = span_masks(np.einsum("bmnd,bknd->bnmk", q, k) / size ** 0.5, mask)
    real = expected > -1e11
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-5)
    assert (actual[~real] < -1e11).all()

    layer = EfficientGlobalPointer(heads, size)
    actual = keras.ops.convert_to_numpy(layer(x, padding_mask=mask))
    kernel, bias = (w.astype("float64") for w in layer.dense.get_weights())
    h = x @ kernel + bias
    q, k = rotate(h[..., ::2]), rotate(h[..., 1::2])
    b_kernel, b_bias = (w.astype("float64") for w in layer.bias_dense.get_weights())
    type_bias = ((h @ b_kernel + b_bias) / 2).transpose(0, 2, 1)             # [B, 2N, T]
    logits = (np.einsum("bmd,bkd->bmk", q, k) / size ** 0.5)[:, None] \
        + type_bias[:, ::2, :, None] + type_bias[:, 1::2, None, :]
    expected = span_masks(logits, mask)
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-5)


def test_multilabel_categorical_crossentropy_against_its_formula():
    from bertkit.tasks.tagging import global_pointer_loss, multilabel_categorical_crossentropy

    scores = RNG.normal(size=(4, 6))
    labels = (RNG.random((4, 6)) < 0.3).astype("float32")
    expected = [np.log1p(np.exp(s[y == 0]).sum()) + np.log1p(np.exp(-s[y == 1]).sum())
                for s, y in zip(scores, labels)]
    actual = keras.ops.convert_to_numpy(multilabel_categorical_crossentropy(labels, scores))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    spans = RNG.normal(size=(2, 3, 4, 4)).astype("float32")
    gold = (RNG.random((2, 3, 4, 4)) < 0.2).astype("float32")
    per_type = keras.ops.convert_to_numpy(multilabel_categorical_crossentropy(
        gold.reshape(6, 16), spans.reshape(6, 16))).reshape(2, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(global_pointer_loss(gold, spans)),
                               per_type.mean(axis=1), rtol=1e-5)


def test_a_global_pointer_model_trains_and_round_trips(tmp_path):
    from bertkit.tasks.tagging import EfficientGlobalPointer, global_pointer_loss

    inputs, mask = keras.Input((None, 8)), keras.Input((None,))
    model = keras.Model([inputs, mask], EfficientGlobalPointer(2, 4)(inputs, padding_mask=mask))
    model.compile("adam", loss=global_pointer_loss)
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    m = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], "float32")
    y = np.zeros((2, 2, 5, 5), "float32")
    y[0, 1, 1, 3] = y[1, 0, 0, 0] = 1
    history = model.fit([x, m], y, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(str(tmp_path / "gp.keras"))
    again = keras.models.load_model(str(tmp_path / "gp.keras"), compile=False)
    np.testing.assert_array_equal(again.predict([x, m], verbose=0),
                                  model.predict([x, m], verbose=0))
