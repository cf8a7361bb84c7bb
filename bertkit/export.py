"""Export for serving: a bertkit model as files that a server loads without bertkit.

One call writes a directory a server can use as it is:

- ``saved_model/``: a TensorFlow SavedModel whose ``serving_default`` signature takes
  named int32 inputs (``Input-Token``, ``Input-Segment``: ``[None, None]``, plus a task's
  conditions) and gives named outputs (a classifier's ``probabilities`` and ``label``, a
  tagger's ``tags`` and ``spans`` with the Viterbi decoding in the graph, ...), for TF
  Serving, ``saved_model_cli`` or ``tf.saved_model.load``;
- ``model.onnx``: the same function converted by tf2onnx, for onnxruntime;
- ``model.int8.onnx`` (format ``"onnx-int8"``, only when asked for): that ONNX file with
  its matrix products in int8 (:func:`quantize_onnx`), 1.3-3x faster in onnxruntime on CPUs,
  at the cost of small changes to the probabilities;
- ``openvino/model.xml`` (and ``.bin``): the same function converted by OpenVINO, which
  runs it in bf16 (and int8, once quantized) on Intel CPUs with AMX or AVX-512 bf16;
- ``serving.json``: what each input and output is, and what the caller passed as
  ``metadata`` (label names, tag names, the vocabulary's file name).

The outputs a task names are its head's :meth:`~bertkit.tasks.base.TaskHead.serving_outputs`,
so the decoding a Python user gets from the head is in the exported graph too. Floating
outputs are float32 whatever the model's dtype policy. ONNX and OpenVINO convert a float32
twin of a ``mixed_bfloat16`` model (same weights): onnxruntime's CPU kernels have no bf16
matrix products, and OpenVINO picks bf16 itself where the CPU has the units.

Why tf2onnx and not ``model.export(format="onnx")``: Keras's ONNX export converts
``model.__call__`` alone, also through tf2onnx; converting the serving function keeps the
named outputs and the decoding. Tokenization stays on the client (a few lines with
:class:`~bertkit.tokenizers.Tokenizer` or any WordPiece tokenizer of the same vocabulary).

Example:

>>> head = CRFTaggingHead(['PER', 'LOC', 'ORG'])
>>> model = head.attach(encoder)                    # trained, or loaded from its weights
>>> export_model(model, 'exported/ner', outputs=head, metadata={'tags': head.tags})
>>> # elsewhere, without bertkit:
>>> serve = tf.saved_model.load('exported/ner/saved_model').signatures['serving_default']
>>> serve(**{'Input-Token': token_ids, 'Input-Segment': segment_ids})['spans']
"""
import contextlib
import json
import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from bertkit.layers import graphs_for_converters
from bertkit.storage import commit_directory

__all__ = ["FORMATS", "DEFAULT_FORMATS", "SERVING_FILE", "export_model", "input_signature",
           "serving_function", "float32_twin", "serving_twin", "save_saved_model", "save_onnx",
           "save_openvino", "quantize_onnx"]

FORMATS = ("saved_model", "onnx", "openvino", "onnx-int8")
DEFAULT_FORMATS = ("saved_model", "onnx", "openvino")
SERVING_FILE = "serving.json"
_OWN_NAMES = (SERVING_FILE, "saved_model", "model.onnx", "model.int8.onnx", "openvino")
ONNX_OPSET = 17
_EXTRA_HINT = "install the export extra: pip install 'bertkit[export]'"


def input_signature(model):
    """The ``tf.TensorSpec`` of each model input, named as the input: integer inputs
    (token, segment and span ids) are int32, others float32 (cast to the model's dtype in
    the graph); the batch axis and any unknown length stay ``None``."""
    specs = []
    for tensor in model.inputs:
        dtype = tf.int32 if "int" in str(tensor.dtype) else tf.float32
        specs.append(tf.TensorSpec((None, *tensor.shape[1:]), dtype, name=_input_name(tensor)))
    return specs


def _input_name(tensor):
    name = getattr(tensor, "name", "") or ""
    return name.split(":")[0]


def _named_outputs(model, outputs):
    """A function ``(model outputs, inputs by name) -> {name: tensor}`` for ``outputs``:
    ``None`` (the model's output names), a list of names, a task head (its
    ``serving_outputs``) or such a function itself."""
    if outputs is None:
        outputs = list(model.output_names)
    if hasattr(outputs, "serving_outputs"):
        head = outputs

        def from_head(result, inputs):
            token_ids = inputs["Input-Token"] if "Input-Token" in inputs \
                else next(iter(inputs.values()))
            return head.serving_outputs(result, tf.cast(tf.not_equal(token_ids, 0), tf.float32))
        return from_head
    if callable(outputs):
        return outputs
    names = list(outputs)
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"output names must be distinct non-empty strings, got {names!r}")
    count = len(model.outputs)
    if len(names) != count:
        raise ValueError(f"model {model.name!r} has {count} output(s), got {len(names)} "
                         f"name(s): {names!r}")

    def by_name(result, inputs):
        return dict(zip(names, result if isinstance(result, (list, tuple)) else [result]))
    return by_name


def serving_function(model, outputs=None):
    """The model's serving function: a ``tf.function`` with :func:`input_signature`
    that runs ``model`` in inference mode and returns a dict of named outputs, floating
    ones in float32.

    Args:
        model: a ``keras.Model`` (a bertkit encoder or task model).
        outputs: how to name the outputs: ``None`` (the model's output names), a list of
            names (one per model output), a task head (its ``serving_outputs``: labels,
            tag paths, spans computed in the graph), or a function ``(model outputs,
            {input name: tensor}) -> {name: tensor}``.
    """
    specs = input_signature(model)
    names = [spec.name for spec in specs]
    name_outputs = _named_outputs(model, outputs)

    def serve(*inputs):
        cast = [tf.cast(x, t.dtype) for x, t in zip(inputs, model.inputs)]
        result = model(cast if len(cast) > 1 else cast[0], training=False)
        named = name_outputs(result, dict(zip(names, inputs)))
        return {name: tf.cast(value, tf.float32) if value.dtype.is_floating else value
                for name, value in named.items()}

    return tf.function(serve, input_signature=specs)


_LOW_PRECISION = {"bfloat16", "float16", "mixed_bfloat16", "mixed_float16"}
# The layers that hold the matmul weights, and what their policy becomes in a serving
# twin: the compute dtype, with the variables stored in it.
_MATMUL_LAYERS = ("bertkit>MultiHeadAttention", "bertkit>FeedForward")
_STORED_IN_COMPUTE_DTYPE = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _policy_name(value):
    """The dtype policy's name in a layer config's ``dtype`` entry (a string or a
    serialized policy), else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy",
                                                              "FloatDTypePolicy"):
        return value.get("config", {}).get("name")
    return None


def _with_policies(model, policy_of):
    """The same architecture as ``model``, built from its config with each layer's dtype
    policy name replaced by ``policy_of(class_name, name)`` (the registered name, such as
    ``'bertkit>FeedForward'``, where there is one), holding ``model``'s weights
    (cast to the twin's variable dtypes); ``model`` itself when no policy changes."""
    changed = []

    def rewrite(value, class_name=None):
        if isinstance(value, dict):
            if "class_name" in value and "config" in value and _policy_name(value) is None:
                class_name = value.get("registered_name") or value["class_name"]
            out = {}
            for key, item in value.items():
                name = _policy_name(item) if key == "dtype" else None
                if name is None:
                    out[key] = rewrite(item, class_name)
                    continue
                out[key] = policy_of(class_name, name)
                if out[key] != name:
                    changed.append(class_name)
            return out
        if isinstance(value, list):
            return [rewrite(item, class_name) for item in value]
        return value

    config = rewrite(model.get_config())
    if not changed:
        return model
    previous = keras.config.dtype_policy()
    # Sublayers that follow the global policy take the twin's policy of their class too.
    keras.config.set_dtype_policy(policy_of(None, previous.name))
    try:
        twin = model.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    twin.set_weights(model.get_weights())
    return twin


def float32_twin(model):
    """``model`` itself when it computes in float32, else the same architecture built
    with every layer in float32 and the same weights (what ONNX and OpenVINO convert)."""
    return _with_policies(
        model, lambda _, name: "float32" if name in _LOW_PRECISION else name)


def serving_twin(model):
    """``model`` for a process that only predicts: the same architecture, outputs and
    weights, with the attention and feed-forward weights stored in the compute dtype.

    Under ``mixed_bfloat16`` every call rounds each float32 weight to bfloat16 before its
    matmul; the twin holds the rounded weights (``bfloat16`` policy on those layers), so
    its outputs are the same bits without the casts: BERT-base bf16 inference 13% faster
    with packed weights (``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1``, where the casts are all
    that is left of reading the variables), and those weights take half the memory.
    Embeddings, layer norms and heads keep their policy (the embeddings are gathered, not
    cast whole). ``model`` itself when no layer of those two kinds computes in a mixed
    policy. :func:`save_saved_model` exports the twin.

    The twin is for predicting (training it would round every update to bfloat16), so it
    is built with ``trainable=False``.
    """
    twin = _with_policies(
        model, lambda cls, name: _STORED_IN_COMPUTE_DTYPE.get(name, name)
        if cls in _MATMUL_LAYERS else name)
    if twin is not model:
        twin.trainable = False
    return twin


@contextlib.contextmanager
def _quiet_conversion():
    """Silences the converters' INFO/WARNING chatter (tf2onnx logs every step)."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def save_saved_model(model, path, outputs=None):
    """Writes ``model``'s :func:`serving_function` as a SavedModel at ``path`` (a new
    directory), signature ``serving_default``; returns ``path``. A mixed-precision model
    is written as its :func:`serving_twin`: the same outputs, the matmul weights stored
    in the compute dtype (no casts at each call, half their size on disk)."""
    model = serving_twin(model)
    function = serving_function(model, outputs)
    # Keras's archive tracks the model's variables so that TF1 loaders (TF Serving,
    # ``saved_model_cli run``) restore them too, not only ``tf.saved_model.load``.
    archive = keras.export.ExportArchive()
    archive.track(model)
    if isinstance(outputs, keras.layers.Layer):
        archive.track(outputs)
    archive.add_endpoint("serving_default", function)
    with _quiet_conversion():
        archive.write_out(path, verbose=False)
    return path


def save_onnx(model, path, outputs=None, opset=ONNX_OPSET):
    """Converts ``model``'s :func:`serving_function` (of its :func:`float32_twin`) to an
    ONNX file at ``path`` with tf2onnx; returns ``path``."""
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(f"ONNX export needs tf2onnx: {_EXTRA_HINT}") from error
    model = float32_twin(model)
    function = serving_function(model, outputs)
    with _quiet_conversion(), graphs_for_converters():
        tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                      opset=opset, output_path=path)
    return path


def quantize_onnx(source, target):
    """Writes ``target``, the ONNX file ``source`` with its matrix products in int8, by
    onnxruntime's dynamic quantization: each weight matrix int8 with one scale (the
    embedding tables 8-bit too), each activation quantized at every call from its own
    range; returns ``target``.

    Weights and activations keep to 7 bits (``reduce_range``). On CPUs without VNNI
    (AVX2, AVX-512 without VNNI) onnxruntime's int8 kernels add pairs of 8-bit products in
    16-bit registers, which full-range values can overflow: on the sentiment test split an
    AVX2 CPU changed 19 of 2,111 predictions with full 8 bits (a probability by up to 0.029)
    and 7 with 7 bits (up to 0.011). A file may be served on another CPU than the one that
    wrote it, so it is written for all of them.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise ImportError(f"int8 ONNX export needs onnxruntime: {_EXTRA_HINT}") from error
    with _quiet_conversion():
        quantize_dynamic(os.fspath(source), os.fspath(target), weight_type=QuantType.QInt8,
                         reduce_range=True)
    return target


def save_openvino(model, path, outputs=None):
    """Converts ``model``'s :func:`serving_function` (of its :func:`float32_twin`) to an
    OpenVINO IR, ``path`` (``.xml``) and its ``.bin``, with float32 weights; returns
    ``path``."""
    try:
        import openvino as ov
    except ImportError as error:
        raise ImportError(f"OpenVINO export needs openvino: {_EXTRA_HINT}") from error
    if not path.endswith(".xml"):
        raise ValueError(f"an OpenVINO model path ends with .xml, got {path!r}")
    model = float32_twin(model)
    function = serving_function(model, outputs)
    with _quiet_conversion(), graphs_for_converters():
        converted = ov.convert_model(function.get_concrete_function())
        ov.save_model(converted, path, compress_to_fp16=False)
    return path


def _describe(function):
    concrete = function.get_concrete_function()
    inputs = [{"name": s.name, "dtype": s.dtype.name, "shape": s.shape.as_list()}
              for s in function.input_signature]
    outputs = [{"name": name, "dtype": spec.dtype.name, "shape": spec.shape.as_list()}
               for name, spec in sorted(concrete.structured_outputs.items())]
    return inputs, outputs


def export_model(model, directory, outputs=None, formats=DEFAULT_FORMATS, metadata=None,
                 files=None, overwrite=False):
    """Exports ``model`` for serving into ``directory`` (see the module's docstring).

    The files are written to a temporary directory beside ``directory`` and moved into
    place at the end, so a failed export (a converter error, a full disk) leaves any
    previous export as it was.

    Args:
        model: a ``keras.Model``.
        directory: where to write; must be new, or an earlier export with
            ``overwrite=True``.
        outputs: names of the outputs, see :func:`serving_function` (pass the task's head
            to get its decoded outputs).
        formats: any of ``"saved_model"``, ``"onnx"``, ``"openvino"`` (the default: all
            three) and ``"onnx-int8"`` (:func:`quantize_onnx` of the ONNX file).
        metadata: a JSON-serializable dict stored in ``serving.json`` (label names, tag
            names, the tokenizer's settings, ...).
        files: ``{name: path}`` of files to copy into the export (the vocabulary, say),
            so that the directory is all a client needs.
        overwrite: replace an earlier export in ``directory``.

    Returns:
        ``{format: path}`` of what was written.

    Raises:
        ValueError: an unknown format, output names that do not fit the model, metadata
            that is not JSON, or ``directory`` exists and is not an earlier export to
            overwrite (all checked before any work).
        FileNotFoundError: a file of ``files`` is missing (checked before any work).
        ImportError: a format's converter is not installed (checked before any work).
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be among {FORMATS}, got {formats!r}")
    directory = os.fspath(directory)
    if os.path.exists(directory):
        if not os.path.isfile(os.path.join(directory, SERVING_FILE)) and (
                not os.path.isdir(directory) or os.listdir(directory)):
            raise ValueError(f"{directory} exists and is not a bertkit export; choose a new "
                             "directory")
        if not overwrite and os.path.isfile(os.path.join(directory, SERVING_FILE)):
            raise ValueError(f"{directory} holds an earlier export; pass overwrite=True "
                             "(--overwrite) to replace it")
    for fmt, module in (("onnx", "tf2onnx"), ("onnx", "onnx"), ("openvino", "openvino"),
                        ("onnx-int8", "tf2onnx"), ("onnx-int8", "onnx"),
                        ("onnx-int8", "onnxruntime.quantization")):
        if fmt in formats:
            try:
                __import__(module)
            except ImportError as error:
                raise ImportError(f"{fmt} export needs {module}: {_EXTRA_HINT}") from error
    _named_outputs(model, outputs)  # wrong output names: fail before the work
    json.dumps(metadata or {})  # not serializable: likewise
    files = dict(files or {})
    for name, source in files.items():
        if not os.path.isfile(source):
            raise FileNotFoundError(f"file to export as {name!r} not found: {source}")
        if name in _OWN_NAMES or os.path.basename(name) != name:
            raise ValueError(f"cannot export a file as {name!r}: a plain name other than "
                             "the export's own files is needed")
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        written = {}
        if "saved_model" in formats:
            written["saved_model"] = save_saved_model(
                model, os.path.join(staging, "saved_model"), outputs)
        if "onnx" in formats or "onnx-int8" in formats:
            onnx_path = save_onnx(model, os.path.join(staging, "model.onnx"), outputs)
            if "onnx" in formats:
                written["onnx"] = onnx_path
            if "onnx-int8" in formats:
                written["onnx-int8"] = quantize_onnx(
                    onnx_path, os.path.join(staging, "model.int8.onnx"))
            if "onnx" not in formats:  # converted only to be quantized
                os.remove(onnx_path)
        if "openvino" in formats:
            os.makedirs(os.path.join(staging, "openvino"))
            written["openvino"] = save_openvino(
                model, os.path.join(staging, "openvino", "model.xml"), outputs)
        for name, source in files.items():
            shutil.copyfile(source, os.path.join(staging, name))
        inputs, named = _describe(serving_function(model, outputs))
        manifest = {"formats": {f: os.path.relpath(p, staging) for f, p in written.items()},
                    "signature": "serving_default", "inputs": inputs, "outputs": named,
                    "files": sorted(files), "metadata": metadata or {}}
        with open(os.path.join(staging, SERVING_FILE), "w", encoding="utf-8") as f:
            json.dump(manifest, f, ensure_ascii=False, indent=2)
        commit_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {f: os.path.join(directory, os.path.relpath(p, staging)) for f, p in written.items()}

