"""Triple extraction, "half pointer, half tagging" (Su Jianlin's design in bert4keras).

A text holds ``(subject, predicate, object)`` triples. The model reads it once:

1. :class:`SubjectPointerHead`: for every token, the probability that a subject starts
   there and that one ends there, ``[B, T, 2]``.
2. :class:`ObjectPointerHead`: given one subject (its start and end token), the
   probability that an object of each predicate starts and ends at every token,
   ``[B, T, P, 2]``. The subject enters through a
   :class:`~bertkit.layers.ConditionalLayerNormalization` of the final hidden states,
   conditioned on the hidden states at the subject's start and end, concatenated.

bert4keras's example conditions a fresh norm on the last block's residual sum; here one
conditional norm is applied on the encoder's output (the widely used cheap variant), so
the encoder runs once per text and each subject of the text costs only the small head.
The subject comes from the encoder's own output, so it cannot condition the encoder's
norms in the same pass; for a condition known beforehand (a class, a vector from another
model), ``build_transformer_model(..., layer_norm_cond=...)`` makes every norm of the
transformer conditional.

Training feeds one gold subject per text per step (:func:`sample_subject`); the loss is
binary cross-entropy averaged over real tokens (:class:`PointerLoss` with the padding
mask as ``sample_weight``). Decoding pairs each start above a threshold with the nearest
end at or after it (:func:`decode_subjects`, :func:`decode_objects`) and maps token spans
back to exact substrings of the text through ``Tokenizer.rematch`` (:func:`decode_triples`).

Example:

>>> encoder = build_transformer_model(config_path, checkpoint_path)
>>> extractor = TripleExtractor(encoder, predicates=['别称', '属于', '颜色'])
>>> extractor.compile(keras.optimizers.Adam(5e-5))
>>> extractor.model.fit(batches, ...)    # x: [token_ids, segment_ids, subject_ids]
>>> extractor.extract(['银杏又名白果。'], tokenizer)
[[Triple(subject='银杏', predicate='别称', object='白果', subject_span=(0, 2),
         object_span=(4, 6))]]
"""
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from bertkit.distribute import predict_on_batch
from bertkit.data import sequence_padding
from bertkit.layers import ConditionalLayerNormalization
from bertkit.tasks.base import TaskHead

__all__ = ["SubjectPointerHead", "ObjectPointerHead", "PointerLoss", "Triple",
           "TripleExtractor", "decode_subjects", "decode_objects", "char_span",
           "decode_triples", "token_span", "subject_labels", "object_labels",
           "sample_subject", "triple_scores"]


def _register(cls):
    return keras.saving.register_keras_serializable(package="bertkit")(cls)


@_register
class SubjectPointerHead(TaskHead):
    """Subject start/end probabilities per token: ``[B, T, H] -> [B, T, 2]``.

    Args:
        exponent: the sigmoid is raised to this power (bert4keras: 2). A power ``n``
            multiplies the loss gradient of a positive label by about ``n``, which
            offsets how rare span boundaries are among tokens.
        kernel_initializer: initializer of the output layer.
    """

    def __init__(self, exponent=2, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_exponent(exponent)
        self.exponent = exponent
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(2, dtype="float32", name="Dense",
                                        kernel_initializer=self.kernel_initializer)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs, padding_mask=None, training=None):
        return ops.sigmoid(self.dense(inputs)) ** self.exponent

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)

    def get_config(self):
        config = super().get_config()
        config.update(exponent=self.exponent,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@_register
class ObjectPointerHead(TaskHead):
    """Object start/end probabilities per token and predicate, given a subject.

    ``head(hidden, ids)`` with ``hidden: [B, T, H]`` and ``ids: [B, 2]`` (the subject's
    start and end token, inclusive; the head's condition, so ``head.attach(encoder,
    [subject_input])`` builds the object model) returns ``[B, T, P, 2]``. The
    hidden states at the two tokens, concatenated (``[B, 2H]``), condition a layer norm
    of ``hidden`` (zero-initialised projections), then a dense layer gives ``P * 2``
    sigmoids per token.

    Args:
        num_predicates: the number of predicates P.
        exponent: power of the sigmoid (bert4keras: 4), see :class:`SubjectPointerHead`.
        epsilon: epsilon of the conditional layer norm.
        kernel_initializer: initializer of the output layer.
    """

    def __init__(self, num_predicates, exponent=4, epsilon=1e-12,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_predicates, bool) or not isinstance(num_predicates, int) \
                or num_predicates < 1:
            raise ValueError(f"num_predicates must be a positive int, got {num_predicates!r}")
        _check_exponent(exponent)
        self.num_predicates = num_predicates
        self.exponent = exponent
        self.epsilon = epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # "Norm" in the variable paths keeps the norm out of weight decay
        # (``exclude_from_weight_decay=['Norm', 'bias']``), as for the encoder's norms.
        self.norm = ConditionalLayerNormalization(epsilon=epsilon, name="Norm",
                                                  dtype=self.dtype_policy)
        self.dense = keras.layers.Dense(num_predicates * 2, dtype="float32", name="Dense",
                                        kernel_initializer=self.kernel_initializer)

    def build(self, inputs_shape, subject_ids_shape=None):
        width = inputs_shape[-1]
        self.norm.build(inputs_shape, (inputs_shape[0], 2 * width))
        self.dense.build(inputs_shape)

    def call(self, inputs, subject_ids, padding_mask=None, training=None):
        width = inputs.shape[-1]
        ids = ops.expand_dims(ops.cast(subject_ids, "int32"), -1)        # [B, 2, 1]
        # [B, T, H] gathered at [B, 2] -> [B, 2, H] -> [B, 2H]
        condition = ops.reshape(ops.take_along_axis(inputs, ids, axis=1), (-1, 2 * width))
        x = self.norm(inputs, condition=condition)
        probs = ops.sigmoid(self.dense(x)) ** self.exponent             # [B, T, P*2]
        return ops.reshape(probs, (ops.shape(probs)[0], -1, self.num_predicates, 2))

    def compute_output_shape(self, inputs_shape, subject_ids_shape=None, padding_mask_shape=None):
        return (*inputs_shape[:-1], self.num_predicates, 2)

    def get_config(self):
        config = super().get_config()
        config.update(num_predicates=self.num_predicates, exponent=self.exponent,
                      epsilon=self.epsilon,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


def _check_exponent(exponent):
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or exponent <= 0:
        raise ValueError(f"exponent must be a positive number, got {exponent!r}")


@_register
class PointerLoss(keras.losses.Loss):
    """Binary cross-entropy of pointer probabilities, averaged over real tokens.

    Per token it is the mean over start and end, summed over predicates for object
    pointers ``[B, T, P, 2]`` (as bert4keras). Pass the padding mask ``[B, T]`` as
    ``sample_weight``: the default reduction ``'mean_with_sample_weight'`` then divides
    by the number of real tokens in the batch.
    """

    def __init__(self, reduction="mean_with_sample_weight", name="pointer_loss", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        loss = ops.mean(ops.binary_crossentropy(y_true, y_pred), axis=-1)
        if len(loss.shape) > 2:  # object pointers: [B, T, P] -> [B, T]
            loss = ops.sum(loss, axis=tuple(range(2, len(loss.shape))))
        return loss


class Triple(NamedTuple):
    """An extracted triple; spans are ``(start, end)`` character offsets, end exclusive,
    so ``text[start:end]`` is the subject (object) exactly."""

    subject: str
    predicate: str
    object: str
    subject_span: tuple
    object_span: tuple


class TripleExtractor:
    """The extractor's Keras models on top of an encoder, and text-level decoding.

    Args:
        encoder: a model from ``build_transformer_model`` with inputs
            ``[Input-Token, Input-Segment]`` and the sequence ``[B, T, H]`` as output.
        predicates: the predicate names; index ``p`` of the object pointer is
            ``predicates[p]``.
        subject_exponent, object_exponent: powers of the heads' sigmoids.
        dtype: dtype policy of the heads, e.g. ``'mixed_bfloat16'`` to match an encoder
            built with that policy; ``None`` follows Keras's global policy. Their
            probabilities are float32 under any policy.

    Attributes:
        model: the training model, inputs ``[token_ids, segment_ids, subject_ids]``
            (``subject_ids: [B, 2]``), outputs ``[subject_probs, object_probs]``.
        subject_model: ``[token_ids, segment_ids] -> [subject_probs, hidden]``.
        object_model: ``[hidden, subject_ids] -> object_probs``, so the encoder runs
            once per text however many subjects it holds.
    """

    def __init__(self, encoder, predicates, subject_exponent=2, object_exponent=4, dtype=None):
        if isinstance(encoder.output, (list, tuple)) or len(encoder.output.shape) != 3:
            raise ValueError("TripleExtractor needs an encoder with one sequence output "
                             "[B, T, H] (build it without with_pool/with_mlm)")
        if len(encoder.inputs) != 2:
            raise ValueError(f"TripleExtractor needs an encoder with inputs [token_ids, "
                             f"segment_ids], got {len(encoder.inputs)} inputs")
        predicates = list(predicates)
        if not predicates or len(set(predicates)) != len(predicates):
            raise ValueError(f"predicates must be a non-empty list of distinct names, "
                             f"got {predicates!r}")
        self.predicates = predicates
        self.subject_head = SubjectPointerHead(subject_exponent, name="Subject-Pointer",
                                               dtype=dtype)
        self.object_head = ObjectPointerHead(len(predicates), object_exponent,
                                             name="Object-Pointer", dtype=dtype)
        hidden = encoder.output
        subject_ids = keras.Input(shape=(2,), dtype="int32", name="Input-Subject")
        subject_probs = self.subject_head(hidden)
        object_probs = self.object_head(hidden, subject_ids=subject_ids)
        self.model = keras.Model(encoder.inputs + [subject_ids], [subject_probs, object_probs],
                                 name="triple_extractor")
        self.subject_model = keras.Model(encoder.inputs, [subject_probs, hidden],
                                         name="triple_subjects")
        hidden_in = keras.Input(shape=(None, hidden.shape[-1]), dtype=hidden.dtype,
                                name="Input-Hidden")
        subject_in = keras.Input(shape=(2,), dtype="int32", name="Input-Subject")
        self.object_model = keras.Model(
            [hidden_in, subject_in], self.object_head(hidden_in, subject_ids=subject_in),
            name="triple_objects")

    def compile(self, optimizer, **kwargs):
        """Compiles :attr:`model` with a :class:`PointerLoss` on each output."""
        self.model.compile(optimizer=optimizer, loss=[PointerLoss(), PointerLoss()], **kwargs)

    def extract(self, texts, tokenizer, maxlen=None, batch_size=32, start_threshold=0.6,
                end_threshold=0.5):
        """The triples of each text, decoded with the given thresholds.

        Args:
            texts: a list of str.
            tokenizer: the :class:`~bertkit.tokenizers.Tokenizer` of the encoder.
            maxlen: tokens per text (texts are truncated to it).
            batch_size: texts per forward pass.
            start_threshold, end_threshold: see :func:`decode_subjects`.

        Returns:
            One list of :class:`Triple` per text.
        """
        if isinstance(texts, str):
            raise TypeError("extract expects a list of texts, got a single str")
        results = []
        for i in range(0, len(texts), batch_size):
            results.extend(self._extract_batch(list(texts[i:i + batch_size]), tokenizer,
                                               maxlen, start_threshold, end_threshold))
        return results

    def _extract_batch(self, texts, tokenizer, maxlen, start_threshold, end_threshold):
        tokens = [tokenizer.tokenize(text, maxlen=maxlen) for text in texts]
        mappings = [tokenizer.rematch(text, t) for text, t in zip(texts, tokens)]
        token_ids = sequence_padding([tokenizer.tokens_to_ids(t) for t in tokens])
        subject_probs, hidden = predict_on_batch(self.subject_model,
                                                 [token_ids, np.zeros_like(token_ids)])
        subjects = [decode_subjects(p, m, start_threshold, end_threshold)
                    for p, m in zip(np.asarray(subject_probs), mappings)]
        rows = [b for b, spans in enumerate(subjects) for _ in spans]
        if not rows:
            return [[] for _ in texts]
        ids = np.array([span for spans in subjects for span in spans], dtype="int32")
        object_probs = np.asarray(predict_on_batch(self.object_model,
                                                   [np.asarray(hidden)[rows], ids]))
        results, k = [], 0
        for text, mapping, spans in zip(texts, mappings, subjects):
            results.append(decode_triples(text, mapping, spans, object_probs[k:k + len(spans)],
                                          self.predicates, start_threshold, end_threshold))
            k += len(spans)
        return results


# -- decoding ---------------------------------------------------------------------------


def _valid_tokens(length, mapping):
    """Tokens that may bound a span: those covering characters of the text."""
    valid = np.zeros(length, dtype=bool)
    if mapping is None:
        valid[:] = True
    else:
        for t, chars in enumerate(mapping[:length]):
            valid[t] = bool(chars)
    return valid


def _pair_pointers(start_probs, end_probs, valid, start_threshold, end_threshold):
    """Each start above its threshold with the nearest end at or after it."""
    starts = np.flatnonzero((start_probs > start_threshold) & valid)
    ends = np.flatnonzero((end_probs > end_threshold) & valid)
    spans = []
    for start in starts:
        after = ends[ends >= start]
        if after.size:
            spans.append((int(start), int(after[0])))
    return spans


def decode_subjects(probs, mapping=None, start_threshold=0.6, end_threshold=0.5):
    """Subject token spans from subject pointer probabilities.

    Args:
        probs: ``[T, 2]`` start and end probabilities (padding beyond the text allowed).
        mapping: ``Tokenizer.rematch`` of the text's tokens; tokens without characters
            (``[CLS]``, ``[SEP]``, padding) never bound a span. ``None``: all may.
        start_threshold: a start needs a probability above this.
        end_threshold: an end needs a probability above this.

    Returns:
        ``[(start, end)]`` token indices, end inclusive, in order of start.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[-1] != 2:
        raise ValueError(f"subject probabilities must be [T, 2], got shape {probs.shape}")
    valid = _valid_tokens(len(probs), mapping)
    return _pair_pointers(probs[:, 0], probs[:, 1], valid, start_threshold, end_threshold)


def decode_objects(probs, mapping=None, start_threshold=0.6, end_threshold=0.5):
    """Object spans per predicate from object pointer probabilities ``[T, P, 2]``.

    Starts and ends pair within each predicate, as in :func:`decode_subjects`.

    Returns:
        ``[(predicate_index, start, end)]``, by predicate then start.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[-1] != 2:
        raise ValueError(f"object probabilities must be [T, P, 2], got shape {probs.shape}")
    valid = _valid_tokens(len(probs), mapping)
    return [(p, start, end)
            for p in range(probs.shape[1])
            for start, end in _pair_pointers(probs[:, p, 0], probs[:, p, 1], valid,
                                             start_threshold, end_threshold)]


def char_span(mapping, start, end):
    """Token span ``(start, end)`` (end inclusive) -> character span, end exclusive."""
    if not mapping[start] or not mapping[end]:
        raise ValueError(f"tokens {start} and {end} must both cover characters of the text")
    return mapping[start][0], mapping[end][-1] + 1


def decode_triples(text, mapping, subjects, object_probs, predicates, start_threshold=0.6,
                   end_threshold=0.5):
    """Triples of one text from its subjects and their object pointer probabilities.

    Args:
        text: the original text.
        mapping: ``Tokenizer.rematch(text, tokens)``.
        subjects: ``[(start, end)]`` token spans, e.g. from :func:`decode_subjects`.
        object_probs: ``[S, T, P, 2]``, row ``i`` computed for ``subjects[i]``.
        predicates: ``P`` predicate names.
        start_threshold, end_threshold: see :func:`decode_subjects`.

    Returns:
        A list of distinct :class:`Triple`, whose strings are exact substrings of
        ``text`` at their spans.
    """
    object_probs = np.asarray(object_probs)
    if len(subjects) != len(object_probs):
        raise ValueError(f"{len(subjects)} subjects but object probabilities for "
                         f"{len(object_probs)}")
    if len(subjects) and object_probs.shape[2] != len(predicates):
        raise ValueError(f"object probabilities have {object_probs.shape[2]} predicates, "
                         f"predicates names {len(predicates)}")
    triples = []
    for (s_start, s_end), probs in zip(subjects, object_probs):
        s = char_span(mapping, s_start, s_end)
        for p, o_start, o_end in decode_objects(probs, mapping, start_threshold, end_threshold):
            o = char_span(mapping, o_start, o_end)
            triple = Triple(text[s[0]:s[1]], predicates[p], text[o[0]:o[1]], s, o)
            if triple not in triples:
                triples.append(triple)
    return triples


# -- training labels --------------------------------------------------------------------


def token_span(text, mapping, entity):
    """Token span of the first occurrence of ``entity`` in ``text`` on token boundaries.

    An occurrence counts when it starts at a token's first character and ends at a
    token's last character, among the tokens of ``mapping`` (so a truncated text only
    finds what its tokens still cover).

    Returns:
        ``(start, end)`` token indices, end inclusive, or ``None``.
    """
    if not entity:
        return None
    starts = {chars[0]: t for t, chars in enumerate(mapping) if chars}
    ends = {chars[-1]: t for t, chars in enumerate(mapping) if chars}
    position = text.find(entity)
    while position >= 0:
        start, end = starts.get(position), ends.get(position + len(entity) - 1)
        if start is not None and end is not None and start <= end:
            return start, end
        position = text.find(entity, position + 1)
    return None


def subject_labels(length, subjects):
    """``[T, 2]`` float32 targets: 1 at each subject's start (column 0) and end (1)."""
    labels = np.zeros((length, 2), dtype="float32")
    for start, end in subjects:
        labels[start, 0] = labels[end, 1] = 1
    return labels


def object_labels(length, num_predicates, objects):
    """``[T, P, 2]`` float32 targets from ``[(predicate_index, start, end)]``."""
    labels = np.zeros((length, num_predicates, 2), dtype="float32")
    for p, start, end in objects:
        labels[start, p, 0] = labels[end, p, 1] = 1
    return labels


def sample_subject(subjects, rng=np.random):
    """The subject span fed to the object pointer in one training step (bert4keras).

    A start is drawn among the gold subjects' starts, then an end among their ends at
    or after it. With several subjects this sometimes pairs one subject's start with
    another's end: a span that is no subject, whose object targets are all zero, which
    teaches the object pointer to stay silent for wrong subjects.

    Args:
        subjects: gold ``(start, end)`` token spans (at least one).
        rng: a ``numpy.random.RandomState`` (or the module).
    """
    if not subjects:
        raise ValueError("sample_subject needs at least one subject span")
    starts, ends = np.array(sorted(subjects)).T
    start = rng.choice(starts)
    return int(start), int(rng.choice(ends[ends >= start]))


# -- scores -----------------------------------------------------------------------------


def triple_scores(gold, predicted):
    """Precision, recall and F1 of exact ``(subject, predicate, object)`` matches.

    The LIC2019 rule: per text, gold and predicted triples are compared as sets; the
    counts are summed over texts. Divisions by zero give 0.

    Args:
        gold: one iterable of triples per text (:class:`Triple` or ``(s, p, o, ...)``).
        predicted: the same for the predictions, aligned with ``gold``.

    Returns:
        ``{'precision', 'recall', 'f1', 'correct', 'predicted', 'gold'}``.

    Example:

    >>> triple_scores([[('a', 'p', 'b'), ('a', 'p', 'c')]], [[('a', 'p', 'b')]])['f1']
    0.6666666666666666
    """
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} texts, predicted {len(predicted)}")
    correct = n_predicted = n_gold = 0
    for g, p in zip(gold, predicted):
        g = {tuple(t[:3]) for t in g}
        p = {tuple(t[:3]) for t in p}
        correct += len(g & p)
        n_predicted += len(p)
        n_gold += len(g)
    return {
        "precision": correct / n_predicted if n_predicted else 0.0,
        "recall": correct / n_gold if n_gold else 0.0,
        "f1": 2 * correct / (n_predicted + n_gold) if n_predicted + n_gold else 0.0,
        "correct": correct, "predicted": n_predicted, "gold": n_gold,
    }
