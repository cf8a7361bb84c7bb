"""brightmart's early ALBERT-zh names and embedding, a linear pooler, and the family registry."""
import math

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401  (registers the layers for load_model)
from bertkit.models import (BERT, Transformer, build_transformer_model, family_names,
                            get_family, register_family)
from conftest import write_google_checkpoint

CONFIG = {"vocab_size": 30, "embedding_size": 8, "hidden_size": 16, "num_hidden_layers": 3,
          "num_attention_heads": 2, "intermediate_size": 24, "hidden_act": "gelu",
          "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
          "max_position_embeddings": 12, "type_vocab_size": 2, "ln_type": "postln"}
_erf = np.vectorize(math.erf)


def albert_zh_weights(seed=0):
    """Random weights under brightmart's names (``modeling.py`` of albert_zh)."""
    rng = np.random.default_rng(seed)
    v, e, h, i = (CONFIG[k] for k in ("vocab_size", "embedding_size", "hidden_size",
                                      "intermediate_size"))
    shapes = {"bert/embeddings/word_embeddings": (v, e),
              "bert/embeddings/word_embeddings_2": (e, h),
              "bert/embeddings/token_type_embeddings": (2, h),
              "bert/embeddings/position_embeddings": (12, h),
              "bert/embeddings/LayerNorm/gamma": (h,), "bert/embeddings/LayerNorm/beta": (h,),
              "bert/pooler/dense/kernel": (h, h), "bert/pooler/dense/bias": (h,),
              "cls/predictions/transform/dense/kernel": (h, h),
              "cls/predictions/transform/dense/bias": (h,),
              "cls/predictions/transform/LayerNorm/gamma": (h,),
              "cls/predictions/transform/LayerNorm/beta": (h,),
              "cls/predictions/output_bias": (v,)}
    p = "bert/encoder/layer_shared/"
    for name, shape in (("attention/self/query", (h, h)), ("attention/self/key", (h, h)),
                        ("attention/self/value", (h, h)), ("attention/output/dense", (h, h)),
                        ("intermediate/dense", (h, i)), ("output/dense", (i, h))):
        shapes[f"{p}{name}/kernel"], shapes[f"{p}{name}/bias"] = shape, shape[-1:]
    for name in ("attention/output/LayerNorm", "output/LayerNorm"):
        shapes[f"{p}{name}/gamma"] = shapes[f"{p}{name}/beta"] = (h,)
    return {k: (rng.normal(size=s) * 0.3 + (1.0 if k.endswith("gamma") else 0.0))
            .astype("float32") for k, s in shapes.items()}


def norm(x, w, name):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w[f"{name}/gamma"] + w[f"{name}/beta"]


def numpy_albert_zh(w, token_ids, segment_ids):
    """brightmart's forward pass in float64: project, then add segments and positions."""
    w = {k: v.astype("float64") for k, v in w.items()}
    gelu = lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))  # noqa: E731
    b, t = token_ids.shape
    x = w["bert/embeddings/word_embeddings"][token_ids] @ w["bert/embeddings/word_embeddings_2"]
    x = x + w["bert/embeddings/token_type_embeddings"][segment_ids]
    x = norm(x + w["bert/embeddings/position_embeddings"][:t], w, "bert/embeddings/LayerNorm")
    bias = (1.0 - (token_ids > 0)[:, None, None, :]) * -10000.0
    p = "bert/encoder/layer_shared/"

    def dense(v, name):
        return v @ w[f"{p}{name}/kernel"] + w[f"{p}{name}/bias"]

    for _ in range(CONFIG["num_hidden_layers"]):
        q, k, v = (dense(x, f"attention/self/{n}").reshape(b, t, 2, -1).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        x = norm(x + dense(context, "attention/output/dense"), w, f"{p}attention/output/LayerNorm")
        x = norm(x + dense(gelu(dense(x, "intermediate/dense")), "output/dense"), w,
                 f"{p}output/LayerNorm")
    m = gelu(x @ w["cls/predictions/transform/dense/kernel"]
             + w["cls/predictions/transform/dense/bias"])
    m = norm(m, w, "cls/predictions/transform/LayerNorm")
    logits = (m @ w["bert/embeddings/word_embeddings_2"].T
              @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"])
    pooled = x[:, 0] @ w["bert/pooler/dense/kernel"] + w["bert/pooler/dense/bias"]
    return x, logits, pooled


TOKENS = np.array([[2, 5, 9, 14, 3, 0, 0], [2, 7, 3, 11, 21, 28, 3]])
SEGMENTS = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]])


def test_albert_zh_matches_brightmarts_forward_pass(tmp_path):
    weights = albert_zh_weights()
    prefix = write_google_checkpoint(str(tmp_path / "albert_zh"), CONFIG, weights,
                                     extra={"global_step": np.int64(7)})
    model = build_transformer_model(prefix.replace("bert_model.ckpt", "bert_config.json"),
                                    prefix, model="albert_zh", with_mlm="linear")
    sequence, logits, pooled = numpy_albert_zh(weights, TOKENS, SEGMENTS)
    real = TOKENS > 0
    actual_logits = model.predict([TOKENS, SEGMENTS], verbose=0)
    np.testing.assert_allclose(actual_logits[real], logits[real], atol=1e-4)
    encoder = build_transformer_model(CONFIG, prefix, model="albert_zh")
    np.testing.assert_allclose(encoder.predict([TOKENS, SEGMENTS], verbose=0)[real],
                               sequence[real], atol=1e-5)
    # A linear pooler (SimBERT-style checkpoints): [CLS] -> dense, no tanh.
    linear = build_transformer_model(CONFIG, prefix, model="albert_zh", with_pool="linear")
    np.testing.assert_allclose(linear.predict([TOKENS, SEGMENTS], verbose=0), pooled, atol=1e-5)


def test_albert_zh_refuses_the_pre_layer_norm_releases():
    with pytest.raises(ValueError, match="ln_type 'preln'"):
        build_transformer_model(dict(CONFIG, ln_type="preln"), model="albert_zh")


def test_a_family_of_ones_own_registers_and_loads_by_name(tmp_path):
    @register_family("relu_bert_for_test")
    class ReluBERT(BERT):
        def feed_forward_options(self):
            return dict(super().feed_forward_options(), activation="relu")

    assert "relu_bert_for_test" in family_names() and get_family("RELU_BERT_FOR_TEST") is ReluBERT
    model = build_transformer_model(dict(CONFIG, num_hidden_layers=1), model=ReluBERT)
    assert model.get_layer("Transformer-0-FeedForward").activation == "relu"
    with pytest.raises(ValueError, match="already registered"):
        register_family("relu_bert_for_test", BERT)
    with pytest.raises(TypeError, match="subclass of bertkit.models.Transformer"):
        register_family("not_a_family", dict)
    with pytest.raises(ValueError, match=r"unknown model 'gpt'; expected one of \["):
        build_transformer_model(CONFIG, model="gpt")
    assert issubclass(get_family("nezha"), Transformer)


def test_the_keras_file_of_albert_zh_round_trips(tmp_path):
    prefix = write_google_checkpoint(str(tmp_path / "a"), CONFIG, albert_zh_weights(1))
    model = build_transformer_model(CONFIG, prefix, model="albert_zh", with_mlm=True)
    model.save(str(tmp_path / "m.keras"))
    again = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_array_equal(again.predict([TOKENS, SEGMENTS], verbose=0),
                                  model.predict([TOKENS, SEGMENTS], verbose=0))
