"""BERT as in Google's ``modeling.py``, and RoBERTa checkpoints saved in its naming."""
from bertkit.models.base import Transformer
from bertkit.models.registry import register_family

__all__ = ["BERT", "RoBERTa"]


@register_family("bert")
class BERT(Transformer):
    """BERT as in Google's ``modeling.py``: post-layer-norm blocks, learned positions.

    Every hook is the base builder's; checkpoints use Google's ``bert/...`` names.
    """

    model_type = "bert"


@register_family("roberta")
class RoBERTa(BERT):
    """RoBERTa-style checkpoints saved in Google's BERT naming (e.g. Chinese RoBERTa-wwm).

    The architecture is BERT's; the class exists so that ``model='roberta'`` reads as
    what it is.
    """

    model_type = "roberta"
