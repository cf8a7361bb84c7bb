"""Google-format (TF1) checkpoints of every family: loading and saving back.

The code here is generic: each family (``bertkit.models``) owns its name table, which
it derives from the layer names of a model it built, so the table serves models with
any subset of heads and any number of layers. Loading reads TF1 name-based checkpoints
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
from bertkit import models
from bertkit.storage import commit_file, write_bytes_atomically

__all__ = ["family_of", "variable_mapping", "resolve_checkpoint_path",
           "load_weights_from_checkpoint", "assign_checked", "checkpoint_variables",
           "save_weights_as_checkpoint", "save_checkpoint_dir"]

logger = logging.getLogger("bertkit")

# Checkpoint variables that are training state rather than weights.
_TRAINING_STATE = re.compile(r"(^|/)(adam_[mv]|Momentum|global_step|.*_slot.*|bad_steps|"
                             r"good_steps|loss_scale)($|/)")


def family_of(model):
    """The family (builder class) of a builder or of a model it built.

    A Keras model rebuilt from a ``.keras`` file no longer knows its family; it is read
    as BERT (or ALBERT, whose shared layers have their own names), so pass ``family=``
    to the functions here for other families.
    """
    if isinstance(model, models.Transformer):
        return type(model)
    keras_model = getattr(model, "model", model)
    family = getattr(keras_model, "_bertkit_family", None)
    if family is not None:
        return family
    names = {layer.name for layer in keras_model.layers}
    return models.ALBERT if "Transformer-FeedForward" in names else models.BERT


def variable_mapping(model, family=None):
    """The table ``{layer name: [checkpoint variable name per layer weight]}`` for
    ``model`` (a builder or Keras model), from its family (see :func:`family_of`).

    Layers are recognised by their bert4keras-style names, so the table covers exactly
    the layers that ``model`` has: blocks, embeddings and the heads that were built.
    """
    keras_model = getattr(model, "model", model)
    family = family or family_of(model)
    return family.variable_mapping({layer.name for layer in keras_model.layers})


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


def load_weights_from_checkpoint(model, checkpoint_path, keep_tokens=None, family=None):
    """Loads a Google-format checkpoint into ``model``, checking everything first.

    Args:
        model: a model (or builder) from ``build_transformer_model``.
        checkpoint_path: checkpoint prefix (``.../bert_model.ckpt``) or its directory.
        keep_tokens: original token ids to keep; rows of the token embedding and of
            the MLM output bias are taken in this order. Defaults to the builder's.
        family: the builder class whose name table to use (default: the model's).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: a variable is missing or its shape disagrees with the model (both
            shapes are printed), or a layer of the builder has no checkpoint name. Nothing
            is assigned in that case.
    """
    family = family or family_of(model)
    path = resolve_checkpoint_path(checkpoint_path)
    with _named_read_errors(path):
        reader = tf.train.load_checkpoint(path)
        available = reader.get_variable_to_shape_map()

    def read(variable_name):
        with _named_read_errors(path, variable_name):
            return reader.get_tensor(variable_name)

    used = assign_checked(model, family, f"checkpoint {path}", available, read, keep_tokens)
    _report_unused(path, set(available) - used, family)


def assign_checked(model, family, source, available, read, keep_tokens=None):
    """Assigns every mapped weight of ``model`` from a checkpoint, checking all first.

    The loading core that every checkpoint format shares: the family's table names the
    variable of each weight (in Google's names and layout), ``read(name)`` gives its value;
    every variable must be present and of the weight's shape before any is assigned.

    Args:
        model: a builder or the Keras model it built.
        family: the builder class whose table to use.
        source: what is being read, for messages (``"checkpoint .../bert_model.ckpt"``).
        available: the variable names the source has (Google names).
        read: ``name -> numpy value`` in Google's layout.
        keep_tokens: token rows to keep (default: the builder's).

    Returns:
        The set of variable names used.

    Raises:
        ValueError: listing what is missing or of the wrong shape; nothing assigned.
    """
    if keep_tokens is None:
        keep_tokens = getattr(model, "keep_tokens", None)
    keras_model = getattr(model, "model", model)
    mapping = variable_mapping(keras_model, family)
    _check_every_layer_is_mapped(model, mapping, family)
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
            value = family.to_checkpoint(variable_name, np.asarray(read(variable_name)))
            if keep_tokens is not None and variable_name in family.token_row_variables():
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
        raise ValueError(f"cannot load {source} into model {keras_model.name!r} "
                         f"(nothing was loaded):\n  {shown}{more}")
    for weight, value in assignments:
        weight.assign(value.astype(weight.dtype))
    return used


def _check_every_layer_is_mapped(model, mapping, family):
    """A builder's layer with weights but no checkpoint name would silently stay random."""
    if not isinstance(model, models.Transformer):
        return  # a bare Keras model may hold task layers that no checkpoint has
    unmapped = sorted(name for name, layer in model.layers.items()
                      if layer.weights and name not in mapping)
    if unmapped:
        raise ValueError(f"the {family.__name__} checkpoint table has no names for the "
                         f"layers {unmapped}; add them to {family.__name__}.variable_mapping")


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


def _report_unused(path, unused, family):
    """Says what a load left unused: silently expected pieces at INFO, others as a warning."""
    state = sorted(n for n in unused if _TRAINING_STATE.search(n))
    rest = sorted(set(unused) - set(state))
    expected = [n for n in rest if family.expected_unused(n)]
    surprising = [n for n in rest if n not in set(expected)]
    if state or expected:
        logger.info("checkpoint %s: %d optimizer-state and %d variables of heads or layers "
                    "not built were left unused", path, len(state), len(expected))
    if surprising:
        logger.warning("checkpoint %s: %d variables were not recognised and left unused: %s",
                       path, len(surprising), ", ".join(surprising[:10]))


def checkpoint_variables(model, family=None):
    """``{Google variable name: numpy value}`` for every mapped weight of ``model``."""
    keras_model = getattr(model, "model", model)
    family = family or family_of(model)
    values = {}
    for layer_name, variable_names in variable_mapping(keras_model, family).items():
        layer = keras_model.get_layer(layer_name)
        for weight, variable_name in zip(layer.weights, variable_names):
            values[variable_name] = family.to_checkpoint(
                variable_name, np.asarray(keras.ops.convert_to_numpy(weight), dtype="float32")
            )
    return values


def save_weights_as_checkpoint(model, checkpoint_path, extra_variables=None, family=None):
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
        family: the builder class whose names to write (default: the model's).

    Returns:
        The checkpoint prefix written.
    """
    values = checkpoint_variables(model, family)
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
    config = config or getattr(model, "config", None) or getattr(
        getattr(model, "model", model), "_bertkit_config", None)
    if config is None:
        raise ValueError("save_checkpoint_dir needs `config` for a Keras model that "
                         "build_transformer_model did not build (one reloaded from a file)")
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
