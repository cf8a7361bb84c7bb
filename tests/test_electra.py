"""ELECTRA discriminators (Google's / hfl's names) against a float64 numpy forward pass."""
import functools
import math
import os
import re

import numpy as np
import pytest

import bertkit  # noqa: F401  (registers the layers for load_model)
from bertkit.models import build_transformer_model
import test_models as numpy_bert_parts
from conftest import TINY_CONFIG, write_google_checkpoint

CONFIG = dict(TINY_CONFIG, embedding_size=16)
TOKEN_IDS = np.array([[2, 7, 9, 11, 3, 15, 21, 8, 3], [2, 5, 33, 12, 3, 0, 0, 0, 0]])
SEGMENT_IDS = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]])
KEEP = TOKEN_IDS > 0


def electra_shapes(config):
    """Google's ELECTRA discriminator variables for a config (projection only when E != H)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    e = config.get("embedding_size") or h
    s = {"electra/embeddings/word_embeddings": (config["vocab_size"], e),
         "electra/embeddings/position_embeddings": (config["max_position_embeddings"], e),
         "electra/embeddings/token_type_embeddings": (config.get("type_vocab_size", 2), e),
         "electra/embeddings/LayerNorm/gamma": (e,), "electra/embeddings/LayerNorm/beta": (e,),
         "discriminator_predictions/dense/kernel": (h, h),
         "discriminator_predictions/dense/bias": (h,),
         "discriminator_predictions/dense_1/kernel": (h, 1),
         "discriminator_predictions/dense_1/bias": (1,)}
    if e != h:
        s.update({"electra/embeddings_project/kernel": (e, h),
                  "electra/embeddings_project/bias": (h,)})
    for n in range(config["num_hidden_layers"]):
        p = f"electra/encoder/layer_{n}/"
        for name, (a, b) in {"attention/self/query": (h, h), "attention/self/key": (h, h),
                             "attention/self/value": (h, h), "attention/output/dense": (h, h),
                             "intermediate/dense": (h, i), "output/dense": (i, h)}.items():
            s[f"{p}{name}/kernel"], s[f"{p}{name}/bias"] = (a, b), (b,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            s[f"{p}{norm}/gamma"] = s[f"{p}{norm}/beta"] = (h,)
    return s


def random_weights(shapes, seed=0):
    """Normal values of std 0.2 for everything (gammas around 1), float32."""
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(0, 0.2, v) + k.endswith("gamma")).astype("float32")
            for k, v in shapes.items()}


# The float64 pieces of the BERT reference (erf GELU, layer norm, softmax).
gelu = functools.partial(numpy_bert_parts.gelu, approximate=False)
layer_norm, softmax = numpy_bert_parts.layer_norm, numpy_bert_parts.softmax


def numpy_electra(w, config, ids, segs):
    """(last hidden states [B, T, H], discriminator probabilities [B, T, 1]) in float64."""
    w = {k: v.astype("float64") for k, v in w.items()}
    b, t = ids.shape
    e = "electra/embeddings/"
    x = w[e + "word_embeddings"][ids] + w[e + "token_type_embeddings"][segs]
    x = layer_norm(x + w[e + "position_embeddings"][:t], w[e + "LayerNorm/gamma"],
                   w[e + "LayerNorm/beta"])
    if "electra/embeddings_project/kernel" in w:
        x = x @ w["electra/embeddings_project/kernel"] + w["electra/embeddings_project/bias"]
    heads, mask = config["num_attention_heads"], (ids[:, None, None, :] == 0) * -10000.0
    for n in range(config["num_hidden_layers"]):
        p = f"electra/encoder/layer_{n}/"
        dense = lambda v, name: v @ w[f"{p}{name}/kernel"] + w[f"{p}{name}/bias"]  # noqa: E731
        q, k, v = (dense(x, f"attention/self/{m}").reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
                   for m in ("query", "key", "value"))
        probs = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + mask)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        x = layer_norm(x + dense(context, "attention/output/dense"),
                       w[p + "attention/output/LayerNorm/gamma"],
                       w[p + "attention/output/LayerNorm/beta"])
        x = layer_norm(x + dense(gelu(dense(x, "intermediate/dense")), "output/dense"),
                       w[p + "output/LayerNorm/gamma"], w[p + "output/LayerNorm/beta"])
    d = "discriminator_predictions/"
    logits = gelu(x @ w[d + "dense/kernel"] + w[d + "dense/bias"]) @ w[d + "dense_1/kernel"]
    return x, 1.0 / (1.0 + np.exp(-(logits + w[d + "dense_1/bias"])))


def write(tmp_path, config, weights, extra=None):
    """(config path, checkpoint prefix) of a checkpoint written as Google's TF1 code does."""
    prefix = write_google_checkpoint(str(tmp_path / "electra"), config, weights, extra)
    return os.path.join(os.path.dirname(prefix), "bert_config.json"), prefix


def check_sequence(config, weights, config_path, prefix):
    model = build_transformer_model(config_path, prefix, model="electra")
    out = model.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0)
    expected, _ = numpy_electra(weights, config, TOKEN_IDS, SEGMENT_IDS)
    np.testing.assert_allclose(out[KEEP], expected[KEEP], atol=1e-5)
    return model


def test_hidden_states_match_numpy_reference(tmp_path):
    """Embeddings at width 16, the projection 16 -> 32, then post-LN BERT blocks."""
    weights = random_weights(electra_shapes(CONFIG), seed=1)
    model = check_sequence(CONFIG, weights, *write(tmp_path, CONFIG, weights))
    assert model.get_layer("Embedding-Mapping") is not None
    assert "Embedding-Position" in [layer.name for layer in model.layers]


def test_without_embedding_size_there_is_no_projection(tmp_path):
    """E = H when embedding_size is absent: no Embedding-Mapping, same numerics."""
    config = dict(TINY_CONFIG)
    weights = random_weights(electra_shapes(config), seed=2)
    model = check_sequence(config, weights, *write(tmp_path, config, weights))
    assert "Embedding-Mapping" not in [layer.name for layer in model.layers]


def test_discriminator_gives_sigmoid_probabilities(tmp_path):
    """with_discriminator=True: [B, T, 1] equal to the numpy head; with_pool=True: ValueError."""
    weights = random_weights(electra_shapes(CONFIG), seed=3)
    config_path, prefix = write(tmp_path, CONFIG, weights)
    model = build_transformer_model(config_path, prefix, model="electra", with_discriminator=True)
    probs = model.predict([TOKEN_IDS, SEGMENT_IDS], verbose=0)
    assert probs.shape == (2, 9, 1)
    _, expected = numpy_electra(weights, CONFIG, TOKEN_IDS, SEGMENT_IDS)
    np.testing.assert_allclose(probs[KEEP], expected[KEEP], atol=1e-5)
    with pytest.raises(ValueError):
        build_transformer_model(config_path, prefix, model="electra", with_pool=True)


def test_generator_variables_are_skipped(tmp_path):
    """A full ELECTRA checkpoint (generator + generator_predictions, Adam slots) loads."""
    weights = random_weights(electra_shapes(CONFIG), seed=4)
    rng = np.random.default_rng(5)
    extra = {name: rng.normal(size=shape).astype("float32") for name, shape in {
        "generator/embeddings_project/kernel": (16, 8),
        "generator/encoder/layer_0/attention/self/query/kernel": (8, 8),
        "generator/encoder/layer_0/output/LayerNorm/gamma": (8,),
        "generator_predictions/dense/kernel": (8, 16),
        "generator_predictions/LayerNorm/gamma": (16,),
        "generator_predictions/output_bias": (40,),
        "electra/encoder/layer_0/output/dense/kernel/adam_m": (48, 32)}.items()}
    extra["global_step"] = np.int64(7)
    check_sequence(CONFIG, weights, *write(tmp_path, CONFIG, weights, extra))


def test_config_without_type_vocab_size_defaults_to_two(tmp_path):
    """hfl's configs may omit type_vocab_size: 2 segments, as the checkpoint holds."""
    config = {k: v for k, v in CONFIG.items() if k != "type_vocab_size"}
    weights = random_weights(electra_shapes(config), seed=6)
    assert weights["electra/embeddings/token_type_embeddings"].shape == (2, 16)
    check_sequence(config, weights, *write(tmp_path, config, weights))


def test_missing_variable_is_named(tmp_path):
    """A checkpoint without one of the encoder's variables: ValueError naming it."""
    weights = random_weights(electra_shapes(CONFIG), seed=7)
    missing = "electra/encoder/layer_1/intermediate/dense/bias"
    del weights[missing]
    config_path, prefix = write(tmp_path, CONFIG, weights)
    with pytest.raises(ValueError, match=re.escape(missing)):
        build_transformer_model(config_path, prefix, model="electra")
