"""ALBERT: a factorised embedding and one set of transformer weights for every layer."""
import keras

from bertkit import layers as bk_layers
from bertkit.models.base import DENSE, NORM, Transformer
from bertkit.models.registry import register_family

__all__ = ["ALBERT", "ALBERTzh"]


@register_family("albert")
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

    huggingface_model_type = "albert"
    _HUGGINGFACE_PARTS = (  # Google's ALBERT scopes -> transformers' AlbertModel modules
        ("bert/encoder/transformer/group_0/inner_group_0/attention_1/self/",
         "albert.encoder.albert_layer_groups.0.albert_layers.0.attention."),
        ("bert/encoder/transformer/group_0/inner_group_0/attention_1/output/dense/",
         "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.dense."),
        ("bert/encoder/transformer/group_0/inner_group_0/LayerNorm/",
         "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.LayerNorm."),
        ("bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/dense/",
         "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn."),
        ("bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/output/dense/",
         "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn_output."),
        ("bert/encoder/transformer/group_0/inner_group_0/LayerNorm_1/",
         "albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm."),
        ("bert/encoder/embedding_hidden_mapping_in/",
         "albert.encoder.embedding_hidden_mapping_in."),
        ("bert/pooler/dense/", "albert.pooler."),
        ("cls/predictions/transform/dense/", "predictions.dense."),
        ("cls/predictions/transform/LayerNorm/", "predictions.LayerNorm."),
    )

    @classmethod
    def huggingface_name(cls, variable_name):
        if variable_name == "cls/predictions/output_bias":
            return "predictions.bias", False
        for google, hugging_face in cls._HUGGINGFACE_PARTS:
            if variable_name.startswith(google):
                *module, leaf = variable_name[len(google):].split("/")  # query/kernel
                name = {"kernel": "weight", "gamma": "weight", "beta": "bias"}.get(leaf, leaf)
                return hugging_face + ".".join([*module, name]), leaf == "kernel"
        return super().huggingface_name(variable_name)  # the embeddings: BERT's rule

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


@register_family("albert_zh")
class ALBERTzh(ALBERT):
    """The early Chinese ALBERT of brightmart/albert_zh (``albert_base_zh``,
    ``albert_tiny_zh``, ... without "google" in the name), whose names and embedding
    differ from Google's ALBERT.

    Its factorised embedding is projected to the hidden size right after the lookup
    (``bert/embeddings/word_embeddings_2``, ``[E, H]``, no bias), before the segment
    and position embeddings (``[S, H]``, ``[P, H]``) are added; the shared block is
    BERT's under ``bert/encoder/layer_shared/``; the MLM head projects back through the
    same ``[E, H]`` matrix. Only the post-layer-norm releases (``ln_type`` ``postln``, the
    tiny, base and large models) are supported.
    """

    model_type = "albert_zh"
    huggingface_model_type = None  # no transformers class has this layout

    def __init__(self, config, **kwargs):
        if config.extra.get("ln_type", "postln") not in (None, "postln"):
            raise ValueError(f"ALBERT-zh with ln_type {config.extra['ln_type']!r} (the "
                             "pre-layer-norm xlarge models) is not supported")
        super().__init__(config, **kwargs)

    def apply_embeddings(self, inputs):
        token_ids, segment_ids = inputs
        c = self.config
        x = self.apply(token_ids, bk_layers.Embedding, "Embedding-Token",
                       input_dim=c.vocab_size, output_dim=self.embedding_size(),
                       embeddings_initializer=self.initializer)
        # [B, T, E] -> [B, T, H] through the [E, H] table of word_embeddings_2
        x = self.apply(x, bk_layers.Embedding, "Embedding-Mapping", arguments={"mode": "project"},
                       input_dim=self.embedding_size(), output_dim=c.hidden_size,
                       embeddings_initializer=self.initializer)
        s = self.apply(segment_ids, keras.layers.Embedding, "Embedding-Segment",
                       input_dim=c.type_vocab_size, output_dim=c.hidden_size,
                       embeddings_initializer=self.initializer)
        x = self.apply([x, s], keras.layers.Add, "Embedding-Token-Segment")
        x = self.apply(x, bk_layers.PositionEmbedding, "Embedding-Position",
                       input_dim=c.max_position_embeddings, output_dim=c.hidden_size,
                       embeddings_initializer=self.initializer)
        x = self.apply_norm(x, "Embedding-Norm")
        return self.apply(x, bk_layers.Dropout, "Embedding-Dropout", rate=c.hidden_dropout_prob)

    def mlm_logits(self, x):
        y = self.apply(x, keras.layers.Dense, "MLM-Dense", units=self.config.hidden_size,
                       activation=bk_layers.get_activation(self.config.activation),
                       kernel_initializer=self.initializer)
        y = self.apply_norm(y, "MLM-Norm")
        # [B, T, H] -> [B, T, E] -> [B, T, V]: both tables transposed
        y = self.apply(y, bk_layers.Embedding, "Embedding-Mapping", arguments={"mode": "dense"})
        y = self.apply(y, bk_layers.Embedding, "Embedding-Token", arguments={"mode": "dense"})
        return self.apply(y, bk_layers.BiasAdd, "MLM-Bias")

    @classmethod
    def variable_mapping(cls, layer_names):
        mapping = Transformer.variable_mapping(layer_names)
        mapping.update({k: v for k, v in Transformer.block_mapping(
            "shared", "Transformer").items() if k in layer_names})
        if "Embedding-Mapping" in layer_names:
            mapping["Embedding-Mapping"] = ["bert/embeddings/word_embeddings_2"]
        return mapping
