"""Mixed precision: bfloat16 compute, float32 variables, float32 where it matters.

Tolerance. bfloat16 keeps 8 significant bits, so every value rounded to it is off by up
to 2**-9 (0.2%) relatively. In the tiny two-layer model each matmul rounds its inputs
and its output, and the residual stream is kept in bfloat16 between the float32 layer
norms, so the layer-normalised sequence output (values of order 1) drifts from the
float64 reference by a few 1e-2 at worst, and by about 6e-3 on average. The tests allow
0.08 at worst and 0.015 on average: an order of magnitude above float32's error, an
order of magnitude below what a wrong cast (a float32 softmax skipped, a mask bias lost
in bfloat16, a variable stored in bfloat16) produces.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from bertkit import optimizers as bo
from bertkit.checkpoints import save_weights_as_checkpoint
from bertkit.tasks.classification import ClassificationHead
from bertkit.models import build_transformer_model
from test_models import config_file, numpy_bert, padded_batch, real_positions
from test_optimizers import WD, run_side_by_side, tiny_model

MAX_ERROR, MEAN_ERROR = 0.08, 0.015


def batch_with_an_empty_row():
    """The padded batch plus a row that is padding only (every key masked)."""
    token_ids, segment_ids = padded_batch()
    return (np.concatenate([token_ids, np.zeros((1, 7), int)]),
            np.concatenate([segment_ids, np.zeros((1, 7), int)]))


def build_bf16(request, prefix, model_type="bert", **kwargs):
    """The model under mixed_bfloat16, through the argument or the global policy."""
    if request.param == "argument":
        return build_transformer_model(config_file(prefix), prefix, model=model_type,
                                       dtype="mixed_bfloat16", **kwargs)
    request.getfixturevalue("global_bf16_policy")
    return build_transformer_model(config_file(prefix), prefix, model=model_type, **kwargs)


@pytest.fixture(params=["argument", "global policy"])
def how(request):
    return request


def assert_close_in_bf16(actual, expected, what):
    error = np.abs(np.asarray(actual, np.float64) - expected)
    assert np.all(np.isfinite(actual)), f"{what}: NaN or Inf"
    assert error.max() < MAX_ERROR and error.mean() < MEAN_ERROR, (
        f"{what}: max error {error.max():.4f}, mean {error.mean():.5f}")


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_bf16_outputs_stay_within_tolerance_of_float64_reference(request, how, model_type):
    config, weights, prefix = request.getfixturevalue(f"tiny_{model_type}")
    token_ids, segment_ids = batch_with_an_empty_row()
    ref = numpy_bert(weights, config, token_ids, segment_ids, albert=model_type == "albert")
    model = build_bf16(how, prefix, model_type, with_pool=True, with_nsp=True, with_mlm=True)
    nsp, mlm = model.predict([token_ids, segment_ids], verbose=0)
    sequence = build_bf16(how, prefix, model_type).predict([token_ids, segment_ids], verbose=0)
    # Probabilities come out in float32 and sum to one in float32.
    assert nsp.dtype == mlm.dtype == np.float32
    np.testing.assert_allclose(mlm.sum(-1), 1.0, atol=1e-5)
    keep = real_positions(token_ids)
    assert_close_in_bf16(sequence[keep], ref["sequence"][keep], "sequence")
    assert_close_in_bf16(nsp, ref["nsp"], "nsp")
    assert_close_in_bf16(mlm[keep], ref["mlm"][keep], "mlm probabilities")
    # The fully padded row: finite, and equal to the reference's uniform attention.
    assert np.all(np.isfinite(sequence[-1]))
    assert_close_in_bf16(sequence[-1], ref["sequence"][-1], "fully padded row")


def test_bf16_layers_compute_in_bf16_and_keep_float32_variables(tiny_bert, how):
    config, weights, prefix = tiny_bert
    model = build_bf16(how, prefix, with_pool=True, with_mlm=True)
    assert model.get_layer("Transformer-0-FeedForward").compute_dtype == "bfloat16"
    assert model.get_layer("Transformer-0-MultiHeadSelfAttention").compute_dtype == "bfloat16"
    assert model.get_layer("MLM-Activation").compute_dtype == "float32"
    assert {v.dtype for v in model.weights} == {"float32"}
    # Loaded values are the checkpoint's float32 values, not bf16-rounded copies.
    loaded = {v.path: v.numpy() for v in model.weights}
    np.testing.assert_array_equal(
        loaded["Transformer-0-FeedForward/intermediate_kernel"],
        weights["bert/encoder/layer_0/intermediate/dense/kernel"])
    np.testing.assert_array_equal(loaded["Embedding-Token/embeddings"],
                                  weights["bert/embeddings/word_embeddings"])


def test_checkpoint_and_keras_files_from_a_bf16_model_hold_float32_values(tmp_path, tiny_bert,
                                                                          global_bf16_policy):
    config, weights, prefix = tiny_bert
    model = build_transformer_model(config_file(prefix), prefix, with_pool=True, with_mlm=True)
    # Training changes the weights away from anything bf16 could represent.
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(variable.numpy() + rng.normal(0, 1e-3, variable.shape).astype("float32"))
    expected = {v.path: v.numpy() for v in model.weights}
    saved = save_weights_as_checkpoint(model, str(tmp_path / "ckpt" / "bert_model.ckpt"))
    reader = tf.train.load_checkpoint(saved)
    kernel = reader.get_tensor("bert/encoder/layer_1/intermediate/dense/kernel")
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, expected["Transformer-1-FeedForward/intermediate_kernel"])
    keras.config.set_dtype_policy("float32")
    fp32 = build_transformer_model(config_file(prefix), saved, with_pool=True, with_mlm=True)
    for variable in fp32.weights:
        np.testing.assert_array_equal(variable.numpy(), expected[variable.path], err_msg=variable.path)
    model.save_weights(tmp_path / "m.weights.h5")
    model.save(tmp_path / "m.keras")
    from_h5 = build_transformer_model(config_file(prefix), with_pool=True, with_mlm=True)
    from_h5.load_weights(tmp_path / "m.weights.h5")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert reloaded.get_layer("Transformer-0-FeedForward").compute_dtype == "bfloat16"
    for other in (from_h5, reloaded):
        for variable in other.weights:
            assert variable.dtype == "float32"
            np.testing.assert_array_equal(variable.numpy(), expected[variable.path])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_bf16_fine_tuning_reduces_the_loss_and_keeps_float32_state(tiny_bert, jit_compile):
    config, weights, prefix = tiny_bert
    encoder = build_transformer_model(config_file(prefix), prefix, dtype="mixed_bfloat16",
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    head = ClassificationHead(num_classes=2, dropout_rate=0.0, dtype="mixed_bfloat16")
    model = keras.Model(encoder.inputs, head(encoder.output))
    optimizer = bo.fine_tuning_optimizer(5e-3, 20, warmup_steps=2, model=encoder,
                                         layerwise_decay=0.9, ema_momentum=0.9)
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=jit_compile)
    token_ids, segment_ids = batch_with_an_empty_row()
    labels = np.array([0, 1, 0, 1])
    before = model.evaluate([token_ids, segment_ids], labels, verbose=0)
    history = model.fit([token_ids, segment_ids], labels, epochs=12, batch_size=4, verbose=0)
    losses = history.history["loss"]
    after = model.evaluate([token_ids, segment_ids], labels, verbose=0)
    assert np.all(np.isfinite(losses)) and np.isfinite(after)
    assert after < 0.5 * before, (before, losses, after)
    assert model.predict([token_ids, segment_ids], verbose=0).dtype == np.float32
    assert {v.dtype for v in model.weights + optimizer.variables
            if "iteration" not in v.path} == {"float32"}


STACKS = {
    "weight decay, piecewise lr, accumulation, ema": (
        lambda: bo.extend_with_exponential_moving_average(bo.extend_with_gradient_accumulation(
            bo.extend_with_piecewise_linear_lr(bo.extend_with_weight_decay(bo.Adam))))(
            0.01, lr_schedule={2: 1.0}, grad_accum_steps=2, ema_momentum=0.8, **WD),
        dict(WD, lr_schedule={2: 1.0}, grad_accum_steps=2, ema_momentum=0.8)),
    "parameter-wise lr, lookahead": (
        lambda: bo.extend_with_lookahead(bo.extend_with_parameter_wise_lr(bo.Adam))(
            0.01, paramwise_lr_schedule={"Embedding-": 0.5}, steps_per_slow_update=3,
            slow_step_size=0.5),
        dict(paramwise={"Embedding-": 0.5}, lookahead=(3, 0.5))),
}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_derived_optimizers_update_float32_variables_under_the_policy(stack, global_bf16_policy):
    """Under the policy the gradients come from bf16 compute; the updates they drive
    are still the float32 update rules (the numpy reference is fed the same gradients)."""
    make_optimizer, reference_options = STACKS[stack]
    model = tiny_model()
    assert model.get_layer("Transformer-0-FeedForward").compute_dtype == "bfloat16"
    model, _ = run_side_by_side(make_optimizer(), reference_options, steps=8, model=model)
    assert {v.dtype for v in model.weights} == {"float32"}
