"""The CRF against brute-force enumeration of every tag path, padding included."""
import itertools

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401
from bertkit.tagging import ConditionalRandomField

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
