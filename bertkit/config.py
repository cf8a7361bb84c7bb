"""`BertConfig`: the hyper-parameters of a BERT or ALBERT model.

Reads Google's ``bert_config.json`` (and ALBERT's ``albert_config.json``, which adds
``embedding_size``), fills in Google's defaults for keys a config omits, and checks
that the sizes fit together before any layer is built.

Example:

>>> config = BertConfig.from_json_file('chinese_L-12_H-768_A-12/bert_config.json')
>>> config.hidden_size, config.num_attention_heads
(768, 12)
>>> small = config.replace(num_hidden_layers=4)
"""
import copy
import difflib
import json
import logging
import os

from bertkit.storage import atomic_write

__all__ = ["BertConfig"]

logger = logging.getLogger("bertkit")

#: Activations a config may name, with their aliases. ``gelu`` is the exact erf form
#: (as in Hugging Face and bert4keras); ``gelu_tanh`` is the tanh approximation that
#: Google's ``modeling.py`` computes.
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_erf": "gelu",
    "gelu_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "swish": "swish",
    "silu": "swish",
    "tanh": "tanh",
    "linear": "linear",
}

# Google's defaults (modeling.BertConfig.__init__) for keys a config file may omit.
_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 16,
    "initializer_range": 0.02,
    "embedding_size": None,
    "layer_norm_eps": 1e-12,
    "num_hidden_groups": 1,
    "inner_group_num": 1,
}

_POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
_TYPOS_WARNED = set()
_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")


class BertConfig:
    """Hyper-parameters of a BERT/ALBERT encoder, validated on construction.

    Args:
        vocab_size: number of WordPiece tokens (required).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
        hidden_act, hidden_dropout_prob, attention_probs_dropout_prob,
        max_position_embeddings, type_vocab_size, initializer_range: as in Google's
            ``bert_config.json``.
        embedding_size: ALBERT's factorised embedding width; ``None`` means
            ``hidden_size`` (plain BERT).
        layer_norm_eps: layer-norm epsilon (Google: 1e-12).
        num_hidden_groups, inner_group_num: ALBERT's sharing layout; only the layout of
            the published ALBERT models (one group, one inner layer) is supported.
        **extra: other keys found in the file (``directionality``, ``pooler_fc_size``,
            ...), kept so that ``to_dict`` round-trips them.

    Raises:
        ValueError: naming the key when a value is missing, of the wrong kind, or
            inconsistent (``hidden_size`` not divisible by ``num_attention_heads``,
            an unknown ``hidden_act``).
    """

    def __init__(self, vocab_size=None, **kwargs):
        values = dict(_DEFAULTS)
        values.update(kwargs)
        values["vocab_size"] = vocab_size
        known = set(_DEFAULTS) | {"vocab_size"}
        self.extra = {k: v for k, v in values.items() if k not in known}
        for key in known:
            setattr(self, key, values[key])
        self._validate()
        self._warn_about_typos(known)

    def _warn_about_typos(self, known):
        """Warns about an unknown key that looks like a misspelt known one.

        Unknown keys are kept (checkpoints ship extra ones, such as ``directionality``),
        but ``hidden_sizee`` would silently leave ``hidden_size`` at its default.
        """
        for key in self.extra:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            if close and (key, close[0]) not in _TYPOS_WARNED:  # once, not per read
                _TYPOS_WARNED.add((key, close[0]))
                logger.warning("BertConfig: unknown key %r is ignored; did you mean %r?",
                               key, close[0])

    def _validate(self):
        if self.vocab_size is None:
            raise ValueError("BertConfig: 'vocab_size' is required")
        for key in _POSITIVE_INTS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BertConfig: '{key}' must be a positive integer, got {value!r}")
        for key in _PROBABILITIES:
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"BertConfig: '{key}' must be a probability in [0, 1), got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig: 'hidden_size' ({self.hidden_size}) must be divisible by "
                f"'num_attention_heads' ({self.num_attention_heads})"
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act.lower() not in ACTIVATIONS:
            raise ValueError(
                f"BertConfig: unknown 'hidden_act' {self.hidden_act!r}; "
                f"expected one of {sorted(ACTIVATIONS)}"
            )
        if self.embedding_size is not None and (
            isinstance(self.embedding_size, bool)
            or not isinstance(self.embedding_size, int)
            or self.embedding_size < 1
        ):
            raise ValueError(
                f"BertConfig: 'embedding_size' must be a positive integer or null, "
                f"got {self.embedding_size!r}"
            )
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            raise ValueError(
                f"BertConfig: 'initializer_range' must be positive, got {self.initializer_range!r}"
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(
                f"BertConfig: 'layer_norm_eps' must be a number in (0, 1), got {eps!r}"
            )
        for key in ("num_hidden_groups", "inner_group_num"):
            if getattr(self, key) != 1:
                raise ValueError(
                    f"BertConfig: '{key}' = {getattr(self, key)!r} is not supported; bertkit "
                    "builds ALBERT with one shared group of one layer, as published"
                )

    def check_inputs(self, maxlen=None, vocab_size=None, vocab_path=None, source=None):
        """Raises a ValueError, before any work, if inputs do not fit this config.

        Args:
            maxlen: the longest token sequence the run will feed; it must not exceed
                ``max_position_embeddings`` (a longer batch fails deep inside the model).
            vocab_size: the number of tokens of the vocabulary the run tokenizes with;
                more than the config's ``vocab_size`` gives ids past the embedding.
            vocab_path: the vocabulary file, named in the message.
            source: the config file, named in the message.
        """
        where = f" of {source}" if source else ""
        if maxlen is not None and maxlen > self.max_position_embeddings:
            raise ValueError(f"maxlen {maxlen} exceeds max_position_embeddings "
                             f"{self.max_position_embeddings}{where}; use --maxlen "
                             f"{self.max_position_embeddings} or less")
        if vocab_size is not None and vocab_size > self.vocab_size:
            vocab = vocab_path or "the vocabulary"
            raise ValueError(f"{vocab} has {vocab_size} tokens but vocab_size is "
                             f"{self.vocab_size}{where}: ids from {self.vocab_size} on would "
                             "index past the embedding; use the checkpoint's own vocab.txt")

    @property
    def activation(self):
        """The canonical activation name: ``gelu``, ``gelu_tanh``, ``relu``, ..."""
        return ACTIVATIONS[self.hidden_act.lower()]

    @property
    def attention_head_size(self):
        """Width of one attention head: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict with Google's keys."""
        if not isinstance(values, dict):
            raise TypeError(f"BertConfig.from_dict expects a dict, got {type(values).__name__}")
        return cls(**values)

    @classmethod
    def from_json_file(cls, path, defaults=None):
        """Reads Google's ``bert_config.json`` (or ALBERT's) from ``path``.

        Args:
            path: the JSON file.
            defaults: values for keys the file omits, where a model family's own default
                differs from Google BERT's (ELECTRA's ``type_vocab_size``).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BERT config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from None
        if isinstance(values, dict) and defaults:
            values = {**defaults, **values}
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None

    def to_dict(self):
        """The config as a dict with Google's keys (unset ALBERT keys left out)."""
        values = {key: getattr(self, key) for key in ["vocab_size", *_DEFAULTS]}
        if values["embedding_size"] is None:
            del values["embedding_size"]
        values.update(copy.deepcopy(self.extra))
        return values

    def to_json_file(self, path):
        """Writes the config as ``bert_config.json`` (atomically)."""
        with atomic_write(path) as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")

    def replace(self, **overrides):
        """A copy with some keys overridden, validated again."""
        values = self.to_dict()
        values.update(overrides)
        return type(self).from_dict(values)

    def __eq__(self, other):
        return isinstance(other, BertConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        items = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"BertConfig({items})"
