"""NEZHA (functional relative positions on keys and values) against a float64 numpy pass."""
import functools
import math
import os
import re

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401  (registers the layers for load_model)
from bertkit.models import build_transformer_model
import test_models as numpy_bert_parts
from conftest import TINY_CONFIG, write_google_checkpoint

CONFIG = dict(TINY_CONFIG, max_relative_position=4)  # |j - i| reaches 8: clipped at 4
TOKEN_IDS = np.array([[2, 7, 9, 11, 3, 15, 21, 8, 3], [2, 5, 33, 12, 3, 0, 0, 0, 0]])
SEGMENT_IDS = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]])
KEEP = TOKEN_IDS > 0


def nezha_weights(config, seed=0):
    """BERT's ``bert/...`` variables without position embeddings, std 0.2 (gammas near 1)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    shapes = {"bert/embeddings/word_embeddings": (config["vocab_size"], h),
              "bert/embeddings/token_type_embeddings": (config["type_vocab_size"], h),
              "bert/embeddings/LayerNorm/gamma": (h,), "bert/embeddings/LayerNorm/beta": (h,),
              "bert/pooler/dense/kernel": (h, h), "bert/pooler/dense/bias": (h,)}
    for n in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{n}/"
        for name, (a, b) in {"attention/self/query": (h, h), "attention/self/key": (h, h),
                             "attention/self/value": (h, h), "attention/output/dense": (h, h),
                             "intermediate/dense": (h, i), "output/dense": (i, h)}.items():
            shapes[f"{p}{name}/kernel"], shapes[f"{p}{name}/bias"] = (a, b), (b,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}{norm}/gamma"] = shapes[f"{p}{norm}/beta"] = (h,)
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(0, 0.2, v) + k.endswith("gamma")).astype("float32")
            for k, v in shapes.items()}


# The float64 pieces of the BERT reference (erf GELU, layer norm, softmax).
gelu = functools.partial(numpy_bert_parts.gelu, approximate=False)
layer_norm, softmax = numpy_bert_parts.layer_norm, numpy_bert_parts.softmax


def relative_positions(t, k, d):
    """R[i, j] = table[clip(j - i, -k, k) + k], table rows sin/cos of the row index: [t, t, d]."""
    rows = np.arange(2 * k + 1)[:, None] / 10000.0 ** (2 * np.arange(d // 2)[None] / d)
    table = np.zeros((2 * k + 1, d))
    table[:, 0::2], table[:, 1::2] = np.sin(rows), np.cos(rows)
    return table[np.clip(np.arange(t)[None, :] - np.arange(t)[:, None], -k, k) + k]


def numpy_nezha(w, config, ids, segs, k):
    """NEZHA's last hidden states [B, T, H] in float64, relative window k."""
    w = {name: v.astype("float64") for name, v in w.items()}
    b, t = ids.shape
    heads = config["num_attention_heads"]
    r = relative_positions(t, k, config["hidden_size"] // heads)
    e = "bert/embeddings/"
    x = w[e + "word_embeddings"][ids] + w[e + "token_type_embeddings"][segs]
    x = layer_norm(x, w["bert/embeddings/LayerNorm/gamma"], w["bert/embeddings/LayerNorm/beta"])
    mask = (ids[:, None, None, :] == 0) * -10000.0
    for n in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{n}/"
        dense = lambda v, name: v @ w[f"{p}{name}/kernel"] + w[f"{p}{name}/bias"]  # noqa: E731
        q, key, v = (dense(x, f"attention/self/{m}").reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
                     for m in ("query", "key", "value"))
        scores = q @ key.transpose(0, 1, 3, 2) + np.einsum("bnid,ijd->bnij", q, r)
        probs = softmax(scores / math.sqrt(q.shape[-1]) + mask)
        context = probs @ v + np.einsum("bnij,ijd->bnid", probs, r)
        x = layer_norm(x + dense(context.transpose(0, 2, 1, 3).reshape(b, t, -1),
                                 "attention/output/dense"),
                       w[p + "attention/output/LayerNorm/gamma"],
                       w[p + "attention/output/LayerNorm/beta"])
        x = layer_norm(x + dense(gelu(dense(x, "intermediate/dense")), "output/dense"),
                       w[p + "output/LayerNorm/gamma"], w[p + "output/LayerNorm/beta"])
    return x


def write(tmp_path, config, weights, extra=None):
    """(config path, checkpoint prefix) of a checkpoint written as Google's TF1 code does."""
    prefix = write_google_checkpoint(str(tmp_path / "nezha"), config, weights, extra)
    return os.path.join(os.path.dirname(prefix), "bert_config.json"), prefix


def check(config, weights, paths, k):
    model = build_transformer_model(*paths, model="nezha")
    expected = numpy_nezha(weights, config, TOKEN_IDS, SEGMENT_IDS, k)
    out = model.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0)
    np.testing.assert_allclose(out[KEEP], expected[KEEP], atol=1e-5)
    return model


def test_hidden_states_match_numpy_reference_with_clipping(tmp_path):
    """K = 4 on 9 positions: relative distances clipped; no Embedding-Position layer."""
    weights = nezha_weights(CONFIG, seed=1)
    model = check(CONFIG, weights, write(tmp_path, CONFIG, weights), k=4)
    assert "Embedding-Position" not in [layer.name for layer in model.layers]


def test_adam_slots_are_ignored(tmp_path):
    """A pretraining checkpoint with ``adam_m``/``adam_v`` for every variable loads as is."""
    weights = nezha_weights(CONFIG, seed=2)
    rng = np.random.default_rng(3)
    extra = {f"{name}/{slot}": rng.normal(size=v.shape).astype("float32")
             for name, v in weights.items() for slot in ("adam_m", "adam_v")}
    extra["global_step"] = np.int64(100)
    check(CONFIG, weights, write(tmp_path, CONFIG, weights, extra), k=4)


def test_absent_max_relative_position_means_64(tmp_path):
    """Without the key the window is 64, whose table rows (and outputs) differ from K = 4."""
    config = {key: v for key, v in CONFIG.items() if key != "max_relative_position"}
    weights = nezha_weights(config, seed=4)
    check(config, weights, write(tmp_path, config, weights), k=64)
    assert not np.allclose(numpy_nezha(weights, config, TOKEN_IDS, SEGMENT_IDS, 4),
                           numpy_nezha(weights, config, TOKEN_IDS, SEGMENT_IDS, 64), atol=1e-2)


def test_keras_round_trip_gives_identical_outputs(tmp_path):
    """``model.save`` then ``keras.models.load_model``: the very same outputs."""
    weights = nezha_weights(CONFIG, seed=5)
    model = build_transformer_model(*write(tmp_path, CONFIG, weights), model="nezha")
    expected = model.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(reloaded.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0), expected)


def test_missing_variable_is_named(tmp_path):
    """A checkpoint without one of the encoder's variables: ValueError naming it."""
    weights = nezha_weights(CONFIG, seed=6)
    missing = "bert/encoder/layer_0/attention/self/key/kernel"
    del weights[missing]
    with pytest.raises(ValueError, match=re.escape(missing)):
        build_transformer_model(*write(tmp_path, CONFIG, weights), model="nezha")
