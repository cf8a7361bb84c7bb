"""What every registered family must do, checked for each (a new family gets it for free).

Numerics against independent references live in each family's own test file; here the
shared contract: saving under the family's own names and loading back, ``.weights.h5``,
``mixed_bfloat16`` with float32 variables, a training step with layer-wise learning
rates, and a load that checks before it assigns.
"""
import keras
import numpy as np
import pytest

import bertkit  # noqa: F401
from bertkit.checkpoints import load_weights_from_checkpoint, save_weights_as_checkpoint
from bertkit.models import build_transformer_model, family_names, get_family
from bertkit.optimizers import fine_tuning_optimizer

CONFIG = {"vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 24, "hidden_act": "gelu",
          "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
          "max_position_embeddings": 16, "type_vocab_size": 2, "embedding_size": 8}
TOKENS = np.array([[2, 5, 9, 14, 3, 0], [2, 7, 3, 11, 21, 3]])
SEGMENTS = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]])
FAMILIES = [name for name in family_names() if get_family(name).__module__.startswith(
    "bertkit.")]


def config_for(family):
    config = dict(CONFIG, hidden_act="relu") if family == "roformer_v2" else dict(CONFIG)
    if family in ("bert", "roberta", "nezha", "roformer", "roformer_v2"):
        del config["embedding_size"]  # the factorised embedding is ALBERT's and ELECTRA's
    return config


def heads(family):
    """The heads a checkpoint of the family carries (ELECTRA and RoFormer-v2 no pooler)."""
    return {"with_mlm": family != "electra",
            "with_pool": family not in ("electra", "roformer_v2")}


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_under_its_own_names_loads_back_exactly(family, tmp_path):
    keras.utils.set_random_seed(1)
    model = build_transformer_model(config_for(family), model=family, **heads(family))
    prefix = save_weights_as_checkpoint(model, str(tmp_path / "ckpt" / "model.ckpt"))
    again = build_transformer_model(config_for(family), prefix, model=family, **heads(family))
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b), err_msg=a.path)
    expected = model.predict([TOKENS, SEGMENTS], verbose=0)
    path = str(tmp_path / "w.weights.h5")
    model.save_weights(path)
    fresh = build_transformer_model(config_for(family), model=family, **heads(family))
    fresh.load_weights(path)
    for a, b in zip(expected, fresh.predict([TOKENS, SEGMENTS], verbose=0)):
        np.testing.assert_array_equal(a, b)
    if family.startswith("albert"):  # one shared block: no per-layer weights to drop
        return
    # A checkpoint missing a variable: a clear error, and the model is left untouched.
    target = build_transformer_model(config_for(family), model=family, **heads(family))
    before = [keras.ops.convert_to_numpy(w) for w in target.weights]
    short = build_transformer_model(config_for(family), model=family, num_hidden_layers=1,
                                    **heads(family))
    short_prefix = save_weights_as_checkpoint(short, str(tmp_path / "short" / "m.ckpt"))
    with pytest.raises(ValueError, match=r"layer_1/.* is missing"):
        load_weights_from_checkpoint(target, short_prefix)
    for a, b in zip(before, target.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_under_bf16_with_layerwise_learning_rates(family):
    keras.utils.set_random_seed(2)
    encoder = build_transformer_model(config_for(family), model=family,
                                      dtype="mixed_bfloat16")
    assert {w.dtype for w in encoder.weights} == {"float32"}
    pooled = keras.layers.GlobalAveragePooling1D()(encoder.output)
    probs = keras.layers.Dense(2, activation="softmax", dtype="float32")(pooled)
    model = keras.Model(encoder.inputs, probs)
    # ALBERT's one shared block has no layers to decay over.
    decay = None if family.startswith("albert") else 0.5
    model.compile(fine_tuning_optimizer(1e-2, 4, layerwise_decay=decay, model=model),
                  loss="sparse_categorical_crossentropy")
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit([TOKENS, SEGMENTS], np.array([0, 1]), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    changed = [not np.array_equal(a, keras.ops.convert_to_numpy(w))
               for a, w in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]


@pytest.mark.parametrize("family", FAMILIES)
def test_pretraining_gathers_the_familys_own_mlm_head(family):
    from bertkit.tasks.pretraining import build_pretraining_model

    keras.utils.set_random_seed(3)
    builder = build_transformer_model(config_for(family), model=family, with_mlm="linear",
                                      return_keras_model=False)
    gathered = build_pretraining_model(builder, max_predictions=2)
    positions = np.array([[1, 3], [4, 2]])
    logits = gathered.predict([TOKENS, SEGMENTS, positions], verbose=0)
    full = builder.model.predict([TOKENS, SEGMENTS], verbose=0)
    expected = np.take_along_axis(full, positions[..., None], axis=1)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_the_attention_mask_hook_takes_a_mask_per_query():
    from bertkit import layers as bk_layers
    from bertkit.models import BERT

    class CausalMask(keras.layers.Layer):
        def call(self, token_ids):  # [B, T] -> [B, T, T]: position t sees 0..t
            length = keras.ops.shape(token_ids)[1]
            causal = keras.ops.cast(keras.ops.tril(keras.ops.ones((length, length))),
                                    "float32")
            return causal[None] * bk_layers.PaddingMask()(token_ids)[:, None, :]

    class CausalBERT(BERT):
        def compute_attention_mask(self, inputs):
            return self.apply(inputs[0], CausalMask, "Attention-Mask")

    keras.utils.set_random_seed(4)
    model = build_transformer_model(config_for("bert"), model=CausalBERT)
    changed = TOKENS.copy()
    changed[:, 3:] = np.where(changed[:, 3:] > 0, 7, 0)  # only positions 3 and later
    a, b = (model.predict([t, SEGMENTS], verbose=0) for t in (TOKENS, changed))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-3


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "electra"])
def test_keep_tokens_takes_the_rows_of_the_kept_tokens(family, tmp_path):
    keras.utils.set_random_seed(5)
    model = build_transformer_model(config_for(family), model=family, with_mlm="linear")
    prefix = save_weights_as_checkpoint(model, str(tmp_path / "m.ckpt"))
    keep = [0, 1, 2, 3, 5, 7, 9, 11, 14, 21]
    small = build_transformer_model(config_for(family), prefix, model=family,
                                    with_mlm="linear", keep_tokens=keep)
    remap = {old: new for new, old in enumerate(keep)}
    tokens = np.vectorize(remap.get)(TOKENS)
    full = model.predict([TOKENS, SEGMENTS], verbose=0)
    np.testing.assert_allclose(small.predict([tokens, SEGMENTS], verbose=0),
                               full[..., keep], atol=1e-5)


@pytest.mark.parametrize("family", [f for f in FAMILIES
                                    if get_family(f).huggingface_model_type is not None])
def test_hugging_face_files_round_trip(family, tmp_path):
    from bertkit.huggingface import save_weights_as_safetensors

    keras.utils.set_random_seed(6)
    options = {"with_discriminator": True} if family == "electra" else heads(family)
    model = build_transformer_model(config_for(family), model=family, **options)
    save_weights_as_safetensors(model, str(tmp_path / "hf"))
    again = build_transformer_model(str(tmp_path / "hf"), **options)  # family from model_type
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b), err_msg=a.path)
