"""The CRF against brute-force enumeration of every tag path, padding included."""
import itertools
import math

import keras
import numpy as np
import pytest

import bertkit  # noqa: F401
from bertkit.tasks.tagging import ConditionalRandomField

RNG = np.random.default_rng(0)
B, T, K = 3, 4, 3
EMISSIONS = RNG.normal(size=(B, T, K)).astype("float32")
TRANSITIONS = RNG.normal(size=(K, K)).astype("float32")
LENGTHS = [4, 2, 1]  # padding at the end of the second and third sentence


def crf(lr_multiplier=1.0):
    layer = ConditionalRandomField(lr_multiplier=lr_multiplier)
    layer.build((None, None, K))
    layer.stored_transitions.assign(TRANSITIONS / lr_multiplier)
    return layer


def brute_force(b):
    """Every path of sentence b: ``{path: score}``, scored by hand."""
    n = LENGTHS[b]
    scores = {}
    for path in itertools.product(range(K), repeat=n):
        score = sum(float(EMISSIONS[b, t, path[t]]) for t in range(n))
        score += sum(float(TRANSITIONS[path[t - 1], path[t]]) for t in range(1, n))
        scores[path] = score
    return scores


def test_loss_is_the_negative_log_likelihood_of_the_gold_path():
    gold = np.full((B, T), -1)
    expected = []
    for b in range(B):
        scores = brute_force(b)
        path = list(scores)[(7 * b + 1) % len(scores)]
        gold[b, :LENGTHS[b]] = path
        log_z = np.log(np.sum(np.exp(np.array(list(scores.values()), "float64"))))
        expected.append(log_z - scores[path])
    for multiplier in (1.0, 100.0):  # the stored value is scaled, the scores are not
        loss = keras.ops.convert_to_numpy(crf(multiplier).loss(gold, EMISSIONS))
        np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_viterbi_finds_the_best_path_under_padding():
    mask = (np.arange(T)[None] < np.array(LENGTHS)[:, None]).astype("float32")
    paths = keras.ops.convert_to_numpy(crf().decode(EMISSIONS, mask))
    for b in range(B):
        scores = brute_force(b)
        best = max(scores, key=scores.get)
        assert tuple(paths[b, :LENGTHS[b]]) == best
        assert (paths[b, LENGTHS[b]:] == -1).all()


def test_the_layer_trains_its_transitions_and_round_trips():
    inputs = keras.Input((None, 4))
    layer = ConditionalRandomField(lr_multiplier=10, name="CRF")
    model = keras.Model(inputs, layer(keras.layers.Dense(K)(inputs)))
    model.compile("adam", loss=layer.loss)
    x = RNG.normal(size=(2, T, 4)).astype("float32")
    y = np.array([[0, 1, 2, -1], [2, 2, -1, -1]])
    before = keras.ops.convert_to_numpy(layer.transitions)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(before, keras.ops.convert_to_numpy(layer.transitions))
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.lr_multiplier == 10
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        ConditionalRandomField(lr_multiplier=0)


def rotate(x):
    """RoFormer's rotation of ``[B, T, ..., D]`` by position, in float64 numpy."""
    t, d = x.shape[1], x.shape[-1]
    angles = np.arange(t)[:, None] * 10000.0 ** (-np.arange(0, d, 2) / d)   # [T, D/2]
    shape = (1, t) + (1,) * (x.ndim - 3) + (d,)
    sin = np.repeat(np.sin(angles), 2, axis=-1).reshape(shape)
    cos = np.repeat(np.cos(angles), 2, axis=-1).reshape(shape)
    turned = np.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
    return x * cos + turned * sin


def span_masks(logits, mask):
    pair = mask[:, None, :, None] * mask[:, None, None, :]
    upper = np.triu(np.ones(logits.shape[-2:]))
    return logits - (1 - pair * upper) * 1e12


def test_global_pointers_against_numpy():
    from bertkit.tasks.tagging import EfficientGlobalPointer, GlobalPointer

    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], "float32")
    heads, size = 3, 4
    layer = GlobalPointer(heads, size)
    actual = keras.ops.convert_to_numpy(layer(x, padding_mask=mask))
    kernel, bias = (w.astype("float64") for w in layer.dense.get_weights())
    h = (x @ kernel + bias).reshape(2, 5, heads, 2 * size)
    q, k = rotate(h[..., :size]), rotate(h[..., size:])
    expected = span_masks(np.einsum("bmnd,bknd->bnmk", q, k) / size ** 0.5, mask)
    real = expected > -1e11
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-5)
    assert (actual[~real] < -1e11).all()

    layer = EfficientGlobalPointer(heads, size)
    actual = keras.ops.convert_to_numpy(layer(x, padding_mask=mask))
    kernel, bias = (w.astype("float64") for w in layer.dense.get_weights())
    h = x @ kernel + bias
    q, k = rotate(h[..., ::2]), rotate(h[..., 1::2])
    b_kernel, b_bias = (w.astype("float64") for w in layer.bias_dense.get_weights())
    type_bias = ((h @ b_kernel + b_bias) / 2).transpose(0, 2, 1)             # [B, 2N, T]
    logits = (np.einsum("bmd,bkd->bmk", q, k) / size ** 0.5)[:, None] \
        + type_bias[:, ::2, :, None] + type_bias[:, 1::2, None, :]
    expected = span_masks(logits, mask)
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-5)


def test_multilabel_categorical_crossentropy_against_its_formula():
    from bertkit.tasks.tagging import global_pointer_loss, multilabel_categorical_crossentropy

    scores = RNG.normal(size=(4, 6))
    labels = (RNG.random((4, 6)) < 0.3).astype("float32")
    expected = [np.log1p(np.exp(s[y == 0]).sum()) + np.log1p(np.exp(-s[y == 1]).sum())
                for s, y in zip(scores, labels)]
    actual = keras.ops.convert_to_numpy(multilabel_categorical_crossentropy(labels, scores))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    spans = RNG.normal(size=(2, 3, 4, 4)).astype("float32")
    gold = (RNG.random((2, 3, 4, 4)) < 0.2).astype("float32")
    per_type = keras.ops.convert_to_numpy(multilabel_categorical_crossentropy(
        gold.reshape(6, 16), spans.reshape(6, 16))).reshape(2, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(global_pointer_loss(gold, spans)),
                               per_type.mean(axis=1), rtol=1e-5)


def test_a_global_pointer_model_trains_and_round_trips(tmp_path):
    from bertkit.tasks.tagging import EfficientGlobalPointer, global_pointer_loss

    inputs, mask = keras.Input((None, 8)), keras.Input((None,))
    model = keras.Model([inputs, mask], EfficientGlobalPointer(2, 4)(inputs, padding_mask=mask))
    model.compile("adam", loss=global_pointer_loss)
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    m = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], "float32")
    y = np.zeros((2, 2, 5, 5), "float32")
    y[0, 1, 1, 3] = y[1, 0, 0, 0] = 1
    history = model.fit([x, m], y, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(str(tmp_path / "gp.keras"))
    again = keras.models.load_model(str(tmp_path / "gp.keras"), compile=False)
    np.testing.assert_array_equal(again.predict([x, m], verbose=0),
                                  model.predict([x, m], verbose=0))


# -- tag schemes, scores and the tagging heads -------------------------------------------


def test_tags_to_spans_reads_iob2_bio_and_bioes():
    from bertkit.tasks.spans import tags_to_spans

    # IOB2, an entity at the very end
    assert tags_to_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC")]
    # an I- without a B- starts an entity (CoNLL's rule); so does an I- of another type
    assert tags_to_spans(["O", "I-ORG", "I-ORG", "I-LOC"]) == [(1, 3, "ORG"), (3, 4, "LOC")]
    # adjacent entities of one type: B- separates them (IOB2 and IOB1 alike)
    assert tags_to_spans(["B-PER", "B-PER", "I-PER"]) == [(0, 1, "PER"), (1, 3, "PER")]
    assert tags_to_spans(["I-PER", "I-PER", "B-PER"]) == [(0, 2, "PER"), (2, 3, "PER")]
    # BIOES: E- closes, S- is one token, an E- alone is one token, M- continues
    assert tags_to_spans(["B-LOC", "M-LOC", "E-LOC", "S-PER", "E-ORG", "O"]) == [
        (0, 3, "LOC"), (3, 4, "PER"), (4, 5, "ORG")]
    assert tags_to_spans(["B-LOC", "E-LOC", "E-LOC"]) == [(0, 2, "LOC"), (2, 3, "LOC")]
    assert tags_to_spans([]) == [] and tags_to_spans(["O", "O"]) == []


def test_spans_to_tags_round_trips_and_refuses_overlaps():
    from bertkit.tasks.spans import spans_to_tags, tags_to_spans

    spans = [(0, 1, "PER"), (1, 4, "LOC"), (6, 7, "ORG")]
    for scheme in ("IOB2", "BIOES"):
        tags = spans_to_tags(spans, 7, scheme)
        assert tags_to_spans(tags) == spans
    assert spans_to_tags(spans, 7, "BIOES")[:4] == ["S-PER", "B-LOC", "I-LOC", "E-LOC"]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags([(0, 2, "PER"), (1, 3, "LOC")], 4)
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags([(2, 5, "PER")], 4)


def test_entity_scores_count_exact_spans_per_type_and_micro():
    from bertkit.tasks.spans import entity_scores

    gold = [{(0, 2, "PER"), (3, 5, "LOC")}, {(1, 2, "ORG")}, set()]
    predicted = [{(0, 2, "PER"), (3, 4, "LOC")}, {(1, 2, "ORG"), (4, 6, "PER")}, {(0, 1, "LOC")}]
    scores = entity_scores(gold, predicted)
    # PER: 1 of 2 predicted right, 1 of 1 gold found; LOC: 0 of 2, 0 of 1; ORG 1/1, 1/1
    assert scores["PER"][:3] == (0.5, 1.0, pytest.approx(2 / 3))
    assert scores["LOC"][:3] == (0.0, 0.0, 0.0)
    assert scores["ORG"].f1 == 1.0
    assert (scores["all"].predicted, scores["all"].gold, scores["all"].correct) == (5, 3, 2)
    assert scores["all"].precision == pytest.approx(0.4)
    assert scores["all"].recall == pytest.approx(2 / 3)
    assert scores["all"].f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_scores(gold[:2], predicted[:1])


def test_masked_tag_crossentropy_against_numpy():
    from bertkit.tasks.tagging import masked_tag_crossentropy

    probs = RNG.dirichlet(np.ones(K), size=(B, T)).astype("float32")
    tags = np.array([[0, 2, 1, 1], [1, 0, -1, -1], [2, -1, -1, -1]])
    expected = [np.mean([-np.log(probs[b, t, tags[b, t]]) for t in range(T) if tags[b, t] >= 0])
                for b in range(B)]
    got = keras.ops.convert_to_numpy(masked_tag_crossentropy(tags, probs))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def tiny_encoder():
    from bertkit.models import build_transformer_model

    return build_transformer_model(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)


@pytest.mark.parametrize("kind", ["softmax", "crf", "globalpointer"])
@pytest.mark.parametrize("context_width", [None, 3])
def test_tagging_heads_label_decode_train_and_round_trip(kind, context_width, tmp_path):
    from bertkit.data import DataGenerator, sequence_padding
    from bertkit.tasks.tagging import CRFTaggingHead, GlobalPointerHead, SoftmaxTaggingHead

    types = ["PER", "LOC"]
    common = dict(name="Tagger", context_width=context_width)
    head = {"softmax": SoftmaxTaggingHead(types, **common),
            "crf": CRFTaggingHead(types, lr_multiplier=10, **common),
            "globalpointer": GlobalPointerHead(types, head_size=8, **common)}[kind]
    model = head.attach(tiny_encoder())
    spans = [[(1, 3, "PER"), (4, 5, "LOC")], [(2, 3, "LOC")], [(1, 2, "PER")]]
    lengths = [7, 5, 3]
    labels = [head.labels(s, n) for s, n in zip(spans, lengths)]
    # The labels read back as the same entities through the head's own decoding.
    if kind == "globalpointer":
        padded = np.zeros((3, 2, 7, 7), "float32")
        for b, y in enumerate(labels):
            padded[b, :, :lengths[b], :lengths[b]] = y
        outputs = padded * 2 - 1  # logits above 0 exactly at the gold spans
    else:
        assert labels[0].tolist() == [0, 1, 2, 0, 3, 0, 0]  # O B-PER I-PER O B-LOC O O
        padded = sequence_padding(labels, value=-1)
        outputs = np.eye(len(head.tags))[np.maximum(padded, 0)] * 5.0
    mask = (np.arange(7)[None] < np.array(lengths)[:, None]).astype("float32")
    decoded = outputs if kind != "crf" else head.crf.decode(outputs, mask)
    assert head.spans(decoded, mask) == [set(s) for s in spans]

    # Training with unknown lengths (a tf.data signature of [None, None]) lowers the loss.
    token_ids = [np.random.default_rng(b).integers(1, 30, n) for b, n in enumerate(lengths)]
    items = list(zip(token_ids, labels))

    class Batches(DataGenerator):
        def __iter__(self, random=False):
            ids = sequence_padding([i for i, _ in items])
            y = padded if kind == "globalpointer" else sequence_padding(
                [y for _, y in items], value=-1)
            yield (ids, np.zeros_like(ids)), y

    gp = kind == "globalpointer"
    label_spec = ("float32", [None, 2, None, None]) if gp else ("int32", [None, None])
    dataset = Batches(items, batch_size=3).to_dataset(
        (("int32", "int32"), label_spec[0]), (([None, None], [None, None]), label_spec[1]))
    model.compile(keras.optimizers.Adam(1e-2), loss=head.loss)
    history = model.fit(dataset, steps_per_epoch=1, epochs=15, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]

    # The decoder model (Viterbi in the graph for the CRF) agrees with eager decoding.
    ids = sequence_padding(token_ids)
    x = [ids, np.zeros_like(ids)]
    outputs = model.predict_on_batch(x)
    predicted = head.spans(head.decoder(model).predict_on_batch(x), ids > 0)
    assert predicted == head.spans(outputs if kind != "crf" else outputs, ids > 0)
    model.save(str(tmp_path / "tagger.keras"))
    again = keras.models.load_model(str(tmp_path / "tagger.keras"), compile=False)
    np.testing.assert_allclose(again.predict_on_batch(x), outputs, atol=1e-6)
    assert again.get_layer("Tagger").get_config() == head.get_config()
    assert (head.context is None) == (context_width is None)


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_local_context_against_numpy_and_blind_to_padding():
    from bertkit.tasks.tagging import LocalContext

    width, hidden = 5, 6
    x = RNG.normal(size=(2, 7, hidden)).astype("float32")
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3], "float32")
    layer = LocalContext(width)
    actual = keras.ops.convert_to_numpy(layer(x, padding_mask=mask))
    kernel, bias = (w.astype("float64") for w in layer.conv.get_weights())
    assert kernel.shape == (width, hidden, hidden)
    zeroed = np.pad(x * mask[..., None], ((0, 0), (width // 2, width // 2), (0, 0)))
    conv = np.stack([sum(zeroed[:, t + k] @ kernel[k] for k in range(width))
                     for t in range(7)], axis=1) + bias
    np.testing.assert_allclose(actual, x * mask[..., None] + gelu(conv), atol=1e-5)
    # A sentence's real tokens come out the same however far, and with what, it is padded.
    short = keras.ops.convert_to_numpy(layer(x[1:, :4], padding_mask=mask[1:, :4]))
    np.testing.assert_allclose(short, actual[1:, :4], atol=1e-6)
    for bad in (1, 2, 4, 3.0, True, None):
        with pytest.raises(ValueError, match="width"):
            LocalContext(bad)


def test_tagging_heads_refuse_bad_types():
    from bertkit.tasks.tagging import SoftmaxTaggingHead

    for bad in ([], ["PER", "PER"], ["PER", ""]):
        with pytest.raises(ValueError, match="tag_types"):
            SoftmaxTaggingHead(bad)


def test_efficient_global_pointer_draws_its_two_kernels_apart():
    # One initializer instance for both dense layers would fill them from one seed: the
    # bias kernel would repeat the first numbers of the projection kernel.
    from bertkit.tasks.tagging import EfficientGlobalPointer

    keras.utils.set_random_seed(0)
    layer = EfficientGlobalPointer(heads=8, head_size=32)
    layer.build((None, None, 64))
    projection = layer.dense.kernel.numpy().ravel()
    bias = layer.bias_dense.kernel.numpy().ravel()
    n = bias.size  # 64 x 16
    assert abs(np.corrcoef(projection[:n], bias)[0, 1]) < 0.25
