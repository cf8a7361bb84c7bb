"""Masked-LM pretraining: packing, masking statistics, the gathered loss, checkpoints."""
import math

import keras
import numpy as np
import pytest

from bertkit.tasks import pretraining
from bertkit.checkpoints import save_checkpoint_dir
from bertkit.models import build_transformer_model, intermediate_model
from conftest import TINY_CONFIG

PAD, CLS, SEP, MASK = 0, 2, 3, 4
SPECIALS = (PAD, 1, CLS, SEP, MASK)


def random_documents(rng, count, vocab=1000, longest=60):
    return [list(rng.integers(5, vocab, size=rng.integers(1, longest))) for _ in range(count)]


# -- packing ----------------------------------------------------------------------------


@pytest.mark.parametrize("maxlen", [2, 7, 16])
def test_packing_keeps_every_token_once_in_order(maxlen):
    rng = np.random.default_rng(maxlen)
    # Distinct ids per document position make order and continuation visible.
    documents, next_id = [], 5
    for length in rng.integers(1, 3 * maxlen, size=30):
        documents.append(list(range(next_id, next_id + length)))
        next_id += length
    order = rng.permutation(len(documents))
    packed = pretraining.pack_documents(documents, maxlen, CLS, SEP, PAD, order=order)
    assert packed.shape[1] == maxlen and packed.dtype == np.int32
    assert (packed[:, 0] == CLS).all()
    body = packed[:, 1:].reshape(-1)
    expected = np.concatenate([np.r_[documents[i], SEP] for i in order])
    np.testing.assert_array_equal(body[: len(expected)], expected)
    assert (body[len(expected):] == PAD).all()
    assert len(body) - len(expected) < maxlen - 1  # only the last sequence is padded
    assert not (packed[:-1] == PAD).any()


def test_packing_rejects_bad_input():
    with pytest.raises(ValueError, match="maxlen"):
        pretraining.pack_documents([[5]], 1, CLS, SEP)
    with pytest.raises(ValueError, match="non-empty"):
        pretraining.pack_documents([[], []], 8, CLS, SEP)


def test_masked_lm_data_covers_every_token_each_epoch():
    rng = np.random.default_rng(0)
    documents = random_documents(rng, 40)
    data = pretraining.MaskedLMData(documents, 16, 5, 1000, CLS, SEP, MASK, seed=3)
    expected = np.sort(np.concatenate(documents))
    for epoch in (0, 1):
        batches = [data.batch(epoch * len(data) + i) for i in range(len(data))]
        ids = np.concatenate([x[0] for x, _, _ in batches])
        positions = np.concatenate([x[2] for x, _, _ in batches])
        labels = np.concatenate([y for _, y, _ in batches])
        weights = np.concatenate([w for _, _, w in batches])
        assert ids.shape == (data.num_sequences, 16)
        original = ids.copy()  # undo the masking to recover the packed tokens
        rows = np.broadcast_to(np.arange(len(ids))[:, None], positions.shape)
        used = weights > 0
        original[rows[used], positions[used]] = labels[used]
        tokens = original[~np.isin(original, [PAD, CLS, SEP])]
        np.testing.assert_array_equal(np.sort(tokens), expected)


# -- masking ----------------------------------------------------------------------------


def masked_draw(seed, batch=400, length=64, vocab=1000):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, length))
    ids[:, 0] = CLS
    ids[:, 30] = SEP
    ids[::3, 50:] = PAD  # some padded rows
    out = pretraining.mask_tokens(ids, rng, vocab, MASK, SPECIALS,
                                  max_predictions=math.ceil(0.15 * length))
    return ids, out


def test_masking_statistics():
    ids, (masked, positions, labels, weights) = masked_draw(0)
    used = weights > 0
    candidates = (~np.isin(ids, SPECIALS)).sum()
    assert abs(used.sum() / candidates - 0.15) < 0.01
    rows = np.broadcast_to(np.arange(len(ids))[:, None], positions.shape)
    at = masked[rows[used], positions[used]]
    np.testing.assert_array_equal(labels[used], ids[rows[used], positions[used]])
    share_mask = np.mean(at == MASK)
    share_kept = np.mean(at == labels[used])
    share_random = 1 - share_mask - share_kept
    assert abs(share_mask - 0.8) < 0.02
    assert abs(share_kept - 0.1) < 0.015
    assert abs(share_random - 0.1) < 0.015
    # Nothing outside the chosen positions changes; specials are never chosen.
    changed = masked != ids
    chosen = np.zeros_like(changed)
    chosen[rows[used], positions[used]] = True
    assert not (changed & ~chosen).any()
    assert not np.isin(ids[chosen], SPECIALS).any()
    assert not np.isin(at[at != MASK], SPECIALS).any()  # random tokens are never specials
    assert (labels[~used] == 0).all() and (positions[~used] == 0).all()
    # Positions of a row are distinct.
    for row in range(len(ids)):
        p = positions[row][used[row]]
        assert len(set(p.tolist())) == len(p)


def test_masking_short_and_all_special_rows():
    rng = np.random.default_rng(1)
    ids = np.array([[CLS, 7, SEP, PAD], [CLS, SEP, PAD, PAD]])
    masked, positions, labels, weights = pretraining.mask_tokens(ids, rng, 50, MASK, SPECIALS,
                                                                 max_predictions=2)
    np.testing.assert_array_equal(weights, [[1, 0], [0, 0]])  # at least one, if any
    assert positions[0, 0] == 1 and labels[0, 0] == 7
    np.testing.assert_array_equal(masked[1], ids[1])


def test_masks_are_seeded_and_differ_between_epochs():
    documents = random_documents(np.random.default_rng(2), 50)

    def data(seed):
        return pretraining.MaskedLMData(documents, 32, 8, 1000, CLS, SEP, MASK, seed=seed)

    a, b, c = data(5), data(5), data(6)
    for x, y in zip(a.epoch_arrays(1), b.epoch_arrays(1)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.epoch_arrays(0)[1], a.epoch_arrays(1)[1])
    assert not np.array_equal(a.epoch_arrays(0)[1], c.epoch_arrays(0)[1])
    # A batch regenerated later (as on resume) equals the one seen first.
    first = a.batch(len(a) + 2)
    a.epoch_arrays(0)
    np.testing.assert_array_equal(first[0][0], a.batch(len(a) + 2)[0][0])


# -- the gathered loss ------------------------------------------------------------------


def tiny_builder(**overrides):
    config = dict(TINY_CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config.update(overrides)
    return build_transformer_model(config, with_mlm=True, return_keras_model=False)


def numpy_mlm_logits(builder, hidden):
    """Google's MLM head in numpy: dense + GELU(erf) + layer norm, tied projection, bias."""
    from math import erf

    kernel, bias = builder.layer("MLM-Dense").get_weights()
    gamma, beta = builder.layer("MLM-Norm").get_weights()
    table = builder.layer("Embedding-Token").get_weights()[0]
    output_bias = builder.layer("MLM-Bias").get_weights()[0]
    x = hidden @ kernel + bias
    x = 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    x = (x - mean) / np.sqrt(var + 1e-12) * gamma + beta
    return x @ table.T + output_bias


def test_gathered_loss_matches_dense_numpy_reference():
    keras.utils.set_random_seed(0)
    builder = tiny_builder()
    model = pretraining.build_pretraining_model(builder, max_predictions=3)
    pretraining.compile_pretraining_model(model, "sgd")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, size=(4, 12)).astype("int32")
    ids[:, 0], ids[3, 8:] = CLS, PAD
    positions = np.array([[1, 5, 0], [2, 3, 9], [11, 0, 0], [4, 6, 7]], dtype="int32")
    weights = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype="float32")
    labels = rng.integers(0, 40, size=(4, 3)).astype("int32")
    x = [ids, np.zeros_like(ids), positions]

    hidden = keras.ops.convert_to_numpy(intermediate_model(
        builder.model, "Transformer-1-FeedForward-Norm")([ids, np.zeros_like(ids)]))
    logits = numpy_mlm_logits(builder, hidden.astype("float64"))  # [B, T, V], every position
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    losses, hits = [], []
    for b, t in zip(*np.nonzero(weights)):
        losses.append(-log_probs[b, positions[b, t], labels[b, t]])
        hits.append(np.argmax(logits[b, positions[b, t]]) == labels[b, t])

    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               logits[np.arange(4)[:, None], positions], rtol=1e-4, atol=1e-4)
    loss, accuracy = model.evaluate(x, labels, sample_weight=weights, batch_size=4, verbose=0)
    np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(accuracy, np.mean(hits), atol=1e-6)
    # Unused slots do not count, whatever their labels.
    other = np.where(weights > 0, labels, (labels + 7) % 40)
    again = model.evaluate(x, other, sample_weight=weights, batch_size=4, verbose=0)
    np.testing.assert_allclose(again, [loss, accuracy], rtol=1e-6)


def test_masked_lm_accuracy_is_argmax_accuracy_over_weighted_slots():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 4, 50)).astype("float32")
    labels = rng.integers(0, 50, size=(3, 4)).astype("int32")
    labels[0, :2] = logits[0, :2].argmax(-1)  # some hits for certain
    weights = (rng.random((3, 4)) > 0.3).astype("float32")
    weights[0, :2] = 1.0
    hits = (logits.argmax(-1) == labels).astype("float64")
    expected = (hits * weights).sum() / weights.sum()

    np.testing.assert_array_equal(keras.ops.convert_to_numpy(
        pretraining.label_logit_is_max(labels, logits)), hits)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(
        pretraining.label_logit_is_max(labels[..., None], logits)), hits)
    metric = pretraining.MaskedLMAccuracy()
    metric.update_state(labels, logits, sample_weight=weights)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    again = pretraining.MaskedLMAccuracy.from_config(metric.get_config())
    assert again.name == "accuracy"


def test_pretraining_model_needs_mlm_head():
    builder = build_transformer_model(TINY_CONFIG, return_keras_model=False)
    with pytest.raises(ValueError, match="with_mlm"):
        pretraining.build_pretraining_model(builder, 3)


def test_gather_positions_round_trip():
    from conftest import assert_layer_round_trip

    sequence = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    positions = np.array([[4, 0], [2, 2]], dtype="int32")
    layer = pretraining.GatherPositions()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([sequence, positions])),
                                  sequence[[[0], [1]], positions])
    assert_layer_round_trip(layer, [sequence, positions])


# -- training and the written checkpoint ------------------------------------------------


def test_written_checkpoint_predicts_like_the_trained_model(tmp_path):
    keras.utils.set_random_seed(1)
    builder = tiny_builder()
    documents = random_documents(np.random.default_rng(3), 30, vocab=40, longest=20)
    data = pretraining.MaskedLMData(documents, 16, 4, 40, CLS, SEP, MASK, seed=0)
    model = pretraining.build_pretraining_model(builder, data.max_predictions)
    pretraining.compile_pretraining_model(model, keras.optimizers.Adam(1e-2))
    held_x, held_y, held_w = data.arrays(0)
    first = model.evaluate(held_x, held_y, sample_weight=held_w, verbose=0)[0]
    model.fit(data.dataset(), steps_per_epoch=len(data), epochs=3, verbose=0, shuffle=False)
    assert model.evaluate(held_x, held_y, sample_weight=held_w, verbose=0)[0] < first

    save_checkpoint_dir(builder, str(tmp_path / "ckpt"))
    loaded = build_transformer_model(str(tmp_path / "ckpt" / "bert_config.json"),
                                     str(tmp_path / "ckpt" / "bert_model.ckpt"), with_mlm=True)
    x, _, _ = data.arrays(1)
    probs = keras.ops.convert_to_numpy(loaded.predict(x[:2], verbose=0))  # [B, T, V]
    logits = keras.ops.convert_to_numpy(model.predict(list(x), verbose=0))  # [B, P, V]
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    n = len(x[0])
    np.testing.assert_allclose(probs[np.arange(n)[:, None], x[2]], expected, atol=1e-5)


def test_pretraining_model_round_trips_through_keras_file(tmp_path):
    import bertkit  # noqa: F401  (registers every bertkit object)

    model = pretraining.build_pretraining_model(tiny_builder(), max_predictions=3)
    pretraining.compile_pretraining_model(model, "adam")
    x = [np.array([[CLS, 5, 6, 7, SEP]]), np.zeros((1, 5), "int32"), np.array([[1, 3, 0]])]
    # One real step, so that the optimizer's moments exist and travel with the file.
    model.train_on_batch(x, np.array([[6, 7, 0]]), sample_weight=np.array([[1., 1., 0.]]))
    path = str(tmp_path / "mlm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert int(loaded.optimizer.iterations) == 1
    saved_moments = {v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    for variable in loaded.optimizer.variables:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable),
                                      saved_moments[variable.path])
