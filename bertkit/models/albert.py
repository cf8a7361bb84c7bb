"""ALBERT: a factorised embedding and one set of transformer weights for every layer."""
from bertkit.models.base import DENSE, NORM, Transformer


class ALBERT(Transformer):
    """ALBERT as Google publishes it (``albert_config.json``, ``embedding_size``).

    The shared layers are named ``Transformer-MultiHeadSelfAttention``,
    ``Transformer-MultiHeadSelfAttention-Norm``, ``Transformer-FeedForward`` and
    ``Transformer-FeedForward-Norm``; layer ``i``'s output is still reachable by the
    per-block name ``Transformer-{i}-FeedForward-Add`` (before the shared norm), or
    by ``(name, i)`` in :func:`~bertkit.models.intermediate_model`.
    """

    model_type = "albert"

    def block_name(self, index):
        return "Transformer"

    @classmethod
    def variable_mapping(cls, layer_names):
        mapping = super().variable_mapping(layer_names)
        group = "bert/encoder/transformer/group_0/inner_group_0/"
        shared = {
            "Embedding-Mapping": [f"bert/encoder/embedding_hidden_mapping_in/{n}"
                                  for n in DENSE],
            "Transformer-MultiHeadSelfAttention":
                [f"{group}attention_1/self/{n}" for n in
                 ("query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel",
                  "value/bias")]
                + [f"{group}attention_1/output/dense/{n}" for n in DENSE],
            "Transformer-MultiHeadSelfAttention-Norm": [f"{group}LayerNorm/{n}" for n in NORM],
            "Transformer-FeedForward":
                [f"{group}ffn_1/intermediate/dense/{n}" for n in DENSE]
                + [f"{group}ffn_1/intermediate/output/dense/{n}" for n in DENSE],
            "Transformer-FeedForward-Norm": [f"{group}LayerNorm_1/{n}" for n in NORM],
        }
        mapping.update({k: v for k, v in shared.items() if k in layer_names})
        return mapping
