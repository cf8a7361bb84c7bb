"""Speed paths (XLA, length buckets, mixed precision) against the numpy reference."""
import numpy as np
import pytest

from bertkit.data import bucket_length, pad_to_bucket
from bertkit.models import attention_model, build_transformer_model
from test_models import config_file, numpy_bert, padded_batch, real_positions


def test_bucket_length_picks_the_smallest_bucket_that_fits():
    buckets = (8, 16, 32)
    assert [bucket_length(n, buckets) for n in (1, 8, 9, 16, 17, 32)] == [8, 8, 16, 16, 32, 32]
    with pytest.raises(ValueError, match="exceeds the largest bucket 32"):
        bucket_length(33, buckets)
    with pytest.raises(ValueError, match="increasing"):
        bucket_length(5, (16, 8))


def test_pad_to_bucket_pads_on_the_right_and_keeps_the_structure():
    token_ids, segment_ids = padded_batch()  # [3, 7]
    padded_tokens, padded_segments = pad_to_bucket((token_ids, segment_ids), (4, 10), value=0)
    assert padded_tokens.shape == padded_segments.shape == (3, 10)
    np.testing.assert_array_equal(padded_tokens[:, :7], token_ids)
    assert np.all(padded_tokens[:, 7:] == 0) and np.all(padded_segments[:, 7:] == 0)
    single = pad_to_bucket(np.ones((2, 5, 3)), (8,), value=-1)
    assert single.shape == (2, 8, 3) and np.all(single[:, 5:] == -1)
    assert isinstance(pad_to_bucket([token_ids], (8,)), list)
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        pad_to_bucket([token_ids, token_ids[:, :3]])


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_xla_on_bucketed_batches_matches_numpy_reference(request, model_type):
    config, weights, prefix = request.getfixturevalue(f"tiny_{model_type}")
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, config, token_ids, segment_ids, albert=model_type == "albert")
    keep = real_positions(token_ids)
    model = build_transformer_model(config_file(prefix), prefix, model=model_type,
                                    with_pool=True, with_mlm=True)
    model.compile(jit_compile=True)
    pooled, mlm = model.predict(pad_to_bucket([token_ids, segment_ids], (4, 12)), verbose=0)
    assert mlm.shape[1] == 12
    np.testing.assert_allclose(pooled, ref["pooled"], atol=1e-5)
    np.testing.assert_allclose(mlm[:, :7][keep], ref["mlm"][keep], atol=1e-5)


def test_mixed_bfloat16_keeps_attention_probabilities_in_float32(tiny_bert, global_bf16_policy):
    config, weights, prefix = tiny_bert
    token_ids, segment_ids = padded_batch()
    ref = numpy_bert(weights, config, token_ids, segment_ids)
    model = build_transformer_model(config_file(prefix), prefix)
    probs = attention_model(model, layers=0)
    out = probs.predict([token_ids, segment_ids], verbose=0)
    assert out.dtype == np.float32
    keep = real_positions(token_ids)
    by_query = lambda p: p.transpose(0, 2, 1, 3)[keep]  # noqa: E731
    # bf16 inputs to the scores, float32 softmax: rows still sum to 1 in float32.
    np.testing.assert_allclose(by_query(out).sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(by_query(out), by_query(ref["probs"][0]), atol=2e-2)
    sequence = model.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(sequence[keep], ref["sequence"][keep], atol=0.1)


@pytest.mark.parametrize("shape", [(40, 50, 100), (201, 999)])  # even and odd last axis
@pytest.mark.parametrize("jit_compile", [False, True])
def test_dropout_drops_at_the_rate_and_keeps_the_expectation(shape, jit_compile):
    import tensorflow as tf

    from bertkit.layers import Dropout

    layer = Dropout(0.1, seed=3)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=shape).astype("float32")
    run = tf.function(lambda v: layer(v, training=True), jit_compile=jit_compile)
    first, second = np.asarray(run(x)), np.asarray(run(x))
    dropped = first == 0
    # 200k draws: the fraction's standard deviation is 7e-4.
    assert abs(dropped.mean() - 0.1) < 0.005
    scale = 65536 / (65536 - round(0.1 * 65536))
    np.testing.assert_allclose(first[~dropped], x[~dropped] * scale, rtol=1e-6)
    assert (second == 0).mean() > 0.05 and np.mean(dropped != (second == 0)) > 0.1
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_dropout_gradient_is_the_scaled_mask():
    import tensorflow as tf

    from bertkit.layers import Dropout

    layer = Dropout(0.25, seed=1)
    x = tf.ones((64, 32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(y)
    gradient = tape.gradient(total, x).numpy()
    np.testing.assert_array_equal(gradient, y.numpy())  # y = mask * scale for x = 1


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gelu_erf_value_and_gradient_match_numpy(jit_compile):
    import math

    import tensorflow as tf

    from bertkit.layers import gelu_erf
    from test_models import gelu

    x = tf.constant(np.linspace(-6.0, 6.0, 241), "float32")

    @tf.function(jit_compile=jit_compile)
    def value_and_gradient(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = gelu_erf(v)
        return y, tape.gradient(y, v)

    y, dy = (t.numpy() for t in value_and_gradient(x))
    v = x.numpy().astype("float64")
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))
    np.testing.assert_allclose(y, gelu(v, approximate=False), atol=1e-6)
    np.testing.assert_allclose(dy, cdf + v * np.exp(-0.5 * v ** 2) / math.sqrt(2 * math.pi),
                               atol=1e-6)
    assert gelu_erf(tf.cast(x, "bfloat16")).dtype == tf.bfloat16
