"""Transformer families, their registry, and `build_transformer_model`.

Each family is one module of this package: a builder class (``bertkit.models.base``
documents the hooks) that owns its checkpoint name table. ``build_transformer_model``
looks the family up by name in the registry, or takes a builder class directly.

Example:

>>> model = build_transformer_model('bert_config.json', 'bert_model.ckpt', with_pool=True)
>>> nezha = build_transformer_model('nezha/bert_config.json', 'nezha/model.ckpt', model='nezha')
>>> probs = attention_model(model).predict([token_ids, segment_ids])  # [B, N, T, T] per layer

A family of your own (one module, one test file):

>>> from bertkit.models import Transformer, register_family
>>> @register_family("my_bert")
... class MyBERT(Transformer):
...     def feed_forward_options(self):
...         return dict(super().feed_forward_options(), activation="relu")
>>> build_transformer_model(config, checkpoint, model="my_bert")
"""
import importlib
import json
import os
import pkgutil

from bertkit.config import BertConfig
from bertkit.models.analysis import attention_model, intermediate_model, reinitialize_top_blocks
from bertkit.models.base import Transformer
from bertkit.models.registry import family_names, get_family, register_family

# Every other module of this package is a family that registers itself on import: a new
# family is one new module, with no list to extend.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("analysis", "base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

from bertkit.models.albert import ALBERT, ALBERTzh  # noqa: E402
from bertkit.models.bert import BERT, RoBERTa  # noqa: E402
from bertkit.models.electra import ELECTRA  # noqa: E402
from bertkit.models.nezha import NEZHA  # noqa: E402
from bertkit.models.roformer import RoFormer, RoFormerV2  # noqa: E402

__all__ = ["build_transformer_model", "register_family", "get_family", "family_names",
           "Transformer", "BERT", "RoBERTa", "ALBERT", "ALBERTzh", "ELECTRA", "NEZHA",
           "RoFormer", "RoFormerV2", "intermediate_model", "attention_model",
           "reinitialize_top_blocks"]


def build_transformer_model(config_path=None, checkpoint_path=None, model=None,
                            with_pool=False, with_nsp=False, with_mlm=False,
                            keep_tokens=None, return_keras_model=True, layer_norm_cond=None,
                            layer_norm_cond_hidden_size=None, layer_norm_cond_hidden_act=None,
                            dtype=None, cls_only_last_layer=None, **overrides):
    """Builds an encoder of any registered family and optionally loads a Google checkpoint.

    Args:
        config_path: path to ``bert_config.json``, or a ``BertConfig``/dict; or a
            Hugging Face directory (``config.json`` + ``model.safetensors``), which is
            config and weights at once. May be ``None`` when ``overrides`` give at least
            ``vocab_size``, or when ``checkpoint_path`` is a Hugging Face checkpoint.
        checkpoint_path: the checkpoint prefix (``.../bert_model.ckpt``) or its
            directory, or a Hugging Face directory or ``.safetensors`` file; ``None``
            keeps the random initialisation.
        model: the family; default: a Hugging Face config's ``model_type``, else
            ``'bert'``. A family name (``'bert'``, ``'roberta'``, ``'albert'``, ``'albert_zh'``,
            ``'electra'``, ``'nezha'``, ``'roformer'``, ``'roformer_v2'``, or one
            registered with :func:`register_family`) or a :class:`Transformer` subclass.
        with_pool: output the pooled ``[CLS]`` vector ``[B, H]`` instead of the sequence;
            ``'linear'`` for a linear pooler (SimBERT-style checkpoints).
        with_nsp: output next-sentence probabilities ``[B, 2]`` (needs the pooler).
        with_mlm: output masked-LM probabilities ``[B, T, V]`` with the output matrix
            tied to the token embedding; ``'linear'`` gives logits.
        keep_tokens: list of token ids to keep from the checkpoint's vocabulary.
        layer_norm_cond: condition every layer norm on a vector ``[B, C]``: an int ``C``
            (adds the input ``Input-Condition``) or a ``keras.Input``; see
            :class:`Transformer`. The model's inputs become
            ``[Input-Token, Input-Segment, condition]``.
        layer_norm_cond_hidden_size, layer_norm_cond_hidden_act: see :class:`Transformer`.
        dtype: dtype policy of the model's layers, e.g. ``'mixed_bfloat16'``; ``None``
            (default) follows ``keras.config.dtype_policy()``. Variables stay float32
            under the mixed policies, so checkpoints load and save the same values.
        cls_only_last_layer: compute the last block for ``[CLS]`` only; by default on
            exactly when the pooler's output is the only one (same outputs, less work);
            see :class:`Transformer`.
        return_keras_model: ``False`` returns the builder (``.model``, ``.config``,
            ``.layer(name)``) so that it can be extended.
        **overrides: config keys to override, e.g. ``num_hidden_layers=4`` to load only
            the first four layers of a checkpoint, or ``hidden_dropout_prob=0``; and a
            family's own options (ELECTRA's ``with_discriminator``).

    Returns:
        A ``keras.Model`` with inputs ``[Input-Token, Input-Segment]``; with several
        heads its output is ``[pooled or nsp, mlm]`` as in bert4keras. Or the builder.

    Raises:
        ValueError: unknown ``model``, bad config values, or a checkpoint that does not
            match the config (naming the variable and both shapes).
        FileNotFoundError: a missing config or checkpoint file.
    """
    from bertkit import huggingface

    if checkpoint_path is None and huggingface.is_huggingface_checkpoint(config_path) \
            and os.path.basename(os.fspath(config_path)) != huggingface.CONFIG_FILE:
        checkpoint_path = config_path  # a Hugging Face directory is config and weights
    hugging_face = checkpoint_path is not None and huggingface.is_huggingface_checkpoint(
        checkpoint_path)
    if config_path is None and hugging_face:
        config_path = checkpoint_path
    if huggingface.is_huggingface_checkpoint(config_path):
        config_file = huggingface.huggingface_files(config_path)[0]
        with open(config_file, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
        family = get_family(model or huggingface.family_for_model_type(model_type, config_file))
        config = huggingface.read_huggingface_config(config_file, family.config_defaults)[1]
        config = config.replace(**{k: v for k, v in overrides.items()
                                   if k not in family.extra_options}) if overrides else config
        overrides = {k: v for k, v in overrides.items() if k in family.extra_options}
    else:
        family = get_family(model or "bert")
        config = None
    options = {key: overrides.pop(key) for key in list(overrides)
               if key in family.extra_options}
    if config is None:
        config = _resolve_config(config_path, overrides, family.config_defaults)
    builder = family(config, with_pool=with_pool, with_nsp=with_nsp,
                     with_mlm=with_mlm, keep_tokens=keep_tokens,
                     layer_norm_cond=layer_norm_cond,
                     layer_norm_cond_hidden_size=layer_norm_cond_hidden_size,
                     layer_norm_cond_hidden_act=layer_norm_cond_hidden_act,
                     dtype=dtype, cls_only_last_layer=cls_only_last_layer, **options)
    builder.build()
    if hugging_face:
        huggingface.load_weights_from_safetensors(builder, checkpoint_path)
    elif checkpoint_path is not None:
        from bertkit import checkpoints  # imported here: checkpoints imports the families

        checkpoints.load_weights_from_checkpoint(builder, checkpoint_path)
    return builder.model if return_keras_model else builder


def _resolve_config(config_path, overrides, defaults):
    """The ``BertConfig`` of a path, dict or config, with the family's defaults for the
    keys a file omits (ELECTRA's ``type_vocab_size`` is 2, not Google BERT's 16)."""
    if isinstance(config_path, BertConfig):
        config = config_path
    elif config_path is None or isinstance(config_path, dict):
        return BertConfig.from_dict({**defaults, **(config_path or {}), **overrides})
    else:
        config = BertConfig.from_json_file(config_path, defaults=defaults)
    return config.replace(**overrides) if overrides else config
