"""Triple extraction: conditional layer norm, pointer heads, decoding, labels, scores."""
import keras
import numpy as np
import pytest

from conftest import TINY_CONFIG, assert_layer_round_trip
from bertkit.tasks.triples import (ObjectPointerHead, PointerLoss, SubjectPointerHead, Triple,
                                TripleExtractor, char_span, decode_objects, decode_subjects,
                                decode_triples, object_labels, sample_subject, subject_labels,
                                token_span, triple_scores)
from bertkit.layers import ConditionalLayerNormalization
from bertkit.models import build_transformer_model
from bertkit.tokenizers import Tokenizer


def np_layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


# -- ConditionalLayerNormalization ------------------------------------------------------


def test_conditional_norm_starts_as_plain_layer_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    condition = rng.normal(size=(2, 6)).astype("float32")
    norm = ConditionalLayerNormalization(epsilon=1e-12)
    norm(x, condition=condition)
    assert [w.name for w in norm.weights] == ["gamma", "beta", "gamma_kernel", "beta_kernel"]
    gamma, beta = rng.normal(size=8), rng.normal(size=8)
    norm.gamma.assign(gamma)
    norm.beta.assign(beta)
    plain = keras.layers.LayerNormalization(epsilon=1e-12)
    plain.build(x.shape)
    plain.set_weights([gamma, beta])
    out = keras.ops.convert_to_numpy(norm(x, condition=condition))
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(plain(x)), atol=1e-5)
    np.testing.assert_allclose(out, np_layer_norm(x, gamma, beta, 1e-12), atol=1e-5)


@pytest.mark.parametrize("hidden_units", [None, 3])
def test_conditional_norm_matches_numpy_with_a_condition(hidden_units):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    condition = rng.normal(size=(2, 6)).astype("float32")
    norm = ConditionalLayerNormalization(epsilon=1e-6, hidden_units=hidden_units,
                                         hidden_activation="relu")
    norm(x, condition=condition)
    weights = [rng.normal(size=w.shape).astype("float32") for w in norm.weights]
    norm.set_weights(weights)
    gamma, beta, *kernels = weights
    c = condition
    if hidden_units:
        c = np.maximum(c @ kernels.pop(0), 0)
    gamma = gamma + (c @ kernels[0])[:, None, :]   # [B, 1, H]: one shift per text
    beta = beta + (c @ kernels[1])[:, None, :]
    expected = np_layer_norm(x, gamma, beta, 1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm(x, condition=condition)),
                               expected, atol=1e-4)
    assert_layer_round_trip(norm, x, condition=condition)


def test_conditional_norm_errors():
    x = np.ones((1, 3, 4), "float32")
    norm = ConditionalLayerNormalization()
    norm(x)
    with pytest.raises(ValueError, match="built without a condition"):
        norm(x, condition=np.ones((1, 2), "float32"))
    with pytest.raises(ValueError, match="hidden_units"):
        ConditionalLayerNormalization(hidden_units=0)


def test_layer_norm_cond_builds_conditional_bert_that_loads_checkpoints(tiny_bert):
    config, weights, prefix = tiny_bert
    config = dict(config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = build_transformer_model(config, prefix)
    conditioned = build_transformer_model(config, prefix, layer_norm_cond=5)
    assert [t.name for t in conditioned.inputs] == ["Input-Token", "Input-Segment",
                                                    "Input-Condition"]
    norm = conditioned.get_layer("Transformer-1-FeedForward-Norm")
    assert isinstance(norm, ConditionalLayerNormalization)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.gamma),
                                  weights["bert/encoder/layer_1/output/LayerNorm/gamma"])
    token_ids = np.array([[2, 5, 7, 9, 3, 0]])
    segment_ids = np.zeros_like(token_ids)
    condition = np.random.default_rng(2).normal(size=(1, 5)).astype("float32")
    expected = plain.predict([token_ids, segment_ids], verbose=0)
    got = conditioned.predict([token_ids, segment_ids, condition], verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Once the projections move, the condition changes the output.
    norm.gamma_kernel.assign(np.full(norm.gamma_kernel.shape, 0.1, "float32"))
    moved = conditioned.predict([token_ids, segment_ids, condition], verbose=0)
    assert np.abs(moved - expected).max() > 1e-2


def test_layer_norm_cond_accepts_an_input_and_rejects_junk():
    condition = keras.Input(shape=(3,), name="my-condition")
    model = build_transformer_model(layer_norm_cond=condition, **TINY_CONFIG)
    assert model.inputs[-1] is condition
    with pytest.raises(TypeError, match="layer_norm_cond"):
        build_transformer_model(layer_norm_cond="yes", **TINY_CONFIG)


# -- heads ------------------------------------------------------------------------------


def test_pointer_heads_match_numpy():
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(2, 5, 4)).astype("float32")
    subject_ids = np.array([[1, 2], [4, 4]], dtype="int32")
    subject_head = SubjectPointerHead(exponent=2)
    object_head = ObjectPointerHead(3, exponent=4, epsilon=1e-12)
    subject_head(hidden)
    object_head(hidden, subject_ids=subject_ids)
    for layer in (subject_head, object_head):
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    kernel, bias = subject_head.get_weights()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(subject_head(hidden)),
                               np_sigmoid(hidden @ kernel + bias) ** 2, atol=1e-5)
    gamma, beta, gamma_kernel, beta_kernel, kernel, bias = object_head.get_weights()
    rows = np.arange(2)
    condition = np.concatenate([hidden[rows, subject_ids[:, 0]],
                                hidden[rows, subject_ids[:, 1]]], axis=-1)    # [B, 2H]
    normed = np_layer_norm(hidden, gamma + (condition @ gamma_kernel)[:, None],
                           beta + (condition @ beta_kernel)[:, None], 1e-12)
    expected = (np_sigmoid(normed @ kernel + bias) ** 4).reshape(2, 5, 3, 2)
    got = keras.ops.convert_to_numpy(object_head(hidden, subject_ids=subject_ids))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert_layer_round_trip(object_head, hidden, subject_ids=subject_ids)


def test_pointer_loss_is_masked_mean_of_binary_crossentropy():
    rng = np.random.default_rng(4)
    y_pred = rng.uniform(0.05, 0.95, size=(2, 3, 4, 2)).astype("float32")
    y_true = (rng.uniform(size=y_pred.shape) > 0.7).astype("float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]], "float32")
    bce = -(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred))
    per_token = bce.mean(-1).sum(-1)                                     # [B, T]
    expected = (per_token * mask).sum() / mask.sum()
    got = float(PointerLoss()(y_true, y_pred, sample_weight=mask))
    assert got == pytest.approx(expected, rel=1e-5)
    subject = float(PointerLoss()(y_true[:, :, 0], y_pred[:, :, 0], sample_weight=mask))
    assert subject == pytest.approx((bce[:, :, 0].mean(-1) * mask).sum() / mask.sum(), rel=1e-5)


def test_extractor_models_share_weights():
    encoder = build_transformer_model(**dict(TINY_CONFIG, hidden_dropout_prob=0.0,
                                             attention_probs_dropout_prob=0.0))
    extractor = TripleExtractor(encoder, ["p0", "p1"])
    token_ids = np.array([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    segment_ids = np.zeros_like(token_ids)
    subject_ids = np.array([[1, 2], [2, 2]], "int32")
    subjects, objects = extractor.model.predict([token_ids, segment_ids, subject_ids], verbose=0)
    assert subjects.shape == (2, 5, 2) and objects.shape == (2, 5, 2, 2)
    subjects2, hidden = extractor.subject_model.predict([token_ids, segment_ids], verbose=0)
    objects2 = extractor.object_model.predict([hidden, subject_ids], verbose=0)
    np.testing.assert_allclose(subjects2, subjects, atol=1e-6)
    np.testing.assert_allclose(objects2, objects, atol=1e-6)
    # Optimizers exclude weights whose path names a 'Norm' from weight decay.
    assert [v.path for v in extractor.object_head.norm.weights][:2] == [
        "Object-Pointer/Norm/gamma", "Object-Pointer/Norm/beta"]
    with pytest.raises(ValueError, match="distinct"):
        TripleExtractor(encoder, ["p0", "p0"])


# -- decoding ---------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "cafe", "银", "杏", "属", "于", "科", "，", "又",
         "名", "白", "果", "和", "公", "孙", "树"]
TEXT = "Café银杏属于银杏科，又名白果和公孙树"
# tokens: 0 [CLS], 1 cafe, 2 银, 3 杏, 4 属, 5 于, 6 银, 7 杏, 8 科, 9 ，, 10 又, 11 名,
#         12 白, 13 果, 14 和, 15 公, 16 孙, 17 树, 18 [SEP]
PREDICATES = ["属于", "别称", "俗名"]


@pytest.fixture
def mapping():
    tokenizer = Tokenizer({t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)
    tokens = tokenizer.tokenize(TEXT)
    assert tokens[1] == "cafe" and tokens[17] == "树" and len(tokens) == 19
    return tokenizer.rematch(TEXT, tokens)


def test_decode_subjects_pairs_nearest_end_and_respects_thresholds(mapping):
    probs = np.zeros((22, 2))                 # padded past the 19 tokens
    probs[[1, 2], 0] = 0.9                    # two starts, one shared end: overlapping spans
    probs[3, 1] = 0.8
    probs[10, 0], probs[11, 1] = 0.6, 0.9     # start exactly at the threshold: not a start
    probs[12, 0], probs[13, 1] = 0.61, 0.5    # end exactly at the threshold: not an end
    probs[15, 0], probs[17, 1] = 0.95, 0.65   # a span at the end of the text
    probs[[0, 18, 20], :] = 1.0               # [CLS], [SEP] and padding never bound a span
    assert decode_subjects(probs, mapping) == [(1, 3), (2, 3), (12, 17), (15, 17)]
    assert decode_subjects(probs, mapping, start_threshold=0.7, end_threshold=0.6) == [
        (1, 3), (2, 3), (15, 17)]
    assert (0, 0) in decode_subjects(probs)   # without a mapping every token may bound
    with pytest.raises(ValueError, match=r"\[T, 2\]"):
        decode_subjects(np.zeros((4, 3)))


def test_decode_triples_maps_spans_to_exact_substrings(mapping):
    subjects = [(1, 3), (2, 3)]               # "Café银杏" and "银杏" overlap
    probs = np.zeros((2, 19, 3, 2))
    # "Café银杏": one object for 属于, two for 别称, and 公孙树 under two predicates.
    probs[0, 6, 0, 0] = probs[0, 8, 0, 1] = 0.9
    probs[0, [12, 15], 1, 0] = 0.9
    probs[0, [13, 17], 1, 1] = 0.9
    probs[0, 15, 2, 0] = probs[0, 17, 2, 1] = 0.7
    probs[0, 10, 0, 0] = 0.9                  # no end of its own predicate at or after it
    probs[0, 9, 2, 1] = 0.9                   # an end before every start of its predicate
    probs[1, 6, 0, 0] = probs[1, 8, 0, 1] = 0.8
    triples = decode_triples(TEXT, mapping, subjects, probs, PREDICATES)
    assert [t[:3] for t in triples] == [
        ("Café银杏", "属于", "银杏科"), ("Café银杏", "别称", "白果"),
        ("Café银杏", "别称", "公孙树"), ("Café银杏", "俗名", "公孙树"),
        ("银杏", "属于", "银杏科")]
    assert triples[0].subject_span == (0, 6) and triples[0].object_span == (8, 11)
    assert triples[2].object_span == (17, 20) == (17, len(TEXT))
    for t in triples:
        assert TEXT[slice(*t.subject_span)] == t.subject
        assert TEXT[slice(*t.object_span)] == t.object
    assert decode_triples(TEXT, mapping, subjects, probs, PREDICATES, start_threshold=0.75) \
        == [t for t in triples if t.predicate != "俗名"]
    with pytest.raises(ValueError, match="subjects"):
        decode_triples(TEXT, mapping, subjects, probs[:1], PREDICATES)


def test_decode_objects_orders_by_predicate_then_start():
    probs = np.zeros((6, 2, 2))
    probs[[1, 4], 1, 0] = probs[[2, 5], 1, 1] = 0.9
    probs[3, 0, 0] = probs[3, 0, 1] = 0.9     # a one-token object
    assert decode_objects(probs) == [(0, 3, 3), (1, 1, 2), (1, 4, 5)]


def test_char_span_rejects_special_tokens(mapping):
    assert char_span(mapping, 12, 13) == (14, 16)
    with pytest.raises(ValueError, match="characters"):
        char_span(mapping, 0, 3)


# -- training labels --------------------------------------------------------------------


def test_token_span_finds_aligned_occurrences(mapping):
    assert token_span(TEXT, mapping, "Café银杏") == (1, 3)
    assert token_span(TEXT, mapping, "银杏科") == (6, 8)   # the first 银杏 is not followed by 科
    assert token_span(TEXT, mapping, "公孙树") == (15, 17)
    assert token_span(TEXT, mapping, "afé") is None        # inside the token "cafe"
    assert token_span(TEXT, mapping, "松树") is None         # not in the text
    assert token_span(TEXT, mapping[:12], "白果") is None     # cut off by truncation
    assert token_span(TEXT, mapping, "") is None


def test_labels_and_subject_sampling():
    labels = subject_labels(6, [(1, 2), (4, 4)])
    assert labels.shape == (6, 2) and labels.sum() == 4
    assert labels[1, 0] == labels[2, 1] == labels[4, 0] == labels[4, 1] == 1
    objects = object_labels(6, 3, [(2, 3, 5), (0, 1, 1)])
    assert objects.shape == (6, 3, 2) and objects.sum() == 4
    assert objects[3, 2, 0] == objects[5, 2, 1] == objects[1, 0, 0] == objects[1, 0, 1] == 1
    rng = np.random.RandomState(0)
    assert {sample_subject([(3, 5)], rng) for _ in range(5)} == {(3, 5)}
    draws = {sample_subject([(1, 2), (4, 6)], rng) for _ in range(200)}
    # Start 4 only pairs with end 6; start 1 with end 2 or, as a negative, with end 6.
    assert draws == {(1, 2), (1, 6), (4, 6)}
    with pytest.raises(ValueError):
        sample_subject([])


# -- scores -----------------------------------------------------------------------------


def test_triple_scores_against_hand_computed_values():
    a, b, c, d, e, f = [("s", "p", o) for o in "abcdef"]
    gold = [[a, b, c], [d], [], [e]]
    predicted = [
        [Triple("s", "p", "a", (0, 1), (2, 3)), b, ("s", "q", "c")],  # 2 right, 1 wrong
        [d, d],                     # a duplicate counts once: 1 right
        [f],                        # 1 wrong
        [],                         # e missed
    ]
    # correct 3, predicted 3 + 1 + 1 + 0 = 5, gold 3 + 1 + 0 + 1 = 5
    scores = triple_scores(gold, predicted)
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (3, 5, 5)
    assert scores["precision"] == pytest.approx(0.6)
    assert scores["recall"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(0.6)
    scores = triple_scores([[a, b, c, d]], [[a, e]])
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx(2 * 1 / (2 + 4))
    assert triple_scores([[]], [[]])["f1"] == 0.0
    with pytest.raises(ValueError, match="texts"):
        triple_scores([[a]], [])
