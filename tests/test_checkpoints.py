"""Loading and saving Google checkpoints: placement, round trips, keep_tokens, errors."""
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from bertkit.checkpoints import load_weights_from_checkpoint, save_weights_as_checkpoint
from bertkit.models import build_transformer_model
from conftest import random_google_weights, write_google_checkpoint

# Where each Google variable must land, written out by hand for layer 1 and the heads.
EXPECTED_PLACES = {
    "bert/embeddings/word_embeddings": ("Embedding-Token", 0),
    "bert/embeddings/token_type_embeddings": ("Embedding-Segment", 0),
    "bert/embeddings/position_embeddings": ("Embedding-Position", 0),
    "bert/embeddings/LayerNorm/beta": ("Embedding-Norm", 1),
    "bert/encoder/layer_1/attention/self/key/kernel": ("Transformer-1-MultiHeadSelfAttention", 2),
    "bert/encoder/layer_1/attention/self/value/bias": ("Transformer-1-MultiHeadSelfAttention", 5),
    "bert/encoder/layer_1/attention/output/dense/kernel":
        ("Transformer-1-MultiHeadSelfAttention", 6),
    "bert/encoder/layer_1/attention/output/LayerNorm/gamma":
        ("Transformer-1-MultiHeadSelfAttention-Norm", 0),
    "bert/encoder/layer_1/intermediate/dense/kernel": ("Transformer-1-FeedForward", 0),
    "bert/encoder/layer_1/output/dense/bias": ("Transformer-1-FeedForward", 3),
    "bert/encoder/layer_1/output/LayerNorm/beta": ("Transformer-1-FeedForward-Norm", 1),
    "bert/pooler/dense/kernel": ("Pooler-Dense", 0),
    "cls/predictions/transform/dense/kernel": ("MLM-Dense", 0),
    "cls/predictions/transform/LayerNorm/gamma": ("MLM-Norm", 0),
    "cls/predictions/output_bias": ("MLM-Bias", 0),
    "cls/seq_relationship/output_bias": ("NSP-Proba", 1),
}


def all_heads(config, checkpoint=None, **kwargs):
    return build_transformer_model(config, checkpoint, with_nsp=True, with_mlm=True, **kwargs)


def test_every_weight_lands_in_its_place(tiny_bert):
    config, weights, prefix = tiny_bert
    model = all_heads(config, prefix)
    for name, (layer, index) in EXPECTED_PLACES.items():
        actual = model.get_layer(layer).get_weights()[index]
        np.testing.assert_array_equal(actual, weights[name], err_msg=name)
    # The NSP kernel is stored [2, hidden] by Google and used [hidden, 2] by Keras.
    nsp_kernel = model.get_layer("NSP-Proba").get_weights()[0]
    np.testing.assert_array_equal(nsp_kernel, weights["cls/seq_relationship/output_weights"].T)
    loaded = sum(w.size for w in model.get_weights())
    assert loaded == sum(v.size for v in weights.values())


def test_albert_weights_land_in_shared_layers(tiny_albert):
    config, weights, prefix = tiny_albert
    model = all_heads(config, prefix, model="albert")
    p = "bert/encoder/transformer/group_0/inner_group_0/"
    np.testing.assert_array_equal(model.get_layer("Transformer-FeedForward").get_weights()[2],
                                  weights[f"{p}ffn_1/intermediate/output/dense/kernel"])
    np.testing.assert_array_equal(model.get_layer("Embedding-Mapping").get_weights()[0],
                                  weights["bert/encoder/embedding_hidden_mapping_in/kernel"])
    assert sum(w.size for w in model.get_weights()) == sum(v.size for v in weights.values())


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_save_then_reload_round_trips_exactly(tmp_path, tiny_bert, tiny_albert, model_type):
    config, weights, prefix = tiny_bert if model_type == "bert" else tiny_albert
    model = all_heads(config, prefix, model=model_type)
    out = save_weights_as_checkpoint(model, tmp_path / "saved" / "bert_model.ckpt")
    stored = dict(tf.train.list_variables(out))
    assert set(stored) == set(weights)  # Google's names, no extras, no slots
    reader = tf.train.load_checkpoint(out)
    for name, value in weights.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value, err_msg=name)
    reloaded = all_heads(config, out, model=model_type)
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not [f for f in os.listdir(tmp_path / "saved") if "tmp" in f]


def test_keep_tokens_picks_rows(tiny_bert):
    config, weights, prefix = tiny_bert
    keep = [0, 1, 2, 3, 17, 5, 39]
    model = build_transformer_model(config, prefix, with_mlm=True, keep_tokens=keep)
    np.testing.assert_array_equal(model.get_layer("Embedding-Token").get_weights()[0],
                                  weights["bert/embeddings/word_embeddings"][keep])
    np.testing.assert_array_equal(model.get_layer("MLM-Bias").get_weights()[0],
                                  weights["cls/predictions/output_bias"][keep])
    assert model.output.shape[-1] == len(keep)
    with pytest.raises(ValueError, match="keep_tokens holds ids outside"):
        build_transformer_model(config, prefix, keep_tokens=[0, 40])


def test_missing_checkpoint_file_is_named(tmp_path, tiny_bert):
    config, _, _ = tiny_bert
    with pytest.raises(FileNotFoundError, match="nowhere/bert_model.ckpt.index"):
        build_transformer_model(config, str(tmp_path / "nowhere" / "bert_model.ckpt"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        build_transformer_model(config, str(tmp_path / "empty"))


def test_checkpoint_directory_is_accepted(tiny_bert):
    config, weights, prefix = tiny_bert
    model = build_transformer_model(config, os.path.dirname(prefix))
    np.testing.assert_array_equal(model.get_layer("Embedding-Token").get_weights()[0],
                                  weights["bert/embeddings/word_embeddings"])


def test_missing_variable_is_named_and_nothing_loads(tmp_path, tiny_bert):
    config, weights, _ = tiny_bert
    partial = {k: v for k, v in weights.items() if not k.startswith("bert/pooler")}
    prefix = write_google_checkpoint(str(tmp_path / "partial"), config, partial)
    model = build_transformer_model(config, with_pool=True)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="bert/pooler/dense/kernel .* is missing"):
        load_weights_from_checkpoint(model, prefix)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_shape_mismatch_prints_both_shapes_and_nothing_loads(tiny_bert):
    config, _, prefix = tiny_bert
    model = build_transformer_model(dict(config, intermediate_size=64))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"intermediate/dense/kernel has shape \(32, 48\) in "
                                         r"the checkpoint but .* expects \(32, 64\)"):
        load_weights_from_checkpoint(model, prefix)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_unused_variables_are_reported(tiny_bert, caplog):
    config, _, prefix = tiny_bert
    with caplog.at_level(logging.INFO, logger="bertkit"):
        build_transformer_model(config, prefix, num_hidden_layers=1)
    # adam_m and global_step; layer 1 (16 variables), the pooler (2) and cls/ heads (7).
    assert "2 optimizer-state and 25 variables of heads or layers not built" in caplog.text


def test_unrecognised_variables_warn(tmp_path, tiny_bert, caplog):
    config, weights, _ = tiny_bert
    extra = {"bert/encoder/adapter/kernel": np.zeros((2, 2), "float32")}
    prefix = write_google_checkpoint(str(tmp_path / "odd"), config, weights, extra)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        all_heads(config, prefix)
    assert "bert/encoder/adapter/kernel" in caplog.text


def test_random_weights_helper_covers_every_model_weight():
    # Guards the fixture itself: the hand-written shapes match what the builder creates.
    from conftest import TINY_CONFIG

    weights = random_google_weights(TINY_CONFIG)
    model = all_heads(TINY_CONFIG)
    assert sum(w.size for w in model.get_weights()) == sum(v.size for v in weights.values())
