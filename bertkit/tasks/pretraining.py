"""Masked-language-model pretraining: packing, dynamic masking, the gathered MLM loss.

The path a corpus takes:

```
texts ──tokenize──▶ documents (token ids, no [CLS]/[SEP])
      ──pack_documents──▶ [N, maxlen] sequences, [CLS] d1 [SEP] d2 [SEP] d3...  (per epoch)
      ──mask_tokens──▶ masked ids + (positions, labels, weights) of P slots a sequence
      ──MaskedLMData──▶ tf.data batches ((ids, segments, positions), labels, weights)
      ──build_pretraining_model──▶ logits [B, P, V] of the masked slots only ──▶ model.fit
```

Packing fills every sequence to exactly ``maxlen`` tokens (only the very last one is
padded), so almost no compute goes to padding. Masking is drawn afresh for every
epoch from ``(seed, epoch)``, so a run is reproducible and a resumed run sees the
same masks as an uninterrupted one.

The loss is computed on ``P = ceil(mask_rate * maxlen)`` prediction slots a
sequence: the hidden states are gathered at the masked positions *before* the MLM
head, so the vocabulary projection costs ``P / T`` of a dense one (about a sixth at
15%). Slots a sequence does not need carry weight 0. The model outputs the float32
logits and is compiled with Keras's own sparse cross-entropy under the
``mean_with_sample_weight`` reduction, so the loss is the sum over real slots divided
by the number of real slots, and accuracy is a weighted metric over the same slots
(see :func:`compile_pretraining_model`).

Example:

>>> builder = build_transformer_model(config, with_mlm=True, return_keras_model=False)
>>> model = build_pretraining_model(builder, max_predictions=20)
>>> compile_pretraining_model(model, optimizer)
>>> data = MaskedLMData(documents, tokenizer, maxlen=128, batch_size=32, seed=0)
>>> model.fit(data.dataset(), steps_per_epoch=len(data), epochs=3)
"""
import math

import keras
import numpy as np
from keras import ops

from bertkit.models import intermediate_model

__all__ = ["max_predictions_for", "pack_documents", "mask_tokens", "MaskedLMData",
           "tokenize_documents", "GatherPositions", "build_pretraining_model",
           "label_logit_is_max", "MaskedLMAccuracy", "compile_pretraining_model"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def max_predictions_for(maxlen, mask_rate=0.15):
    """The number of prediction slots a sequence needs: ``ceil(mask_rate * maxlen)``."""
    return max(1, math.ceil(mask_rate * maxlen))


# -- packing ----------------------------------------------------------------------------


def pack_documents(documents, maxlen, cls_id, sep_id, pad_id=0, order=None):
    """Concatenates documents into sequences of exactly ``maxlen`` tokens.

    Each sequence starts with ``[CLS]``; the rest is filled with the stream
    ``d1 [SEP] d2 [SEP] ...``, so a document longer than the remaining room continues
    in the next sequence. Only the last sequence is padded. Every token of every
    document appears exactly once.

    Args:
        documents: list of token-id lists (no ``[CLS]``/``[SEP]`` of their own).
        maxlen: tokens a sequence (at least 2).
        cls_id, sep_id, pad_id: the special ids.
        order: optional permutation of the documents (a new one each epoch).

    Returns:
        int32 array ``[N, maxlen]``.

    Raises:
        ValueError: ``maxlen < 2``, or no tokens at all.

    Example:

    >>> pack_documents([[5, 6, 7], [8]], maxlen=4, cls_id=2, sep_id=3)
    array([[2, 5, 6, 7],
           [2, 3, 8, 3]], dtype=int32)
    """
    if not isinstance(maxlen, int) or maxlen < 2:
        raise ValueError(f"maxlen must be an int >= 2 ([CLS] and one token), got {maxlen!r}")
    order = range(len(documents)) if order is None else order
    pieces = []
    for index in order:
        pieces.append(np.asarray(documents[index], dtype=np.int32))
        pieces.append(np.asarray([sep_id], dtype=np.int32))
    if not pieces or sum(len(p) for p in pieces) == len(documents):
        raise ValueError("pack_documents needs at least one non-empty document")
    stream = np.concatenate(pieces)
    body = maxlen - 1
    count = -(-len(stream) // body)
    stream = np.pad(stream, (0, count * body - len(stream)), constant_values=pad_id)
    # [N * (T - 1)] -> [N, T - 1], then a [CLS] column in front: [N, T]
    packed = stream.reshape(count, body)
    return np.concatenate([np.full((count, 1), cls_id, np.int32), packed], axis=1)


# -- masking ----------------------------------------------------------------------------


def mask_tokens(token_ids, rng, vocab_size, mask_id, special_ids, max_predictions=None,
                mask_rate=0.15, mask_prob=0.8, random_prob=0.1):
    """BERT's dynamic masking of a batch of sequences.

    Of the maskable tokens of each sequence (all but ``special_ids``: ``[CLS]``,
    ``[SEP]``, padding, ...), ``round(mask_rate * n)`` (at least one, at most
    ``max_predictions``) are chosen uniformly; of those, ``mask_prob`` become
    ``[MASK]``, ``random_prob`` a random non-special token and the rest stay.

    Args:
        token_ids: int array ``[B, T]``.
        rng: a ``numpy.random.Generator`` (seed it for reproducible masks).
        vocab_size: random replacements are drawn from ``[0, vocab_size)`` minus specials.
        mask_id: the ``[MASK]`` id.
        special_ids: ids never chosen (padding included).
        max_predictions: slots a sequence (default ``ceil(mask_rate * T)``).
        mask_rate, mask_prob, random_prob: the rates above.

    Returns:
        ``(masked_ids [B, T], positions [B, P], labels [B, P], weights [B, P])``: the
        input ids, the chosen positions, their original ids, and 1.0 for a used slot,
        0.0 for an unused one (position 0, label 0).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> masked, positions, labels, weights = mask_tokens(ids, rng, 21128, 103, [0, 101, 102])
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2:
        raise ValueError(f"token_ids must be [batch, length], got shape {token_ids.shape}")
    if not (0 <= mask_prob and 0 <= random_prob and mask_prob + random_prob <= 1):
        raise ValueError(f"mask_prob + random_prob must be within [0, 1], got "
                         f"{mask_prob} + {random_prob}")
    batch, length = token_ids.shape
    slots = max_predictions or max_predictions_for(length, mask_rate)
    special = np.isin(token_ids, np.asarray(list(special_ids)))
    candidates = (~special).sum(axis=1)
    k = np.minimum(slots, np.maximum(1, np.rint(candidates * mask_rate).astype(int)))
    k = np.where(candidates > 0, np.minimum(k, candidates), 0)
    # A random key a token, specials last: the k smallest are a uniform choice.
    keys = np.where(special, np.inf, rng.random((batch, length)))
    chosen = np.argsort(keys, axis=1, kind="stable")[:, :slots]
    if chosen.shape[1] < slots:  # sequences shorter than the slots
        chosen = np.pad(chosen, [(0, 0), (0, slots - chosen.shape[1])])
    used = np.arange(slots)[None, :] < k[:, None]
    positions = np.where(used, chosen, 0).astype(np.int32)
    labels = np.where(used, np.take_along_axis(token_ids, positions, axis=1), 0).astype(np.int32)

    draw = rng.random((batch, slots))
    replacements = np.full((batch, slots), mask_id, dtype=token_ids.dtype)
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(list(special_ids) + [mask_id]))
    random_tokens = allowed[rng.integers(0, len(allowed), (batch, slots))]
    replacements = np.where(draw >= mask_prob, random_tokens, replacements)
    replacements = np.where(draw >= mask_prob + random_prob, labels, replacements)
    masked = token_ids.copy()
    rows = np.broadcast_to(np.arange(batch)[:, None], positions.shape)
    masked[rows[used], positions[used]] = replacements[used]
    return masked.astype(np.int32), positions, labels, used.astype(np.float32)


# -- data -------------------------------------------------------------------------------


class MaskedLMData:
    """Packed, dynamically masked batches for ``model.fit``, reproducible per epoch.

    Epoch ``e`` shuffles the documents and draws its masks from ``(seed, e)``, so any
    global step can be regenerated; :meth:`dataset` starts at any step, which is how
    an interrupted run resumes on exactly the batches it would have seen.

    Args:
        documents: list of token-id lists (see :func:`tokenize_documents`).
        maxlen: tokens a packed sequence.
        batch_size: sequences a batch (the last batch of an epoch may be smaller).
        vocab_size, cls_id, sep_id, mask_id, pad_id: the vocabulary's ids.
        special_ids: ids never masked (default: pad, cls, sep, mask).
        seed: seeds shuffling and masking.
        shuffle: shuffle document order (and so the packing) every epoch.
        mask_rate: share of tokens to predict (0.15).

    Example:

    >>> data = MaskedLMData.from_tokenizer(documents, tokenizer, maxlen=128, batch_size=32)
    >>> model.fit(data.dataset(), steps_per_epoch=len(data), epochs=3)
    """

    def __init__(self, documents, maxlen, batch_size, vocab_size, cls_id, sep_id, mask_id,
                 pad_id=0, special_ids=None, seed=0, shuffle=True, mask_rate=0.15):
        if not documents:
            raise ValueError("MaskedLMData needs at least one document")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.documents = documents
        self.maxlen, self.batch_size, self.vocab_size = maxlen, batch_size, vocab_size
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = cls_id, sep_id, mask_id, pad_id
        self.special_ids = sorted(set(special_ids or (pad_id, cls_id, sep_id, mask_id)))
        self.seed, self.shuffle, self.mask_rate = int(seed), shuffle, mask_rate
        self.max_predictions = max_predictions_for(maxlen, mask_rate)
        self.num_sequences = len(self.packed(0))
        self._cache = (None, None)

    @classmethod
    def from_tokenizer(cls, documents, tokenizer, maxlen, batch_size, **kwargs):
        """The same, taking the special ids and vocabulary size from a ``Tokenizer``."""
        ids = {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
        return cls(documents, maxlen, batch_size, tokenizer.vocab_size, ids["[CLS]"],
                   ids["[SEP]"], ids["[MASK]"], pad_id=ids["[PAD]"], **kwargs)

    def __len__(self):
        """Batches an epoch."""
        return -(-self.num_sequences // self.batch_size)

    def _rng(self, epoch, stream):
        return np.random.default_rng([self.seed, int(epoch), stream])

    def packed(self, epoch):
        """The packed ``[N, maxlen]`` sequences of ``epoch`` (before masking)."""
        order = None
        if self.shuffle:
            order = self._rng(epoch, 0).permutation(len(self.documents))
        return pack_documents(self.documents, self.maxlen, self.cls_id, self.sep_id,
                              self.pad_id, order)

    def epoch_arrays(self, epoch):
        """``(masked ids, positions, labels, weights)`` of every sequence of ``epoch``."""
        if self._cache[0] != epoch:
            masked = mask_tokens(self.packed(epoch), self._rng(epoch, 1), self.vocab_size,
                                 self.mask_id, self.special_ids, self.max_predictions,
                                 self.mask_rate)
            self._cache = (epoch, masked)
        return self._cache[1]

    def batch(self, step):
        """The batch of global ``step``: ``((ids, segments, positions), labels, weights)``."""
        epoch, index = divmod(int(step), len(self))
        masked, positions, labels, weights = self.epoch_arrays(epoch)
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        ids = masked[part]
        return (ids, np.zeros_like(ids), positions[part]), labels[part], weights[part]

    def batches(self, start_step=0, steps=None):
        """Yields :meth:`batch` from ``start_step`` on (``steps`` of them, or forever)."""
        step = int(start_step)
        while steps is None or step < start_step + steps:
            yield self.batch(step)
            step += 1

    def arrays(self, epoch=0):
        """A whole epoch as numpy arrays ``(x, labels, weights)``: a fixed held-out set."""
        masked, positions, labels, weights = self.epoch_arrays(epoch)
        return (masked, np.zeros_like(masked), positions), labels, weights

    def dataset(self, start_step=0):
        """An endless ``tf.data.Dataset`` of :meth:`batch` from ``start_step``, prefetched."""
        import tensorflow as tf  # tf.data only

        p = self.max_predictions
        spec = lambda shape, dtype: tf.TensorSpec(shape, dtype)  # noqa: E731
        # Static sequence length (every packed sequence has maxlen tokens): the step
        # is traced for one shape, which lets the graph optimiser specialise it.
        t = self.maxlen
        signature = ((spec([None, t], tf.int32), spec([None, t], tf.int32),
                      spec([None, p], tf.int32)), spec([None, p], tf.int32),
                     spec([None, p], tf.float32))
        dataset = tf.data.Dataset.from_generator(lambda: self.batches(start_step),
                                                 output_signature=signature)
        return dataset.prefetch(2)


def tokenize_documents(texts, tokenizer, desc=None):
    """Token ids of each text without ``[CLS]``/``[SEP]``; drops empty ones with a count.

    Args:
        texts: iterable of str.
        tokenizer: a ``bertkit.tokenizers.Tokenizer``.
        desc: a progress-bar label (``None``: no bar).

    Returns:
        ``(documents, dropped)``: the non-empty token-id lists and how many texts gave
        no token at all (blank lines, only control characters).
    """
    from tqdm.auto import tqdm

    documents, dropped = [], 0
    for text in tqdm(texts, desc=desc, disable=desc is None, mininterval=5):
        ids = tokenizer.encode(text)[0][1:-1] if text.strip() else []
        if ids:
            documents.append(ids)
        else:
            dropped += 1
    return documents, dropped


# -- model ------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="bertkit")
class GatherPositions(keras.layers.Layer):
    """Takes the vectors at given positions: ``[B, T, H]`` and ``[B, P]`` -> ``[B, P, H]``.

    Example:

    >>> hidden = GatherPositions(name='MLM-Gather')([sequence, masked_positions])
    """

    def call(self, inputs):
        sequence, positions = inputs
        positions = ops.cast(positions, "int32")
        # [B, P] -> [B, P, 1], broadcast over H by take_along_axis
        return ops.take_along_axis(sequence, ops.expand_dims(positions, -1), axis=1)

    def compute_output_shape(self, input_shape):
        sequence_shape, positions_shape = input_shape
        return (*positions_shape, sequence_shape[-1])


def build_pretraining_model(builder, max_predictions):
    """The encoder with its tied MLM head applied to gathered masked positions only.

    Args:
        builder: a builder from ``build_transformer_model(..., with_mlm=True,
            return_keras_model=False)``; its layers (and weights) are shared.
        max_predictions: the prediction slots ``P`` a sequence.

    Returns:
        ``keras.Model`` with inputs ``[Input-Token, Input-Segment,
        Input-Masked-Positions]`` and float32 logits ``[B, P, V]``.

    Raises:
        ValueError: the builder has no MLM head.
    """
    if not builder.with_mlm:
        raise ValueError("build_pretraining_model needs a builder built with with_mlm=True")
    last = builder.config.num_hidden_layers - 1
    name = f"{builder.block_name(last)}-FeedForward-Norm"
    if builder.block_name(last) == "Transformer":  # ALBERT: the shared norm's last call
        name = (name, last)
    encoder = builder.model
    sequence = intermediate_model(encoder, name).outputs[0]
    inputs = list(encoder.inputs)
    positions = keras.Input(shape=(max_predictions,), dtype="int32",
                            name="Input-Masked-Positions")
    # The builder's dtype policy, so that a bf16 encoder gathers in bf16.
    x = GatherPositions(name="MLM-Gather", dtype=builder.dtype)([sequence, positions])
    x = builder.mlm_logits(x)  # the family's MLM head, its layers shared: [B, P, V]
    logits = keras.layers.Activation("linear", dtype="float32", name="MLM-Logits")(x)
    return keras.Model(inputs + [positions], logits, name=f"{encoder.name}_mlm_pretraining")


@keras.saving.register_keras_serializable(package="bertkit")
def label_logit_is_max(labels, logits):
    """1.0 where the label's logit is the largest of its row, else 0.0: ``[B, P]``.

    The argmax accuracy in one pass over the logits: Keras's ``ops.argmax`` first
    rewrites negative zeros (five extra passes over ``[B, P, V]``), which costs as much
    as the vocabulary projection itself at ``V`` = 21128. A tie with the maximum
    counts as a hit (argmax would take the first); float logits almost never tie.
    """
    labels = ops.cast(labels, "int32")
    if len(labels.shape) == len(logits.shape):  # [B, P, 1] labels
        labels = ops.squeeze(labels, -1)
    label_logits = ops.take_along_axis(logits, ops.expand_dims(labels, -1), axis=-1)
    return ops.cast(label_logits[..., 0] >= ops.max(logits, axis=-1), "float32")


@keras.saving.register_keras_serializable(package="bertkit")
class MaskedLMAccuracy(keras.metrics.MeanMetricWrapper):
    """Top-1 accuracy of the MLM logits (see :func:`label_logit_is_max`); weighted.

    Example:

    >>> model.compile(optimizer, loss, weighted_metrics=[MaskedLMAccuracy()])
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=label_logit_is_max, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def compile_pretraining_model(model, optimizer, **kwargs):
    """Compiles with the MLM loss and accuracy over the real prediction slots.

    The loss is Keras's sparse cross-entropy on the float32 logits, reduced with
    ``mean_with_sample_weight``: per batch, the sum over slots of weight 1 divided by
    their number. Accuracy (:class:`MaskedLMAccuracy`) is a weighted metric, so unused
    slots do not count either. Feed ``(x, labels, weights)`` as :class:`MaskedLMData`
    does.
    """
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight", name="mlm_loss")
    model.compile(optimizer=optimizer, loss=loss,
                  weighted_metrics=[MaskedLMAccuracy(name="accuracy")], **kwargs)
    return model
