"""The model builder against an independent numpy BERT/ALBERT written from Google's code."""
import math
import os

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401  (registers the layers for load_model)
from bertkit.models import (attention_model, build_transformer_model, intermediate_model,
                            reinitialize_top_blocks)
from conftest import TINY_CONFIG

_erf = np.vectorize(math.erf)


def gelu(x, approximate):
    if approximate:  # Google's modeling.py
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def numpy_bert(w, config, token_ids, segment_ids, albert=False):
    """Google's BERT/ALBERT forward pass in float64 numpy, straight from variable names."""
    w = {k: v.astype("float64") for k, v in w.items()}
    act = lambda x: gelu(x, config["hidden_act"] == "gelu_tanh")  # noqa: E731
    heads = config["num_attention_heads"]
    b, t = token_ids.shape
    x = (w["bert/embeddings/word_embeddings"][token_ids]
         + w["bert/embeddings/token_type_embeddings"][segment_ids]
         + w["bert/embeddings/position_embeddings"][:t][None])
    x = layer_norm(x, w["bert/embeddings/LayerNorm/gamma"], w["bert/embeddings/LayerNorm/beta"])
    if albert:
        x = x @ w["bert/encoder/embedding_hidden_mapping_in/kernel"] + w[
            "bert/encoder/embedding_hidden_mapping_in/bias"]
    mask_bias = (1.0 - (token_ids > 0)[:, None, None, :]) * -10000.0
    probs_per_layer = []
    for i in range(config["num_hidden_layers"]):
        if albert:
            p = "bert/encoder/transformer/group_0/inner_group_0/"
            att, n1, fin, fout, n2 = ("attention_1", "LayerNorm", "ffn_1/intermediate/dense",
                                      "ffn_1/intermediate/output/dense", "LayerNorm_1")
        else:
            p = f"bert/encoder/layer_{i}/"
            att, n1, fin, fout, n2 = ("attention", "attention/output/LayerNorm",
                                      "intermediate/dense", "output/dense", "output/LayerNorm")

        def dense(v, name):
            return v @ w[f"{p}{name}/kernel"] + w[f"{p}{name}/bias"]

        def split(v):  # [B, T, H] -> [B, N, T, D]
            return v.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, f"{att}/self/{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + mask_bias
        probs = softmax(scores)
        probs_per_layer.append(probs)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        x = layer_norm(x + dense(context, f"{att}/output/dense"),
                       w[f"{p}{n1}/gamma"], w[f"{p}{n1}/beta"])
        y = dense(act(dense(x, fin)), fout)
        x = layer_norm(x + y, w[f"{p}{n2}/gamma"], w[f"{p}{n2}/beta"])
    pooled = np.tanh(x[:, 0] @ w["bert/pooler/dense/kernel"] + w["bert/pooler/dense/bias"])
    nsp = softmax(pooled @ w["cls/seq_relationship/output_weights"].T
                  + w["cls/seq_relationship/output_bias"])
    m = act(x @ w["cls/predictions/transform/dense/kernel"]
            + w["cls/predictions/transform/dense/bias"])
    m = layer_norm(m, w["cls/predictions/transform/LayerNorm/gamma"],
                   w["cls/predictions/transform/LayerNorm/beta"])
    logits = m @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]
    return {"sequence": x, "pooled": pooled, "nsp": nsp, "mlm": softmax(logits),
            "mlm_logits": logits, "probs": probs_per_layer}


def config_file(prefix):
    return os.path.join(os.path.dirname(prefix), "bert_config.json")


def padded_batch():
    token_ids = np.array([[2, 7, 9, 11, 3, 0, 0], [2, 5, 3, 8, 12, 14, 3], [2, 3, 0, 0, 0, 0, 0]])
    segment_ids = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    return token_ids, segment_ids


def real_positions(token_ids):
    return token_ids > 0


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_bert_outputs_match_numpy_reference(tiny_bert, model_type):
    config, weights, prefix = tiny_bert
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, config, token_ids, segment_ids)
    keep = real_positions(token_ids)

    sequence = build_transformer_model(config_file(prefix), prefix, model=model_type)
    out = sequence.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(out[keep], ref["sequence"][keep], atol=1e-5)

    heads = build_transformer_model(config_file(prefix), prefix, model=model_type,
                                    with_pool=True, with_mlm=True)
    pooled, mlm = heads.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(pooled, ref["pooled"], atol=1e-5)
    np.testing.assert_allclose(mlm[keep], ref["mlm"][keep], atol=1e-5)

    nsp, logits = build_transformer_model(config_file(prefix), prefix, with_nsp=True,
                                          with_mlm="linear").predict([token_ids, segment_ids],
                                                                     verbose=0)
    np.testing.assert_allclose(nsp, ref["nsp"], atol=1e-5)
    np.testing.assert_allclose(logits[keep], ref["mlm_logits"][keep], atol=1e-4)


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_pooled_only_models_compute_the_last_block_for_cls_only(tiny_bert, tiny_albert,
                                                                 model_type):
    config, weights, prefix = tiny_albert if model_type == "albert" else tiny_bert
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, config, token_ids, segment_ids, albert=model_type == "albert")
    last = config["num_hidden_layers"] - 1
    norm = ("Transformer-FeedForward-Norm", last) if model_type == "albert" else (
        f"Transformer-{last}-FeedForward-Norm", 0)
    for kwargs, expected in (({"with_pool": True}, ref["pooled"]),
                             ({"with_nsp": True}, ref["nsp"])):
        model = build_transformer_model(config, prefix, model=model_type, **kwargs)
        np.testing.assert_allclose(model.predict([token_ids, segment_ids], verbose=0),
                                   expected, atol=1e-5)
        # The last block ran on [CLS] alone: [B, 1, H], equal to the reference's row 0.
        cls_state = intermediate_model(model, norm).predict([token_ids, segment_ids], verbose=0)
        assert cls_state.shape == (3, 1, config["hidden_size"])
        np.testing.assert_allclose(cls_state[:, 0], ref["sequence"][:, 0], atol=1e-5)
        probs = attention_model(model, layers=last).predict([token_ids, segment_ids], verbose=0)
        np.testing.assert_allclose(probs, ref["probs"][last][:, :, :1], atol=1e-6)
    whole = build_transformer_model(config, prefix, model=model_type, with_pool=True,
                                    cls_only_last_layer=False)
    states = intermediate_model(whole, norm).predict([token_ids, segment_ids], verbose=0)
    keep = real_positions(token_ids)
    np.testing.assert_allclose(states[keep], ref["sequence"][keep], atol=1e-5)
    with pytest.raises(ValueError, match="cls_only_last_layer=True needs a pooled-only"):
        build_transformer_model(config, with_pool=True, with_mlm=True, cls_only_last_layer=True)


def test_albert_outputs_match_numpy_reference(tiny_albert):
    config, weights, prefix = tiny_albert
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, config, token_ids, segment_ids, albert=True)
    keep = real_positions(token_ids)
    model = build_transformer_model(config, prefix, model="albert", with_nsp=True, with_mlm=True)
    nsp, mlm = model.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(nsp, ref["nsp"], atol=1e-5)
    np.testing.assert_allclose(mlm[keep], ref["mlm"][keep], atol=1e-5)
    # One shared set of transformer weights, whatever the depth.
    names = [layer.name for layer in model.layers if layer.weights]
    assert names.count("Transformer-MultiHeadSelfAttention") == 1
    last = intermediate_model(model, ("Transformer-FeedForward-Norm", 2))
    np.testing.assert_allclose(last.predict([token_ids, segment_ids], verbose=0)[keep],
                               ref["sequence"][keep], atol=1e-5)


def test_appending_padding_leaves_real_positions_unchanged(tiny_bert):
    config, weights, prefix = tiny_bert
    model = build_transformer_model(config, prefix, with_pool=True)
    token_ids, segment_ids = padded_batch()
    short = model.predict([token_ids, segment_ids], verbose=0)
    pad = np.zeros((3, 5), dtype=int)
    longer = model.predict([np.hstack([token_ids, pad]), np.hstack([segment_ids, pad])], verbose=0)
    np.testing.assert_allclose(longer, short, atol=1e-6)


def test_overrides_load_only_the_first_layers(tiny_bert):
    config, weights, prefix = tiny_bert
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, dict(config, num_hidden_layers=1), token_ids, segment_ids)
    model = build_transformer_model(config, prefix, num_hidden_layers=1)
    keep = real_positions(token_ids)
    np.testing.assert_allclose(model.predict([token_ids, segment_ids], verbose=0)[keep],
                               ref["sequence"][keep], atol=1e-5)


def test_intermediate_and_attention_outputs(tiny_bert):
    config, weights, prefix = tiny_bert
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, config, token_ids, segment_ids)
    model = build_transformer_model(config, prefix)
    features = intermediate_model(model, ["Transformer-1-FeedForward-Norm", "Embedding-Norm"])
    last, _ = features.predict([token_ids, segment_ids], verbose=0)
    keep = real_positions(token_ids)
    np.testing.assert_allclose(last[keep], ref["sequence"][keep], atol=1e-5)
    probs = attention_model(model).predict([token_ids, segment_ids], verbose=0)
    assert len(probs) == 2
    for actual, expected in zip(probs, ref["probs"]):
        assert actual.shape == (3, 4, 7, 7)
        by_query = lambda p: p.transpose(0, 2, 1, 3)[keep]  # noqa: E731  [B, T, N, S] rows
        np.testing.assert_allclose(by_query(actual), by_query(expected), atol=1e-6)
    assert np.all(probs[0][0, :, :, 5:] == 0)  # padded keys get no attention
    with pytest.raises(ValueError, match="no layer named 'Nope'"):
        intermediate_model(model, "Nope")
    with pytest.raises(ValueError, match="no layer 5"):
        attention_model(model, layers=5)


def test_builder_object_exposes_layers_by_name():
    builder = build_transformer_model(return_keras_model=False, with_pool=True, **TINY_CONFIG)
    assert builder.config.hidden_size == 32
    assert builder.layer("Pooler-Dense") is builder.model.get_layer("Pooler-Dense")
    with pytest.raises(KeyError, match="no layer named 'MLM-Dense'"):
        builder.layer("MLM-Dense")


@pytest.mark.parametrize("kwargs", [{"with_pool": True, "with_mlm": True}, {},
                                    {"with_pool": True}])
def test_keras_and_weights_h5_round_trips(tmp_path, tiny_bert, kwargs):
    config, weights, prefix = tiny_bert
    model = build_transformer_model(config, prefix, **kwargs)
    token_ids, segment_ids = padded_batch()
    expected = model.predict([token_ids, segment_ids], verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    for a, b in zip(keras.tree.flatten(reloaded.predict([token_ids, segment_ids], verbose=0)),
                    keras.tree.flatten(expected)):
        np.testing.assert_array_equal(a, b)
    model.save_weights(tmp_path / "m.weights.h5")
    fresh = build_transformer_model(config, **kwargs)
    fresh.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(keras.tree.flatten(fresh.predict([token_ids, segment_ids], verbose=0)),
                    keras.tree.flatten(expected)):
        np.testing.assert_array_equal(a, b)


def test_tanh_gelu_and_activation_names():
    from bertkit.layers import FeedForward

    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    for act, approximate in (("gelu", False), ("gelu_tanh", True)):
        layer = FeedForward(5, activation=act)
        out = keras.ops.convert_to_numpy(layer(x))
        w1, b1, w2, b2 = layer.get_weights()
        np.testing.assert_allclose(out, gelu(x @ w1 + b1, approximate) @ w2 + b2, atol=1e-5)


def test_custom_layers_serialize(tiny_bert):
    from bertkit import layers
    from conftest import assert_layer_round_trip

    x = np.random.default_rng(0).normal(size=(2, 5, 32)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "float32")
    assert_layer_round_trip(layers.MultiHeadAttention(4, 8, attention_dropout=0.1), x,
                            attention_mask=mask)
    assert_layer_round_trip(layers.FeedForward(16, activation="gelu_tanh"), x)
    assert_layer_round_trip(layers.PositionEmbedding(10, 32), x)
    assert_layer_round_trip(layers.BiasAdd(), x)
    assert_layer_round_trip(layers.TakeToken(1), x)
    assert_layer_round_trip(layers.TakeToken(0, keepdims=True), x)
    assert_layer_round_trip(layers.MultiHeadAttention(4, 8), x, attention_mask=mask,
                            query=x[:, :2])


def test_bad_inputs_raise_clear_errors(tiny_bert):
    config, _, _ = tiny_bert
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        build_transformer_model(config, model="gpt")
    with pytest.raises(ValueError, match="vocab_size"):
        build_transformer_model(hidden_size=32)
    model = build_transformer_model(config)
    too_long = np.ones((1, config["max_position_embeddings"] + 1), dtype="int32")
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model.predict([too_long, too_long * 0], verbose=0)
    with pytest.raises(ValueError, match="with_mlm"):
        build_transformer_model(config, with_mlm="yes")


def test_reinitialize_top_blocks_starts_only_the_top_blocks_afresh(tiny_bert, tiny_albert):
    config, weights, prefix = tiny_bert
    model = build_transformer_model(config, prefix)
    names = reinitialize_top_blocks(model, 1, initializer_range=0.05, seed=3)
    assert names == [f"Transformer-1-{suffix}" for suffix in (
        "MultiHeadSelfAttention", "MultiHeadSelfAttention-Norm", "FeedForward", "FeedForward-Norm")]
    values = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    # Below the top block: the checkpoint's weights, untouched.
    np.testing.assert_array_equal(values["Embedding-Token/embeddings"],
                                  weights["bert/embeddings/word_embeddings"])
    np.testing.assert_array_equal(values["Transformer-0-FeedForward/output_kernel"],
                                  weights["bert/encoder/layer_0/output/dense/kernel"])
    # The top block: zero biases and betas, unit gammas, kernels drawn afresh from a
    # truncated normal of stddev 0.05 (cut at 2 stddev, so its std is 0.8796 * 0.05).
    top = {k: v for k, v in values.items() if k.startswith("Transformer-1-")}
    kernels = np.concatenate([v.ravel() for k, v in top.items() if k.endswith("kernel")])
    assert kernels.size == 4 * 32 * 32 + 2 * 32 * 48
    assert np.abs(kernels).max() <= 0.1 and abs(kernels.mean()) < 0.003
    assert abs(kernels.std() / (0.8796 * 0.05) - 1) < 0.05
    for key, value in top.items():
        if key.endswith("bias") or key.endswith("beta"):
            np.testing.assert_array_equal(value, 0, err_msg=key)
        elif key.endswith("gamma"):
            np.testing.assert_array_equal(value, 1, err_msg=key)
    assert not np.allclose(top["Transformer-1-FeedForward/output_kernel"],
                           weights["bert/encoder/layer_1/output/dense/kernel"])

    # The model computes with the new weights: Google's forward pass on the checkpoint
    # with layer 1 replaced by them.
    new = dict(weights)
    p = "bert/encoder/layer_1/"
    attention = "Transformer-1-MultiHeadSelfAttention/"
    for name in ("query", "key", "value"):
        new[f"{p}attention/self/{name}/kernel"] = top[f"{attention}{name}_kernel"]
        new[f"{p}attention/self/{name}/bias"] = np.zeros(32)
    new[f"{p}attention/output/dense/kernel"] = top[f"{attention}output_kernel"]
    new[f"{p}intermediate/dense/kernel"] = top["Transformer-1-FeedForward/intermediate_kernel"]
    new[f"{p}output/dense/kernel"] = top["Transformer-1-FeedForward/output_kernel"]
    for name in ("attention/output/dense/bias", "intermediate/dense/bias", "output/dense/bias",
                 "attention/output/LayerNorm/beta", "output/LayerNorm/beta"):
        new[p + name] = np.zeros_like(weights[p + name])
    for name in ("attention/output/LayerNorm/gamma", "output/LayerNorm/gamma"):
        new[p + name] = np.ones_like(weights[p + name])
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(new, config, token_ids, segment_ids)
    keep = real_positions(token_ids)
    np.testing.assert_allclose(model.predict([token_ids, segment_ids], verbose=0)[keep],
                               ref["sequence"][keep], atol=1e-5)

    # The same seed draws the same kernels.
    again = build_transformer_model(config, prefix)
    reinitialize_top_blocks(again, 1, initializer_range=0.05, seed=3)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again.get_layer("Transformer-1-FeedForward").weights[0]),
        top["Transformer-1-FeedForward/intermediate_kernel"])

    for bad in (0, 3, 1.0, True):
        with pytest.raises(ValueError, match=r"count must be an int in \[1, 2\]"):
            reinitialize_top_blocks(model, bad)
    albert = build_transformer_model(tiny_albert[0], tiny_albert[2], model="albert")
    with pytest.raises(ValueError, match="ALBERT"):
        reinitialize_top_blocks(albert, 1)


def _drawn_kernels(model):
    """``{path: values}`` of the model's randomly drawn matrices (kernels, embeddings)."""
    return {w.path: np.asarray(w.numpy(), "float64") for w in model.weights
            if len(w.shape) == 2 and np.any(w.numpy())}


@pytest.mark.parametrize("family", ["bert", "albert", "nezha", "roformer", "electra"])
def test_random_initialisation_draws_every_matrix_on_its_own(family):
    # Google's code draws each variable from its own truncated normal (stddev
    # initializer_range, cut at two standard deviations). One shared Keras initializer
    # instance would draw the same numbers for every weight it fills: an attention layer's
    # query, key, value and output kernels would start as one matrix, and two kernels of
    # different shapes would hold the same numbers in another order.
    keras.utils.set_random_seed(0)
    config = dict(TINY_CONFIG, initializer_range=0.05)
    if family == "electra":
        config["embedding_size"] = 16
    kernels = _drawn_kernels(build_transformer_model(config, model=family, with_mlm=True))
    assert len(kernels) >= 8, sorted(kernels)
    names = sorted(kernels)
    for i, first in enumerate(names):
        a = kernels[first].ravel()
        for second in names[i + 1:]:
            b = kernels[second].ravel()
            n = min(a.size, b.size)
            if n < 500:  # too few values to tell a correlation from chance
                continue
            correlation = np.corrcoef(a[:n], b[:n])[0, 1]
            assert abs(correlation) < 0.25, (first, second, correlation)
    drawn = [v for name, v in kernels.items() if "kernel" in name or "embeddings" in name]
    values = np.concatenate([v.ravel() for v in drawn])
    assert np.abs(values).max() <= 2 * 0.05 + 1e-6
    # the standard deviation of a normal cut at +-2 sigma is 0.8796 sigma
    assert abs(values.std() / 0.05 - 0.8796) < 0.03, values.std()
    # a seeded run draws the same numbers again
    keras.utils.set_random_seed(0)
    again = _drawn_kernels(build_transformer_model(config, model=family, with_mlm=True))
    for name in names:
        np.testing.assert_array_equal(again[name], kernels[name], err_msg=name)
