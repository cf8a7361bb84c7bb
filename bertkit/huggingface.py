"""Hugging Face checkpoints: safetensors directories of BERT-family models, in and out.

A Hugging Face directory holds ``config.json`` (with ``model_type``),
``model.safetensors`` and ``vocab.txt`` (with ``tokenizer_config.json``). Loading reads
it through the same checked core as Google checkpoints
(``bertkit.checkpoints.assign_checked``): each family's Google names are translated to
Hugging Face's (``Transformer.huggingface_name``: ``bert.`` / ``electra.`` / ...
prefixes, ``LayerNorm.weight``/``bias``, ``Linear`` weights stored ``[out, in]``), every
variable is found and of the right shape before anything is assigned, and what is left
unused is reported. Files that lack the ``bert.`` prefix, or use the old
``LayerNorm.gamma``/``beta`` names, are read too. Saving writes a directory that
``transformers.AutoModel.from_pretrained`` loads.

Example:

>>> model = build_transformer_model("hfl_chinese-roberta-wwm-ext/")     # detected
>>> save_weights_as_safetensors(model, "out/", vocab_path="vocab.txt")    # and back
"""
import json
import logging
import os

import numpy as np

from bertkit import checkpoints
from bertkit.config import BertConfig
from bertkit.storage import atomic_write, write_bytes_atomically

__all__ = ["is_huggingface_checkpoint", "family_for_model_type", "huggingface_files",
           "read_huggingface_config", "load_weights_from_safetensors",
           "save_weights_as_safetensors"]

logger = logging.getLogger("bertkit")

CONFIG_FILE, WEIGHTS_FILE, TORCH_FILE = "config.json", "model.safetensors", "pytorch_model.bin"
# config.json keys that describe the PyTorch object, not the network.
_HUGGINGFACE_ONLY = {"architectures", "model_type", "transformers_version", "torch_dtype",
                     "dtype", "pad_token_id", "bos_token_id", "eos_token_id", "use_cache",
                     "classifier_dropout", "gradient_checkpointing", "position_embedding_type",
                     "output_past", "summary_type", "summary_use_proj", "summary_activation",
                     "summary_last_dropout", "id2label", "label2id", "problem_type",
                     "tokenizer_class", "is_decoder", "add_cross_attention",
                     "chunk_size_feed_forward",
                     "return_dict", "output_hidden_states", "output_attentions", "torchscript",
                     "finetuning_task", "sentence_transformers", "rotary_value",
                     "use_relative_position", "max_relative_positions"}


def huggingface_files(path):
    """``(config.json, weights file)`` of a Hugging Face directory, its ``config.json``
    or its weights file; ``None`` when ``path`` is none of these.

    Raises:
        FileNotFoundError: a directory with ``config.json`` but no weights file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        directory = path
    elif os.path.basename(path) == CONFIG_FILE or path.endswith((".safetensors", ".bin")):
        directory = os.path.dirname(path) or "."
    else:
        return None
    config = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config):
        return None
    if path.endswith((".safetensors", ".bin")):
        return config, path
    for name in (WEIGHTS_FILE, TORCH_FILE):
        if os.path.isfile(os.path.join(directory, name)):
            return config, os.path.join(directory, name)
    raise FileNotFoundError(f"{directory} has {CONFIG_FILE} but no {WEIGHTS_FILE}")


def is_huggingface_checkpoint(path):
    """Whether ``path`` is a Hugging Face directory, config or weights file."""
    return path is not None and not isinstance(path, (dict, BertConfig)) \
        and huggingface_files(path) is not None


def read_huggingface_config(path, defaults=None):
    """``(model_type, BertConfig)`` from a Hugging Face ``config.json``.

    Keys that describe the PyTorch object (``architectures``, ``pad_token_id``, ...) are
    dropped; variants bertkit does not build are refused (``position_embedding_type``
    other than ``absolute``, RoFormer's ``rotary_value``).
    """
    with open(path, encoding="utf-8") as f:
        try:
            values = json.load(f)
        except ValueError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    model_type = values.get("model_type")
    if values.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type "
                         f"{values['position_embedding_type']!r} is not supported")
    if values.get("rotary_value"):
        raise ValueError(f"{path}: rotary_value (rotary positions on values) is not supported")
    kept = {k: v for k, v in values.items() if k not in _HUGGINGFACE_ONLY}
    try:
        return model_type, BertConfig.from_dict({**(defaults or {}), **kept})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def family_for_model_type(model_type, path):
    """The registered family name of a Hugging Face ``model_type``."""
    from bertkit import models

    if model_type == "roberta":
        raise ValueError(f"{path}: model_type 'roberta' (fairseq-style RoBERTa, positions "
                         "offset by the padding index) is not supported; Chinese RoBERTa-wwm "
                         "checkpoints are saved as model_type 'bert' and load as such")
    names = {models.get_family(n).huggingface_model_type: n for n in ("bert", "albert",
                                                                         "electra", "nezha",
                                                                         "roformer")}
    if model_type not in names:
        raise ValueError(f"{path}: model_type {model_type!r} is not one bertkit loads; "
                         f"expected one of {sorted(names)} (or pass model=...)")
    return names[model_type]


def _read_tensors(path):
    """``{key: numpy array}`` of a safetensors file (or of a PyTorch ``.bin`` with torch)."""
    if path.endswith(".bin"):
        try:
            import torch
        except ImportError:
            raise ValueError(
                f"{path} is a PyTorch pickle; bertkit reads safetensors. Convert it once "
                "where torch is installed: `from safetensors.torch import save_file; "
                "save_file(torch.load(path, map_location='cpu'), 'model.safetensors')`, or "
                "install torch to read it directly") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                for k, v in state.items()}
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error} (truncated or not a safetensors "
                         "file; nothing was loaded)") from None


def _normalized(key):
    """Old ``LayerNorm.gamma``/``beta`` names as today's ``weight``/``bias``."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def load_weights_from_safetensors(model, path, keep_tokens=None, family=None):
    """Loads a Hugging Face ``model.safetensors`` (or its directory) into ``model``.

    Raises:
        FileNotFoundError, ValueError: as ``load_weights_from_checkpoint``; the model is
            untouched unless every variable is there with its shape.
    """
    family = family or checkpoints.family_of(model)
    files = huggingface_files(path)
    if files is None:
        raise FileNotFoundError(f"no Hugging Face checkpoint at {path} (expected a "
                                f"directory with {CONFIG_FILE} and {WEIGHTS_FILE})")
    weights_path = files[1]
    tensors = {_normalized(k): v for k, v in _read_tensors(weights_path).items()}
    keras_model = getattr(model, "model", model)
    names = [n for names in checkpoints.variable_mapping(keras_model, family).values()
             for n in names]
    prefix = f"{family.huggingface_model_type}."
    bare = not any(k.startswith(prefix) for k in tensors)  # saved from a bare BertModel
    keys = {}
    for name in names:
        key, transposed = family.huggingface_name(name)
        if bare and key.startswith(prefix):
            key = key[len(prefix):]
        keys[name] = (key, transposed)
    available = {name for name, (key, _) in keys.items() if key in tensors}

    def read(name):
        key, transposed = keys[name]
        value = np.asarray(tensors[key], dtype="float32")
        return value.T if transposed else value

    used = checkpoints.assign_checked(model, family, f"{weights_path}", available, read,
                                      keep_tokens)
    unused = sorted(set(tensors) - {keys[n][0] for n in used})
    # Tied or derived copies that a Hugging Face file may carry beside the real weights.
    derived = ("decoder.weight", "decoder.bias", "position_ids", "embed_positions.weight",
               "relative_positions_encoding.positions_encoding")
    ignorable = [k for k in unused if k.endswith(derived)]
    rest = [k for k in unused if k not in ignorable]
    if rest:
        logger.info("%s: %d tensors of heads or layers not built were left unused: %s",
                    weights_path, len(rest), ", ".join(rest[:10]))


def save_weights_as_safetensors(model, directory, config=None, vocab_path=None, family=None):
    """Writes ``model`` as a Hugging Face directory: ``model.safetensors``,
    ``config.json`` and ``vocab.txt``, each atomically.

    ``transformers.AutoModel.from_pretrained(directory)`` loads it: a model with the
    pooler gives transformers' base model with no missing or unexpected keys (the MLM
    and NSP heads, when built, are saved too, for ``*ForPreTraining``/``*ForMaskedLM``).

    Args:
        model: a builder, or a Keras model it built (then ``config`` is needed).
        directory: created if needed.
        config: a ``BertConfig``; defaults to the builder's.
        vocab_path: a ``vocab.txt`` to copy beside the weights.
        family: the builder class (default: the model's).

    Returns:
        The path of ``model.safetensors``.
    """
    from safetensors.numpy import save

    family = family or checkpoints.family_of(model)
    if family.huggingface_model_type is None:
        raise ValueError(f"{family.__name__} has no Hugging Face counterpart to save as")
    keras_model = getattr(model, "model", model)
    config = config or getattr(model, "config", None) or getattr(keras_model,
                                                                 "_bertkit_config", None)
    if config is None:
        raise ValueError("save_weights_as_safetensors needs `config` for a Keras model that "
                         "build_transformer_model did not build (one reloaded from a file)")
    tensors = {}
    for name, value in checkpoints.checkpoint_variables(model, family).items():
        key, transposed = family.huggingface_name(name)
        tensors[key] = np.ascontiguousarray(value.T if transposed else value, dtype="float32")
    tensors.update(family.huggingface_extra_tensors(config))
    os.makedirs(directory, exist_ok=True)
    weights_path = os.path.join(directory, WEIGHTS_FILE)
    write_bytes_atomically(weights_path, save(tensors, metadata={"format": "pt"}))
    names = {layer.name for layer in keras_model.layers}
    kind = family.huggingface_model_type.capitalize() if family.huggingface_model_type != \
        "roformer" else "RoFormer"
    if "MLM-Bias" in names and "NSP-Proba" in names or "Discriminator-Prediction" in names:
        architecture = f"{kind}ForPreTraining"
    elif "MLM-Bias" in names:
        architecture = f"{kind}ForMaskedLM"
    else:
        architecture = f"{kind}Model"
    values = dict(config.to_dict(), model_type=family.huggingface_model_type,
                  architectures=[architecture])
    if family.huggingface_model_type != "albert":  # ALBERT's sharing layout only
        values.pop("num_hidden_groups", None)
        values.pop("inner_group_num", None)
    # transformers knows the tanh GELU as gelu_new; both read "gelu" as the erf form.
    values["hidden_act"] = {"gelu_tanh": "gelu_new", "gelu_erf": "gelu"}.get(
        values["hidden_act"], values["hidden_act"])
    with atomic_write(os.path.join(directory, CONFIG_FILE)) as f:
        json.dump(values, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    if vocab_path is not None:
        target = os.path.join(directory, "vocab.txt")
        if os.path.abspath(vocab_path) != os.path.abspath(target):
            with open(vocab_path, "rb") as f:
                write_bytes_atomically(target, f.read())
    return weights_path
