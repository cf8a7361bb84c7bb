"""NEZHA (Huawei): BERT with functional relative positions instead of learned ones.

No absolute position embeddings; inside attention, a fixed sinusoid of the clipped
distance ``j - i`` is added to the keys and to the values
(:func:`bertkit.positions.relative_position_table`). The distance is clipped at the
config's ``max_relative_position`` (64 in the released models and when the config
omits it). Checkpoints use BERT's names without ``position_embeddings``; release
checkpoints that keep Adam's slots load without them.
"""
from bertkit.models.base import Transformer
from bertkit.models.registry import register_family

__all__ = ["NEZHA"]


@register_family("nezha")
class NEZHA(Transformer):
    """NEZHA; everything but the positions is BERT's."""

    model_type = "nezha"
    huggingface_model_type = "nezha"
    position_embeddings = False
    config_defaults = {"max_relative_position": 64}

    def attention_options(self):
        # A wrong clipping distance moves the outputs by about 1, so it is read from the
        # config rather than assumed.
        max_relative_position = self.config.extra.get("max_relative_position", 64)
        return dict(super().attention_options(), position_encoding="relative",
                    max_relative_position=int(max_relative_position))
