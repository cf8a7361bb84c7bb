"""Google BERT/ALBERT checkpoints: one name table, loading and saving back.

The table is derived from the layer names of a model built by
``bertkit.models.build_transformer_model``, so it serves models with any subset of
heads and any number of layers. Loading reads Google's TF1 name-based checkpoints
with ``tf.train.load_checkpoint``, checks every variable before assigning any (a
failed load leaves the model untouched) and reports what it left unused. Saving
writes a checkpoint in the same format under the same names, so Google's code,
bert4keras and bertkit can all read it back.

Example:

>>> model = build_transformer_model('bert_config.json', with_mlm=True)
>>> load_weights_from_checkpoint(model, 'chinese_L-12_H-768_A-12/bert_model.ckpt')
>>> save_weights_as_checkpoint(model, 'finetuned/bert_model.ckpt')
"""
import contextlib
import logging
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from bertkit import layers as bk_layers
from bertkit.storage import commit_file, write_bytes_atomically

logger = logging.getLogger("bertkit")

# Weight order of each bertkit layer kind, as Google names the pieces.
_ATTENTION = ["query/kernel", "query/bias", "key/kernel", "key/bias",
              "value/kernel", "value/bias"]
_DENSE = ["kernel", "bias"]
_NORM = ["gamma", "beta"]
# Checkpoint variables that are training state rather than weights.
_TRAINING_STATE = re.compile(r"(^|/)(adam_[mv]|Momentum|global_step|.*_slot.*|bad_steps|"
                             r"good_steps|loss_scale)($|/)")


def variable_mapping(model):
    """The table ``{layer name: [Google variable name per layer weight]}`` for ``model``.

    Layers are recognised by their bert4keras-style names, so the table covers exactly
    the layers that ``model`` has: ``Transformer-{i}-...`` for BERT,
    ``Transformer-...`` (shared) for ALBERT, the pooler, NSP and MLM heads when built.
    """
    model = getattr(model, "model", model)
    names = {layer.name for layer in model.layers}
    mapping = {
        "Embedding-Token": ["bert/embeddings/word_embeddings"],
        "Embedding-Segment": ["bert/embeddings/token_type_embeddings"],
        "Embedding-Position": ["bert/embeddings/position_embeddings"],
        "Embedding-Norm": [f"bert/embeddings/LayerNorm/{n}" for n in _NORM],
        "Embedding-Mapping": [f"bert/encoder/embedding_hidden_mapping_in/{n}" for n in _DENSE],
        "Pooler-Dense": [f"bert/pooler/dense/{n}" for n in _DENSE],
        "NSP-Proba": ["cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"],
        "MLM-Dense": [f"cls/predictions/transform/dense/{n}" for n in _DENSE],
        "MLM-Norm": [f"cls/predictions/transform/LayerNorm/{n}" for n in _NORM],
        "MLM-Bias": ["cls/predictions/output_bias"],
    }
    albert = "bert/encoder/transformer/group_0/inner_group_0/"
    mapping.update({
        "Transformer-MultiHeadSelfAttention":
            [f"{albert}attention_1/self/{n}" for n in _ATTENTION]
            + [f"{albert}attention_1/output/dense/{n}" for n in _DENSE],
        "Transformer-MultiHeadSelfAttention-Norm": [f"{albert}LayerNorm/{n}" for n in _NORM],
        "Transformer-FeedForward":
            [f"{albert}ffn_1/intermediate/dense/{n}" for n in _DENSE]
            + [f"{albert}ffn_1/intermediate/output/dense/{n}" for n in _DENSE],
        "Transformer-FeedForward-Norm": [f"{albert}LayerNorm_1/{n}" for n in _NORM],
    })
    for name in names:
        match = re.fullmatch(r"Transformer-(\d+)-MultiHeadSelfAttention", name)
        if not match:
            continue
        layer = f"bert/encoder/layer_{match.group(1)}/"
        mapping[name] = ([f"{layer}attention/self/{n}" for n in _ATTENTION]
                         + [f"{layer}attention/output/dense/{n}" for n in _DENSE])
        mapping[f"{name}-Norm"] = [f"{layer}attention/output/LayerNorm/{n}" for n in _NORM]
        prefix = name[: -len("MultiHeadSelfAttention")]
        mapping[f"{prefix}FeedForward"] = ([f"{layer}intermediate/dense/{n}" for n in _DENSE]
                                           + [f"{layer}output/dense/{n}" for n in _DENSE])
        mapping[f"{prefix}FeedForward-Norm"] = [f"{layer}output/LayerNorm/{n}" for n in _NORM]
    return {name: variables for name, variables in mapping.items() if name in names}


def _to_checkpoint(variable_name, value):
    """Keras weight value -> the value stored under ``variable_name`` in Google's format."""
    if variable_name == "cls/seq_relationship/output_weights":
        return value.T  # Google stores the NSP kernel as [2, H]
    return value


def resolve_checkpoint_path(checkpoint_path):
    """The checkpoint prefix for a prefix or a directory, or a clear FileNotFoundError."""
    path = os.fspath(checkpoint_path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            candidates = sorted(f[: -len(".index")] for f in os.listdir(path)
                                if f.endswith(".index"))
            if not candidates:
                raise FileNotFoundError(f"no checkpoint (*.index file) in directory {path}")
            latest = os.path.join(path, candidates[0])
        path = latest
    if not os.path.isfile(path + ".index"):
        raise FileNotFoundError(
            f"checkpoint not found: {path}.index does not exist (give the prefix, "
            "e.g. .../bert_model.ckpt, or its directory)"
        )
    return path


def load_weights_from_checkpoint(model, checkpoint_path, keep_tokens=None):
    """Loads a Google BERT/ALBERT checkpoint into ``model``, checking everything first.

    Args:
        model: a model (or builder) from ``build_transformer_model``.
        checkpoint_path: checkpoint prefix (``.../bert_model.ckpt``) or its directory.
        keep_tokens: original token ids to keep; rows of the token embedding and of
            the MLM output bias are taken in this order. Defaults to the builder's.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: a variable is missing or its shape disagrees with the model (both
            shapes are printed). Nothing is assigned in that case.
    """
    if keep_tokens is None:
        keep_tokens = getattr(model, "keep_tokens", None)
    keras_model = getattr(model, "model", model)
    path = resolve_checkpoint_path(checkpoint_path)
    with _named_read_errors(path):
        reader = tf.train.load_checkpoint(path)
        available = reader.get_variable_to_shape_map()
    mapping = variable_mapping(keras_model)

    assignments, problems, used = [], [], set()
    for layer_name, variable_names in mapping.items():
        layer = keras_model.get_layer(layer_name)
        weights = _checkpoint_weights(layer)
        if len(weights) != len(variable_names):
            raise ValueError(f"layer {layer_name} has {len(weights)} weights, the "
                             f"checkpoint table expects {len(variable_names)}")
        for weight, variable_name in zip(weights, variable_names):
            if variable_name not in available:
                problems.append(f"variable {variable_name} (for {weight.path}) is missing")
                continue
            used.add(variable_name)
            with _named_read_errors(path, variable_name):
                value = _to_checkpoint(variable_name, reader.get_tensor(variable_name))
            if keep_tokens is not None and variable_name in (
                "bert/embeddings/word_embeddings", "cls/predictions/output_bias"
            ):
                value = _keep_rows(value, keep_tokens, variable_name)
            if tuple(value.shape) != tuple(weight.shape):
                problems.append(
                    f"variable {variable_name} has shape {tuple(value.shape)} in the "
                    f"checkpoint but {weight.path} expects {tuple(weight.shape)}"
                )
                continue
            assignments.append((weight, value))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(f"cannot load checkpoint {path} into model {keras_model.name!r} "
                         f"(nothing was loaded):\n  {shown}{more}")
    for weight, value in assignments:
        weight.assign(value.astype(weight.dtype))
    _report_unused(path, set(available) - used)


@contextlib.contextmanager
def _named_read_errors(path, variable_name=None):
    """Turns TensorFlow's read errors (a truncated or corrupt ``.data`` file: "Read less
    bytes than requested", a checksum mismatch) into a ValueError naming the files."""
    try:
        yield
    except (tf.errors.OpError, IndexError) as error:  # IndexError: a short .data file
        what = f" (reading {variable_name})" if variable_name else ""
        message = getattr(error, "message", None) or str(error)
        raise ValueError(f"cannot read checkpoint {path}{what}: {message.strip()}; "
                         f"{path}.index or {path}.data-* is truncated or corrupt "
                         "(nothing was loaded)") from None


def _checkpoint_weights(layer):
    """The weights of ``layer`` that a checkpoint holds, in table order.

    A conditional layer norm's condition projections are new (zero-initialised), so only
    its ``gamma`` and ``beta`` come from, and go to, the checkpoint.
    """
    if isinstance(layer, bk_layers.ConditionalLayerNormalization):
        return layer.weights[:2]
    return layer.weights


def _keep_rows(value, keep_tokens, variable_name):
    if max(keep_tokens) >= value.shape[0]:
        raise ValueError(f"keep_tokens holds id {max(keep_tokens)} but {variable_name} has "
                         f"only {value.shape[0]} rows")
    return value[np.asarray(keep_tokens)]


def _report_unused(path, unused):
    """Says what a load left unused: silently expected pieces at INFO, others as a warning."""
    state = sorted(n for n in unused if _TRAINING_STATE.search(n))
    rest = sorted(set(unused) - set(state))
    expected = [n for n in rest if n.startswith(("cls/", "bert/pooler/", "bert/encoder/layer_"))]
    surprising = [n for n in rest if n not in set(expected)]
    if state or expected:
        logger.info("checkpoint %s: %d optimizer-state and %d variables of heads or layers "
                    "not built were left unused", path, len(state), len(expected))
    if surprising:
        logger.warning("checkpoint %s: %d variables were not recognised and left unused: %s",
                       path, len(surprising), ", ".join(surprising[:10]))


def checkpoint_variables(model):
    """``{Google variable name: numpy value}`` for every mapped weight of ``model``."""
    keras_model = getattr(model, "model", model)
    values = {}
    for layer_name, variable_names in variable_mapping(keras_model).items():
        layer = keras_model.get_layer(layer_name)
        for weight, variable_name in zip(layer.weights, variable_names):
            values[variable_name] = _to_checkpoint(
                variable_name, np.asarray(keras.ops.convert_to_numpy(weight), dtype="float32")
            )
    return values


def save_weights_as_checkpoint(model, checkpoint_path, extra_variables=None):
    """Writes ``model``'s weights as a Google TF1 checkpoint under Google's names.

    The files ``<checkpoint_path>.index`` and ``<checkpoint_path>.data-00000-of-00001``
    are written into a temporary directory beside the target, flushed to the disk and
    renamed into place (``bertkit.storage.commit_file``), data first and index last: a
    kill or a full disk while TensorFlow writes leaves the old files as they were. The
    pair changes with two renames, so a kill between them (microseconds) leaves a pair
    whose checksums disagree, which loading reports; a run that must survive that too
    keeps its state in a ``bertkit.storage.RunDirectory`` as ``pretrain_mlm.py`` does.

    Args:
        model: a model (or builder) from ``build_transformer_model``.
        checkpoint_path: the prefix to write, e.g. ``out/bert_model.ckpt``.
        extra_variables: optional ``{name: array}`` to store as well (a ``global_step``).

    Returns:
        The checkpoint prefix written.
    """
    values = checkpoint_variables(model)
    values.update(extra_variables or {})
    checkpoint_path = os.path.abspath(os.fspath(checkpoint_path))
    directory = os.path.dirname(checkpoint_path)
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(checkpoint_path)
    tmp_dir = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=directory)
    try:
        try:
            _write_tf1_checkpoint(values, os.path.join(tmp_dir, base))
        except tf.errors.OpError as error:  # a full disk, say
            raise OSError(f"cannot write checkpoint {checkpoint_path}: "
                          f"{error.message.strip()}; its previous files are intact") from None
        written = sorted(os.listdir(tmp_dir), key=lambda f: f.endswith(".index"))
        for filename in written:
            commit_file(os.path.join(tmp_dir, filename), os.path.join(directory, filename))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return checkpoint_path


def _write_tf1_checkpoint(values, prefix):
    """Writes ``{name: array}`` with ``tf.compat.v1.train.Saver``, as Google's code does."""
    with tf.Graph().as_default():
        feeds, variables = {}, []
        for name, value in values.items():
            value = np.asarray(value)
            placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            variables.append(tf.compat.v1.Variable(placeholder, name=name))
            feeds[placeholder] = value
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            saver.save(session, prefix, write_meta_graph=False, write_state=False)


def save_checkpoint_dir(model, directory, config=None, vocab_path=None):
    """Writes a complete Google-format directory: config, checkpoint and vocabulary.

    The result (``bert_config.json``, ``bert_model.ckpt.*``, ``vocab.txt``) is what
    Google publishes, so ``build_transformer_model`` and every example take it with
    ``--config/--checkpoint/--vocab``.

    Args:
        model: a builder from ``build_transformer_model(..., return_keras_model=False)``,
            or a Keras model together with ``config``.
        directory: the directory to write (created if needed).
        config: a ``BertConfig``; defaults to the builder's.
        vocab_path: a ``vocab.txt`` to copy beside the checkpoint (optional).

    Returns:
        ``(config_path, checkpoint_prefix, vocab_path or None)``.
    """
    config = config or getattr(model, "config", None)
    if config is None:
        raise ValueError("save_checkpoint_dir needs `config` when given a bare Keras model")
    os.makedirs(directory, exist_ok=True)
    config_path = os.path.join(directory, "bert_config.json")
    config.to_json_file(config_path)
    prefix = save_weights_as_checkpoint(model, os.path.join(directory, "bert_model.ckpt"))
    target_vocab = None
    if vocab_path is not None:
        target_vocab = os.path.join(directory, "vocab.txt")
        if os.path.abspath(vocab_path) != os.path.abspath(target_vocab):
            with open(vocab_path, "rb") as f:
                write_bytes_atomically(target_vocab, f.read())
    return config_path, prefix, target_vocab
