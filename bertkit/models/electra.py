"""ELECTRA discriminators (Google's and hfl's Chinese ELECTRA) loaded as encoders.

ELECTRA is BERT's architecture with narrower embeddings projected to the hidden size
(``embeddings_project``), no pooler, and a discriminator head that scores each token
as original or replaced. Its checkpoints hold the generator too, which is skipped.

Example:

>>> model = build_transformer_model('electra_config.json', 'electra_base', model='electra')
>>> replaced = build_transformer_model(..., model='electra', with_discriminator=True)
"""
import keras

from bertkit import layers as bk_layers
from bertkit.models.base import DENSE, Transformer
from bertkit.models.registry import register_family

__all__ = ["ELECTRA"]


@register_family("electra")
class ELECTRA(Transformer):
    """An ELECTRA discriminator.

    Args (beyond the base builder's):
        with_discriminator: output the discriminator's probability that each token was
            replaced, ``[B, T, 1]`` (dense with the hidden activation, dense to 1,
            sigmoid; named ``Discriminator-Dense`` and ``Discriminator-Prediction``),
            instead of the sequence.

    ELECTRA has no pooler: ``with_pool``/``with_nsp`` raise a ValueError (pool with a
    task head instead, e.g. ``ClassificationHead(pooling='cls')``, which is how
    ELECTRA is fine-tuned).
    """

    model_type = "electra"
    scope = "electra"
    has_pooler = False
    config_defaults = {"type_vocab_size": 2}
    extra_options = {"with_discriminator": False}

    def __init__(self, config, with_discriminator=False, **kwargs):
        if kwargs.get("with_pool") or kwargs.get("with_nsp"):
            raise ValueError("ELECTRA checkpoints have no pooler, so with_pool/with_nsp "
                             "would give an untrained vector; pool the sequence in a head "
                             "(ClassificationHead(pooling='cls' or 'mean')) instead")
        if with_discriminator and kwargs.get("with_mlm"):
            raise ValueError("with_discriminator and with_mlm: ELECTRA's discriminator "
                             "checkpoints have no MLM head")
        super().__init__(config, **kwargs)
        self.with_discriminator = bool(with_discriminator)

    def apply_final_layers(self, x):
        if not self.with_discriminator:
            return super().apply_final_layers(x)
        c = self.config
        x = self.apply(x, keras.layers.Dense, "Discriminator-Dense", units=c.hidden_size,
                       activation=bk_layers.get_activation(c.activation),
                       kernel_initializer=self.initializer)
        return self.apply(x, keras.layers.Dense, "Discriminator-Prediction", units=1,
                          activation="sigmoid", dtype="float32",
                          kernel_initializer=self.initializer)

    @classmethod
    def variable_mapping(cls, layer_names):
        mapping = super().variable_mapping(layer_names)
        heads = {
            "Embedding-Mapping": [f"electra/embeddings_project/{n}" for n in DENSE],
            "Discriminator-Dense": [f"discriminator_predictions/dense/{n}" for n in DENSE],
            "Discriminator-Prediction": [f"discriminator_predictions/dense_1/{n}"
                                         for n in DENSE],
        }
        mapping.update({k: v for k, v in heads.items() if k in layer_names})
        return mapping

    huggingface_model_type = "electra"

    @classmethod
    def huggingface_name(cls, variable_name):
        name, transposed = super().huggingface_name(variable_name)
        # transformers' ElectraDiscriminatorPredictions calls its second dense dense_prediction
        return name.replace("discriminator_predictions.dense_1.",
                            "discriminator_predictions.dense_prediction."), transposed

    @classmethod
    def expected_unused(cls, variable_name):
        # The generator shares the file; a discriminator head not asked for is fine too.
        return super().expected_unused(variable_name) or variable_name.startswith(
            ("generator/", "generator_predictions/", "discriminator_predictions/"))
