"""Sequence labelling: the tagging heads, the layer and loss they share, serving decoding.

Three heads share one contract (:class:`TaggingHead`): ``head.attach(encoder)`` is the
model, ``head.loss`` its Keras loss, ``head.labels(spans, length)`` the training target of
a sentence's entities, ``head.decoder(model)`` the model that predicts what
``head.spans(decoded, padding_mask)`` turns into entities, all as token spans ``(start,
end, type)`` with ``end`` exclusive:

- :class:`SoftmaxTaggingHead`: an IOB2 tag per token, independently (the baseline);
- :class:`CRFTaggingHead`: IOB2 tag scores under a linear-chain
  :class:`~bertkit.tasks.crf.ConditionalRandomField` (transitions, sequence
  log-likelihood, batched Viterbi);
- :class:`GlobalPointerHead`: every span scored for every type
  (:mod:`bertkit.tasks.global_pointer`), so nested entities too.

Each may put a :class:`LocalContext` (each token with its neighbours) between the encoder
and its scores. Tags padded with -1 mark padded positions, so the losses need no separate
mask input. Each head's ``serving_outputs`` puts its decoding (``tags``, ``spans``) in an
exported graph (:mod:`bertkit.export`).

Tag schemes (BIO, IOB2, BIOES) and entity scores are :mod:`bertkit.tasks.spans`.

Example:

>>> head = CRFTaggingHead(tag_types=['PER', 'LOC', 'ORG'], name='Tagger')
>>> model = head.attach(build_transformer_model(config, checkpoint))
>>> model.compile(optimizer, loss=head.loss)       # y: head.labels(spans, length), padded -1
>>> decoded = head.decoder(model).predict(x)       # Viterbi paths, in the graph
>>> head.spans(decoded, token_ids > 0)             # [{(start, end, type), ...}, ...]
"""
import types

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bertkit.layers import gelu_erf  # Erf, which every exporter takes (not Keras's Erfc)
from bertkit.tasks.base import TaskHead, padding_mask_of
from bertkit.tasks.crf import ConditionalRandomField
from bertkit.tasks.global_pointer import (EfficientGlobalPointer, GlobalPointer,  # noqa: F401
                                          global_pointer_loss,
                                          multilabel_categorical_crossentropy)
from bertkit.tasks.spans import spans_to_tags, tags_to_spans

# The layers and losses of the CRF and GlobalPointer modules are imported from here too.
__all__ = ["TaggingHead", "SoftmaxTaggingHead", "CRFTaggingHead", "GlobalPointerHead",
           "LocalContext", "masked_tag_crossentropy", "iob2_span_tensor",
           "ConditionalRandomField", "GlobalPointer", "EfficientGlobalPointer",
           "multilabel_categorical_crossentropy", "global_pointer_loss"]


@keras.saving.register_keras_serializable(package="bertkit")
class LocalContext(keras.layers.Layer):
    """Each token's vector plus what its neighbours say: ``x + gelu(conv(x))``, a width-
    ``width`` convolution over the sequence with a residual, ``[B, T, H] -> [B, T, H]``.

    Entity boundaries are local ("the character before", "the two after"). An encoder
    with absolute position embeddings learns to attend to a token's neighbours slowly, so
    a small or briefly trained one tags poorly; one convolution in the head hands every
    token its neighbours directly (the part a BiLSTM plays in BERT-BiLSTM-CRF, at a
    fraction of its cost). Padded positions are zeroed first, so a token's output never
    depends on how far its batch is padded.

    Args:
        width: how many tokens the convolution sees, centred on each: odd, at least 3.
    """

    def __init__(self, width=3, **kwargs):
        super().__init__(**kwargs)
        if isinstance(width, bool) or not isinstance(width, int) or width < 3 or width % 2 == 0:
            raise ValueError(f"LocalContext width must be an odd integer >= 3, got {width!r}")
        self.width = width

    def build(self, inputs_shape, padding_mask_shape=None):
        self.conv = keras.layers.Conv1D(inputs_shape[-1], self.width, padding="same",
                                        activation=gelu_erf, dtype=self.dtype_policy,
                                        name="Convolution")
        self.conv.build(inputs_shape)

    def call(self, inputs, padding_mask=None):
        if padding_mask is not None:
            inputs = inputs * ops.cast(padding_mask, inputs.dtype)[..., None]
        return inputs + self.conv(inputs)

    def compute_output_spec(self, inputs, padding_mask=None):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def masked_tag_crossentropy(y_true, y_pred):
    """Cross-entropy of tag probabilities ``[B, T, K]`` against tags ``[B, T]``, averaged
    over each sentence's labelled positions (tags below 0, padding, are left out): ``[B]``."""
    y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:2]), "int32")
    mask = ops.cast(y_true >= 0, "float32")
    losses = ops.sparse_categorical_crossentropy(ops.maximum(y_true, 0),
                                                 ops.cast(y_pred, "float32"))
    return ops.sum(losses * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


def iob2_span_tensor(tags):
    """The entities of IOB2 tag paths as one tensor, for a serving graph.

    Args:
        tags: ``[B, T]`` int tag indices as :class:`SoftmaxTaggingHead` and
            :class:`CRFTaggingHead` number them (0 ``O``, ``1 + 2t`` ``B-t``, ``2 + 2t``
            ``I-t``; -1 at padding).

    Returns:
        ``[N, 4]`` int32 rows ``(sentence, start, end, type)``, ``end`` exclusive, in
        sentence and position order: what :func:`~bertkit.tasks.spans.tags_to_spans`
        reads (with CoNLL's lenient rule, an ``I-t`` that continues no ``t`` entity starts
        one), in TensorFlow ops that export to ONNX (no loop).
    """
    tags = tf.cast(tags, tf.int32)
    inside = tags > 0
    kind = tf.where(inside, (tags - 1) // 2, -1)
    is_begin = inside & ((tags - 1) % 2 == 0)
    before = tf.pad(kind[:, :-1], [[0, 0], [1, 0]], constant_values=-1)  # kind at t - 1
    continues = inside & ~is_begin & tf.equal(before, kind)
    starts = inside & ~continues
    # An entity's last token is followed by anything but its continuation.
    following = tf.pad(continues[:, 1:], [[0, 0], [0, 1]], constant_values=False)
    lasts = inside & ~following
    # Starts and last tokens alternate along each row, so the n-th start in row-major
    # order pairs with the n-th last token.
    first, last = tf.cast(tf.where(starts), tf.int32), tf.cast(tf.where(lasts), tf.int32)
    return tf.stack([first[:, 0], first[:, 1], last[:, 1] + 1, tf.gather_nd(kind, first)],
                    axis=1)


# -- tagging heads ------------------------------------------------------------------------


class TaggingHead(TaskHead):
    """Base of the token-level heads: what a sequence-labelling script relies on.

    Args:
        tag_types: the entity types, e.g. ``['PER', 'LOC', 'ORG']``.
        dropout_rate: dropout on the encoder's output during training.
        context_width: when given (odd, >= 3), a :class:`LocalContext` of that width
            between the dropout and the tagging layer; ``None``: the encoder's output
            goes to it as it is.

    A subclass provides ``call``, :meth:`loss`, :meth:`labels` and :meth:`spans` (and
    :meth:`decoder` when decoding is more than reading the output).
    """

    def __init__(self, tag_types, dropout_rate=0.1, context_width=None, **kwargs):
        super().__init__(**kwargs)
        tag_types = list(tag_types)
        if not tag_types or len(set(tag_types)) != len(tag_types) \
                or not all(isinstance(t, str) and t for t in tag_types):
            raise ValueError(f"tag_types must be distinct non-empty names, got {tag_types!r}")
        self.tag_types = tag_types
        self.dropout_rate = dropout_rate
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)
        self.context_width = context_width
        self.context = None if context_width is None else LocalContext(
            context_width, name="Context", dtype=self.dtype_policy)

    def get_config(self):
        return {**super().get_config(), "tag_types": self.tag_types,
                "dropout_rate": self.dropout_rate, "context_width": self.context_width}

    def build(self, inputs_shape, padding_mask_shape=None):
        if self.context is not None:
            self.context.build(inputs_shape)

    def _features(self, inputs, padding_mask, training):
        """The encoder's output as the tagging layer sees it: dropout, then the context."""
        features = self.dropout(inputs, training=training)
        if self.context is not None:
            features = self.context(features, padding_mask=padding_mask)
        return features

    def loss(self, y_true, y_pred):
        """The Keras loss of this head's output against :meth:`labels` (padded -1)."""
        raise NotImplementedError

    def labels(self, spans, length):
        """The training target of one sentence of ``length`` tokens with entities
        ``spans`` ``[(start, end, type name)]`` (token positions, ``end`` exclusive)."""
        raise NotImplementedError

    def decoder(self, model):
        """The model whose output :meth:`spans` reads, given the model ``attach`` built
        (here ``model`` itself)."""
        return model

    def spans(self, decoded, padding_mask):
        """The predicted entities of a batch: one set of ``(start, end, type name)`` per
        sentence, from :meth:`decoder`'s output and the ``[B, T]`` padding mask."""
        raise NotImplementedError

    def serving_outputs(self, outputs, padding_mask):
        """``spans``: ``[N, 4]`` int32 rows ``(sentence, start, end, type)`` of the
        batch's entities (token positions, ``end`` exclusive, ``type`` an index into
        :attr:`tag_types`), sorted by sentence; a subclass adds its own outputs."""
        raise NotImplementedError


class _IOB2Tagging(TaggingHead):
    """IOB2 tags over ``tag_types``: 0 is ``O``, ``1 + 2t`` is ``B-t``, ``2 + 2t`` ``I-t``."""

    @property
    def tags(self):
        """The tag names, in the order of the output's last axis."""
        return ["O"] + [f"{p}-{t}" for t in self.tag_types for p in ("B", "I")]

    def labels(self, spans, length):
        index = {tag: i for i, tag in enumerate(self.tags)}
        spans = [span for span in spans if span[2] in self.tag_types]
        return np.array([index[tag] for tag in spans_to_tags(spans, length)], dtype="int32")

    def _spans_of_paths(self, paths, padding_mask):
        names = self.tags
        lengths = np.asarray(padding_mask).sum(axis=1).astype(int)
        return [set(tags_to_spans([names[i] for i in path[:n]]))
                for path, n in zip(np.asarray(paths), lengths)]

    def _tag_scores(self, inputs, padding_mask, training):
        return self.dense(self._features(inputs, padding_mask, training))

    def _serving_paths(self, paths):
        """``tags`` (the paths, -1 at padding) and their ``spans``, see
        :meth:`TaggingHead.serving_outputs`."""
        return {"tags": paths, "spans": iob2_span_tensor(paths)}

    def build(self, inputs_shape, padding_mask_shape=None):
        super().build(inputs_shape)
        self.dense = keras.layers.Dense(len(self.tags), dtype="float32", name="Tags")
        self.dense.build(inputs_shape)


@keras.saving.register_keras_serializable(package="bertkit")
class SoftmaxTaggingHead(_IOB2Tagging):
    """An IOB2 tag per token, each chosen on its own: ``[B, T, H] -> [B, T, 1 + 2N]``
    probabilities (float32). The baseline the CRF and GlobalPointer must beat."""

    def call(self, inputs, padding_mask=None, training=None):
        return ops.softmax(self._tag_scores(inputs, padding_mask, training), axis=-1)

    def compute_output_spec(self, inputs, padding_mask=None, training=None):
        return keras.KerasTensor((*inputs.shape[:2], len(self.tags)), dtype="float32")

    def loss(self, y_true, y_pred):
        return masked_tag_crossentropy(y_true, y_pred)

    def spans(self, outputs, padding_mask):
        return self._spans_of_paths(np.argmax(np.asarray(outputs), axis=-1), padding_mask)

    def serving_outputs(self, outputs, padding_mask):
        """``tags`` ``[B, T]`` (int32 tag indices into :attr:`tags`, each the most probable,
        -1 at padding) and ``spans`` (see :meth:`TaggingHead.serving_outputs`)."""
        best = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        return self._serving_paths(tf.where(padding_mask > 0, best, -1))


@keras.saving.register_keras_serializable(package="bertkit")
class CRFTaggingHead(_IOB2Tagging):
    """IOB2 tag scores under a linear-chain CRF: ``[B, T, H] -> [B, T, 1 + 2N]`` emissions
    (float32); :meth:`loss` is the sequence's negative log-likelihood and :meth:`spans`
    decodes the Viterbi path.

    Args:
        lr_multiplier: of the CRF's transitions (see :class:`ConditionalRandomField`).
        tag_types, dropout_rate, context_width: as :class:`TaggingHead`.
    """

    def __init__(self, tag_types, lr_multiplier=1.0, dropout_rate=0.1, context_width=None,
                 **kwargs):
        super().__init__(tag_types, dropout_rate=dropout_rate, context_width=context_width,
                         **kwargs)
        self.crf = ConditionalRandomField(lr_multiplier=lr_multiplier, name="CRF")

    def build(self, inputs_shape, padding_mask_shape=None):
        super().build(inputs_shape)
        self.crf.build((*inputs_shape[:-1], len(self.tags)))

    def call(self, inputs, padding_mask=None, training=None):
        return self.crf(self._tag_scores(inputs, padding_mask, training))

    def compute_output_spec(self, inputs, padding_mask=None, training=None):
        return keras.KerasTensor((*inputs.shape[:2], len(self.tags)), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.crf.lr_multiplier}

    def loss(self, y_true, y_pred):
        return self.crf.loss(y_true, y_pred)

    def decoder(self, model):
        """``model`` with the Viterbi paths ``[B, T]`` (int32, -1 at padding) as output:
        decoding runs in the same compiled graph as the encoder, not op by op."""
        cached = getattr(self, "_decoder_cache", None)
        if cached is None or cached.model is not model:
            paths = _ViterbiDecoding(self.crf, name="Viterbi")(model.output,
                                                                padding_mask_of(model))
            # A plain object, not layer state: a built layer must not track new models,
            # and weight saving must not walk from the head into the decoder and back.
            cached = types.SimpleNamespace(model=model, decoder=keras.Model(
                model.inputs, paths, name=f"{model.name}_viterbi"))
            object.__setattr__(self, "_decoder_cache", cached)
        return cached.decoder

    def serving_outputs(self, outputs, padding_mask):
        """``tags`` ``[B, T]`` (the Viterbi paths as int32 indices into :attr:`tags`, -1 at
        padding) and ``spans`` (see :meth:`TaggingHead.serving_outputs`)."""
        return self._serving_paths(self.crf.decode(outputs, padding_mask))

    def spans(self, decoded, padding_mask):
        """Entities of Viterbi paths (:meth:`decoder`'s output; emissions are decoded
        here first, eagerly)."""
        decoded = np.asarray(decoded)
        if decoded.ndim == 3:
            decoded = ops.convert_to_numpy(self.crf.decode(decoded, padding_mask))
        return self._spans_of_paths(decoded, padding_mask)


class _ViterbiDecoding(keras.layers.Layer):
    """A CRF's :meth:`~ConditionalRandomField.decode` as a layer, so a functional model
    can end in it (a prediction model only: it holds the CRF, it is not saved)."""

    def __init__(self, crf, **kwargs):
        super().__init__(**kwargs)
        self.crf = crf

    def call(self, emissions, padding_mask):
        return self.crf.decode(emissions, padding_mask)

    def compute_output_spec(self, emissions, padding_mask):
        return keras.KerasTensor(emissions.shape[:2], dtype="int32")


@keras.saving.register_keras_serializable(package="bertkit")
class GlobalPointerHead(TaggingHead):
    """Every span scored for every type: ``[B, T, H] -> [B, N, T, T]`` logits (float32);
    a span is predicted where its logit is above 0, so entities may nest.

    Args:
        head_size: the width of the span queries and keys.
        efficient: :class:`EfficientGlobalPointer` (shared query and key, per-type biases;
            the default) or :class:`GlobalPointer` (a query and key per type).
        tag_types, dropout_rate, context_width: as :class:`TaggingHead`.
    """

    def __init__(self, tag_types, head_size=64, efficient=True, dropout_rate=0.1,
                 context_width=None, **kwargs):
        super().__init__(tag_types, dropout_rate=dropout_rate, context_width=context_width,
                         **kwargs)
        self.head_size, self.efficient = head_size, efficient
        kind = EfficientGlobalPointer if efficient else GlobalPointer
        self.pointer = kind(len(self.tag_types), head_size, name="Pointer",
                            dtype=self.dtype_policy)

    def build(self, inputs_shape, padding_mask_shape=None):
        super().build(inputs_shape)
        self.pointer.build(inputs_shape)

    def call(self, inputs, padding_mask=None, training=None):
        return self.pointer(self._features(inputs, padding_mask, training),
                            padding_mask=padding_mask)

    def compute_output_spec(self, inputs, padding_mask=None, training=None):
        t = inputs.shape[1]
        return keras.KerasTensor((inputs.shape[0], len(self.tag_types), t, t), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "head_size": self.head_size,
                "efficient": self.efficient}

    def loss(self, y_true, y_pred):
        return global_pointer_loss(y_true, y_pred)

    def labels(self, spans, length):
        target = np.zeros((len(self.tag_types), length, length), dtype="float32")
        index = {t: i for i, t in enumerate(self.tag_types)}
        for start, end, kind in spans:
            if kind in index:
                target[index[kind], start, end - 1] = 1
        return target

    def serving_outputs(self, outputs, padding_mask):
        """``spans`` (see :meth:`TaggingHead.serving_outputs`): every span whose logit is
        above 0, so entities may nest or overlap."""
        found = tf.cast(tf.where(outputs > 0), tf.int32)      # [N, 4]: (b, type, start, end)
        sentence, kind, start, last = tf.unstack(found, num=4, axis=1)
        return {"spans": tf.stack([sentence, start, last + 1, kind], axis=1)}

    def spans(self, outputs, padding_mask):
        outputs = np.asarray(outputs)
        found = [set() for _ in range(len(outputs))]
        for b, n, start, end in zip(*np.nonzero(outputs > 0)):
            found[b].add((int(start), int(end) + 1, self.tag_types[n]))
        return found
