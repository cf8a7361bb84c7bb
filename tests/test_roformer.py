"""RoFormer v1 and v2 (rotary positions, v2 bias-free with RMS norm) against numpy in float64."""
import math
import os
import re

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401  (registers the layers for load_model)
from bertkit.models import build_transformer_model
from conftest import TINY_CONFIG, write_google_checkpoint

CONFIGS = {"roformer": dict(TINY_CONFIG), "roformer_v2": dict(TINY_CONFIG, hidden_act="relu")}
FAMILIES = pytest.mark.parametrize("family", ["roformer", "roformer_v2"])
_erf = np.vectorize(math.erf)
TOKEN_IDS = np.array([[2, 7, 9, 11, 3, 15, 21, 8, 3], [2, 5, 33, 12, 3, 0, 0, 0, 0]])
SEGMENT_IDS = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]])
KEEP = TOKEN_IDS > 0
DENSES = ("attention/self/query", "attention/self/key", "attention/self/value",
          "attention/output/dense", "intermediate/dense", "output/dense")


def roformer_weights(family, seed=0):
    """The published variables, std 0.2 (gammas near 1); v2 has kernels and embeddings only."""
    config, v2 = CONFIGS[family], family == "roformer_v2"
    h, i = config["hidden_size"], config["intermediate_size"]
    shapes = {"bert/embeddings/word_embeddings": (config["vocab_size"], h),
              "bert/embeddings/token_type_embeddings": (config["type_vocab_size"], h)}
    if not v2:
        shapes.update({"bert/embeddings/LayerNorm/gamma": (h,), "bert/pooler/dense/bias": (h,),
                       "bert/embeddings/LayerNorm/beta": (h,), "bert/pooler/dense/kernel": (h, h),
                       "cls/predictions/output_bias": (config["vocab_size"],)})
    for n in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{n}/"
        for name, shape in zip(DENSES, [(h, h)] * 4 + [(h, i), (i, h)]):
            shapes[f"{p}{name}/kernel"] = shape
            if not v2:
                shapes[f"{p}{name}/bias"] = shape[1:]
        for norm in () if v2 else ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}{norm}/gamma"] = shapes[f"{p}{norm}/beta"] = (h,)
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(0, 0.2, v) + k.endswith("gamma")).astype("float32")
            for k, v in shapes.items()}


def norm(x, w, name, eps=1e-12):
    """Google's LayerNorm when ``name/gamma`` exists (v1); parameter-free RMS norm otherwise."""
    if name + "/gamma" not in w:
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * w[name + "/gamma"] + w[
        name + "/beta"]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def rotary(x):
    """Rotates pairs (2m, 2m + 1) of [..., T, D] at position t by t * 10000^(-2m/D)."""
    t, d = x.shape[-2:]
    angle = np.arange(t)[:, None] * 10000.0 ** (-2 * np.arange(d // 2)[None] / d)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(angle) - odd * np.sin(angle)
    out[..., 1::2] = odd * np.cos(angle) + even * np.sin(angle)
    return out


def numpy_roformer(w, config, ids, segs):
    """Last hidden states [B, T, H] in float64; biases and norms as the weights hold them."""
    w = {name: v.astype("float64") for name, v in w.items()}
    act = {"gelu": lambda v: 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))),
           "relu": lambda v: np.maximum(v, 0.0)}[config["hidden_act"]]
    b, t = ids.shape
    heads = config["num_attention_heads"]
    e = "bert/embeddings/"
    x = w[e + "word_embeddings"][ids] + w[e + "token_type_embeddings"][segs]
    x = norm(x, w, "bert/embeddings/LayerNorm")
    mask = (ids[:, None, None, :] == 0) * -10000.0
    for n in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{n}/"
        dense = lambda v, name: v @ w[f"{p}{name}/kernel"] + w.get(f"{p}{name}/bias", 0.0)  # noqa
        q, k, v = (dense(x, name).reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
                   for name in DENSES[:3])
        q, k = rotary(q), rotary(k)
        probs = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + mask)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        x = norm(x + dense(context, DENSES[3]), w, p + "attention/output/LayerNorm")
        x = norm(x + dense(act(dense(x, DENSES[4])), DENSES[5]), w, p + "output/LayerNorm")
    return x


def build(tmp_path, family, weights):
    prefix = write_google_checkpoint(str(tmp_path / family), CONFIGS[family], weights)
    config_path = os.path.join(os.path.dirname(prefix), "bert_config.json")
    return build_transformer_model(config_path, prefix, model=family)


def test_reference_rotary_is_a_relative_rotation():
    """Self-check of the reference: norms kept, q(s).k(t) depends only on t - s."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(1, 8)), rng.normal(size=(1, 8))
    rq, rk = rotary(np.repeat(q, 12, 0)), rotary(np.repeat(k, 12, 0))
    np.testing.assert_allclose(np.linalg.norm(rq, axis=-1), np.linalg.norm(q), rtol=1e-12)
    dots = rq @ rk.T
    for shift in (-3, 0, 2, 5):
        np.testing.assert_allclose(np.diagonal(dots, shift), dots[max(-shift, 0), max(shift, 0)])


@FAMILIES
def test_hidden_states_match_numpy_reference(tmp_path, family):
    """Padded batch of lengths 9 and 5, segments 0/1: equal on the real positions."""
    weights = roformer_weights(family, seed=1)
    model = build(tmp_path, family, weights)
    out = model.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0)
    expected = numpy_roformer(weights, CONFIGS[family], TOKEN_IDS, SEGMENT_IDS)
    np.testing.assert_allclose(out[KEEP], expected[KEEP], atol=1e-5)
    assert "Embedding-Position" not in [layer.name for layer in model.layers]


def test_v2_has_no_bias_or_norm_weights(tmp_path):
    """RoFormer-v2's model holds kernels and embeddings only."""
    model = build(tmp_path, "roformer_v2", roformer_weights("roformer_v2", seed=2))
    names = [weight.path for weight in model.weights]
    assert names and all(name.endswith(("kernel", "embeddings")) for name in names), names


@FAMILIES
def test_keras_round_trip_gives_identical_outputs(tmp_path, family):
    """``model.save`` then ``keras.models.load_model``: the very same outputs."""
    model = build(tmp_path, family, roformer_weights(family, seed=3))
    expected = model.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(reloaded.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0), expected)


@FAMILIES
def test_missing_variable_is_named(tmp_path, family):
    """A checkpoint without one of the encoder's variables: ValueError naming it."""
    weights = roformer_weights(family, seed=4)
    missing = "bert/encoder/layer_1/intermediate/dense/kernel"
    del weights[missing]
    with pytest.raises(ValueError, match=re.escape(missing)):
        build(tmp_path, family, weights)
