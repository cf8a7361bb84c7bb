"""RoFormer (ZhuiyiTechnology): rotary position embedding, v1 and v2.

RoFormer is BERT with no absolute position embeddings; its queries and keys are
rotated by their positions (:func:`bertkit.positions.rotary_position_embedding`).
RoFormer-v2 also drops every bias and every norm parameter: its norm is a
parameter-free RMS norm and its feed-forward uses relu.
"""
import numpy as np

from bertkit import layers as bk_layers
from bertkit.models.base import Transformer
from bertkit.models.registry import register_family

__all__ = ["RoFormer", "RoFormerV2"]


@register_family("roformer")
class RoFormer(Transformer):
    """RoFormer (v1): BERT with rotary positions in attention. Checkpoints use BERT's
    names without ``position_embeddings``; the MLM head is BERT's."""

    model_type = "roformer"
    huggingface_model_type = "roformer"
    position_embeddings = False

    def attention_options(self):
        return dict(super().attention_options(), position_encoding="rotary")

    @classmethod
    def huggingface_extra_tensors(cls, config):
        # transformers' RoFormerSinusoidalPositionalEmbedding keeps its sinusoid table as
        # a weight: all sines first, then all cosines (bertkit computes them on the fly).
        depth = config.hidden_size // config.num_attention_heads
        positions = np.arange(config.max_position_embeddings)[:, None]
        angles = positions / np.power(10000.0, 2 * (np.arange(depth)[None, :] // 2) / depth)
        table = np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], axis=1)
        return {"roformer.encoder.embed_positions.weight": table.astype("float32")}


@register_family("roformer_v2")
class RoFormerV2(RoFormer):
    """RoFormer-v2: rotary attention without biases, parameter-free RMS norms.

    With ``with_mlm`` the output is the token embedding transposed, as in the release
    (no transform, no bias). There is no pooler in the release checkpoints.
    """

    model_type = "roformer_v2"
    huggingface_model_type = None  # transformers has no RoFormer-v2
    has_pooler = False

    def attention_options(self):
        return dict(super().attention_options(), use_bias=False)

    def feed_forward_options(self):
        return dict(super().feed_forward_options(), use_bias=False)

    def apply_norm(self, x, name):
        if self.layer_norm_cond is not None:
            raise ValueError("RoFormer-v2's norms have no gain or bias to condition")
        return self.apply(x, bk_layers.RMSNorm, name, epsilon=self.config.layer_norm_eps)

    def mlm_logits(self, x):
        return self.apply(x, bk_layers.Embedding, "Embedding-Token", arguments={"mode": "dense"})

    @classmethod
    def variable_mapping(cls, layer_names):
        # The norms are parameter-free: nothing of theirs is stored.
        return {name: variables for name, variables in super().variable_mapping(
            layer_names).items() if not name.endswith("Norm")}

    @classmethod
    def block_mapping(cls, index, prefix):
        layer = f"{cls.scope}/encoder/layer_{index}/"
        return {
            f"{prefix}-MultiHeadSelfAttention":
                [f"{layer}attention/self/{n}/kernel" for n in ("query", "key", "value")]
                + [f"{layer}attention/output/dense/kernel"],
            f"{prefix}-FeedForward": [f"{layer}intermediate/dense/kernel",
                                      f"{layer}output/dense/kernel"],
        }
