"""The transformer builder every family derives from, with one hook per thing families change.

A builder is a small class whose ``apply_embeddings``, ``apply_main_layers`` and
``apply_final_layers`` read like the paper; it creates each layer once under a stable
bert4keras-style name (``Embedding-Token``, ``Transformer-3-MultiHeadSelfAttention``,
``Pooler-Dense``, ``MLM-Norm``, ...). Checkpoint mapping, parameter-wise learning rates
and intermediate outputs all address layers by these names.

What a family changes is a hook of :class:`Transformer`, so a new family is one module
that overrides a few of them (see ``bertkit/models/nezha.py``):

- ``compute_attention_mask``: the attention bias (padding, or a mask per query);
- ``apply_embeddings``: which embeddings are summed (``position_embeddings = False``
  drops the learned absolute positions);
- ``attention_options``: biases, and positions inside attention (``'rotary'``,
  ``'relative'``);
- ``feed_forward_options``: biases and activation;
- ``apply_norm``: the normalisation layer;
- ``attention_query``: the ``[CLS]``-only last block of pooled-only models;
- ``apply_final_layers``: pooler, NSP, MLM (``mlm_logits``) and family heads;
- ``variable_mapping``: the checkpoint's variable names for each layer.
"""
import re

import keras

from bertkit import layers as bk_layers

__all__ = ["Transformer", "ATTENTION", "DENSE", "NORM"]

# Weight order of each bertkit layer kind, as Google names the pieces.
ATTENTION = ["query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel",
             "value/bias"]
DENSE = ["kernel", "bias"]
NORM = ["gamma", "beta"]


class Transformer:
    """Base builder: owns the config, the named layers and the resulting Keras model.

    It builds Google's BERT (post-layer-norm blocks, learned absolute positions); a
    family overrides the hooks listed in the module docstring. Layers are created
    through :meth:`apply`, which reuses a layer when its name was seen before; that is
    how ALBERT shares one set of transformer weights across its layers.

    Args:
        config: a :class:`~bertkit.config.BertConfig`.
        with_pool: output the pooled ``[CLS]`` vector (a tanh dense; ``'linear'`` for a
            linear pooler, as SimBERT-style checkpoints use) instead of the sequence.
        with_nsp: output next-sentence probabilities ``[B, 2]`` (implies the pooler).
        with_mlm: output masked-LM probabilities ``[B, T, V]``; ``'linear'`` gives
            logits instead.
        keep_tokens: original token ids kept (see ``load_vocab(simplified=True)``); the
            model's vocabulary is then ``len(keep_tokens)``.
        name: the Keras model's name.
        layer_norm_cond: makes every layer norm a
            :class:`~bertkit.layers.ConditionalLayerNormalization` fed by a condition
            vector ``[B, C]``: an int ``C`` adds a model input ``Input-Condition`` of that
            width; a ``keras.Input`` tensor is used (and added to the inputs) as is. The
            norms keep their names and their ``gamma``/``beta`` load from checkpoints;
            the condition projections start at zero, so the model starts unconditioned.
        layer_norm_cond_hidden_size: optional width of a bias-free dense mapping of the
            condition inside each norm (bert4keras's ``layer_norm_cond_hidden_size``).
        layer_norm_cond_hidden_act: activation of that mapping (default ``'linear'``).
        dtype: the dtype policy of every layer, e.g. ``'mixed_bfloat16'`` (bfloat16
            matmuls, float32 variables); ``None`` follows Keras's global policy. Softmax,
            layer normalisation, the attention-mask bias and the NSP/MLM outputs stay in
            float32 under any policy.
        cls_only_last_layer: compute the last transformer block for the first
            (``[CLS]``) position only, attending to the whole sequence. When the
            model's only output is the pooler's (``with_pool``/``with_nsp`` without
            ``with_mlm``) nothing else of that block is read, so ``None`` (default)
            turns it on exactly then: the outputs are the same and a step skips most
            of one block's work (a fifth of a 4-layer model's). The last block's
            intermediate and attention outputs then have length 1; ``False`` keeps
            them whole.
    """

    #: The family's name in the registry (``build_transformer_model(model=...)``).
    model_type = None
    #: The variable scope of the encoder in the family's checkpoints.
    scope = "bert"
    #: Whether the embeddings add learned absolute positions.
    position_embeddings = True
    #: Whether the family's checkpoints carry a pooler (``with_pool`` reads it).
    has_pooler = True
    #: Config values a family assumes where its config files omit the key.
    config_defaults = {}
    #: Options this family accepts beyond the base builder's (name -> default).
    extra_options = {}

    def __init__(self, config, with_pool=False, with_nsp=False, with_mlm=False,
                 keep_tokens=None, name=None, layer_norm_cond=None,
                 layer_norm_cond_hidden_size=None, layer_norm_cond_hidden_act=None,
                 dtype=None, cls_only_last_layer=None):
        if keep_tokens is not None:
            keep_tokens = [int(i) for i in keep_tokens]
            bad = [i for i in keep_tokens if not 0 <= i < config.vocab_size]
            if bad:
                raise ValueError(
                    f"keep_tokens holds ids outside the checkpoint's vocabulary of "
                    f"{config.vocab_size}: {bad[:5]}"
                )
            config = config.replace(vocab_size=len(keep_tokens))
        if with_mlm not in (False, True, "linear", "softmax"):
            raise ValueError(f"with_mlm must be False, True or 'linear', got {with_mlm!r}")
        if with_pool not in (False, True, "linear", "tanh"):
            raise ValueError(f"with_pool must be False, True, 'tanh' or 'linear', got "
                             f"{with_pool!r}")
        self.config = config
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = bool(with_nsp)
        self.with_mlm = with_mlm
        self.keep_tokens = keep_tokens
        self.name = name or self.model_type
        self.layers = {}
        self.model = None
        self.layer_norm_cond = _condition_input(layer_norm_cond)
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act or "linear"
        self.dtype = keras.dtype_policies.get(dtype) if dtype is not None else None
        pooled_only = bool(self.with_pool) and not with_mlm
        if cls_only_last_layer and not pooled_only:
            raise ValueError("cls_only_last_layer=True needs a pooled-only model "
                             "(with_pool or with_nsp, without with_mlm): the sequence and "
                             "the MLM head read every position of the last block")
        self.cls_only_last_layer = (pooled_only if cls_only_last_layer is None
                                    else bool(cls_only_last_layer))

    # -- building -----------------------------------------------------------------

    def apply(self, inputs, layer_class, name, arguments=None, **layer_kwargs):
        """Calls the layer named ``name`` on ``inputs``, creating it on first use."""
        if name not in self.layers:
            if self.dtype is not None:  # layers that pin their own dtype keep it
                layer_kwargs.setdefault("dtype", self.dtype.name)  # a name: serializable
            self.layers[name] = layer_class(name=name, **layer_kwargs)
        return self.layers[name](inputs, **(arguments or {}))

    @property
    def initializer(self):
        """Truncated normal with the config's ``initializer_range``, as in Google's code."""
        return keras.initializers.TruncatedNormal(stddev=self.config.initializer_range)

    def get_inputs(self):
        """The model inputs ``Input-Token`` and ``Input-Segment`` (int32, ``[B, T]``)."""
        token_ids = keras.Input(shape=(None,), dtype="int32", name="Input-Token")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="Input-Segment")
        return [token_ids, segment_ids]

    def build(self):
        """Builds ``self.model`` and returns it."""
        inputs = self.get_inputs()
        self.attention_mask = self.compute_attention_mask(inputs)
        x = self.apply_embeddings(inputs)
        for index in range(self.config.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        outputs = self.apply_final_layers(x)
        if self.layer_norm_cond is not None:
            inputs = inputs + [self.layer_norm_cond]
        self.model = keras.Model(inputs, outputs, name=self.name)
        # Read by the checkpoint writers when they are given the Keras model alone.
        self.model._bertkit_family, self.model._bertkit_config = type(self), self.config
        return self.model

    # -- hooks ----------------------------------------------------------------------

    def compute_attention_mask(self, inputs):
        """Which keys each position attends to: ``[B, S]`` (1 at real tokens: padding is
        id 0) or ``[B, T, S]`` per query (a causal or UniLM mask, for a family or task
        that needs one)."""
        return self.apply(inputs[0], bk_layers.PaddingMask, "Attention-Mask")

    def embedding_size(self):
        return self.config.embedding_size or self.config.hidden_size

    def apply_norm(self, x, name):
        """The layer norm ``name`` on ``x``; conditional when ``layer_norm_cond`` is set."""
        epsilon = self.config.layer_norm_eps
        if self.layer_norm_cond is None:
            return self.apply(x, bk_layers.LayerNormalization, name, epsilon=epsilon)
        return self.apply(x, bk_layers.ConditionalLayerNormalization, name,
                          arguments={"condition": self.layer_norm_cond}, epsilon=epsilon,
                          hidden_units=self.layer_norm_cond_hidden_size,
                          hidden_activation=self.layer_norm_cond_hidden_act,
                          hidden_initializer=self.initializer)

    def apply_embeddings(self, inputs):
        """Token + segment (+ learned position) embeddings, norm, dropout, and a dense
        mapping to the hidden size when the embeddings are narrower (ALBERT, ELECTRA)."""
        token_ids, segment_ids = inputs
        c = self.config
        width = self.embedding_size()
        x = self.apply(token_ids, bk_layers.Embedding, "Embedding-Token",
                       input_dim=c.vocab_size, output_dim=width,
                       embeddings_initializer=self.initializer)
        s = self.apply(segment_ids, keras.layers.Embedding, "Embedding-Segment",
                       input_dim=c.type_vocab_size, output_dim=width,
                       embeddings_initializer=self.initializer)
        x = self.apply([x, s], keras.layers.Add, "Embedding-Token-Segment")
        if self.position_embeddings:
            x = self.apply(x, bk_layers.PositionEmbedding, "Embedding-Position",
                           input_dim=c.max_position_embeddings, output_dim=width,
                           embeddings_initializer=self.initializer)
        x = self.apply_norm(x, "Embedding-Norm")
        x = self.apply(x, bk_layers.Dropout, "Embedding-Dropout", rate=c.hidden_dropout_prob)
        if width != c.hidden_size:
            x = self.apply(x, keras.layers.Dense, "Embedding-Mapping", units=c.hidden_size,
                           kernel_initializer=self.initializer)
        return x

    def block_name(self, index):
        """Name prefix of transformer block ``index``'s weighted layers (shared in ALBERT)."""
        return f"Transformer-{index}"

    def attention_options(self):
        """Keyword arguments of every block's :class:`~bertkit.layers.MultiHeadAttention`."""
        c = self.config
        return dict(heads=c.num_attention_heads, head_size=c.attention_head_size,
                    attention_dropout=c.attention_probs_dropout_prob,
                    kernel_initializer=self.initializer)

    def feed_forward_options(self):
        """Keyword arguments of every block's :class:`~bertkit.layers.FeedForward`."""
        c = self.config
        return dict(units=c.intermediate_size, activation=c.activation,
                    kernel_initializer=self.initializer)

    def attention_query(self, x, index):
        """The positions block ``index`` computes: all of ``x``, or ``[B, 1, H]`` for the
        ``[CLS]``-only last block of a pooled-only model (whose other positions nothing
        reads). Its query attends to every key and value of ``x``."""
        if self.cls_only_last_layer and index == self.config.num_hidden_layers - 1:
            return self.apply(x, bk_layers.TakeToken, f"Transformer-{index}-CLS", index=0,
                              keepdims=True)  # [B, T, H] -> [B, 1, H]
        return x

    def apply_main_layers(self, x, index):
        """One post-layer-norm block: attention, add & norm, feed-forward, add & norm."""
        c = self.config
        prefix = self.block_name(index)
        attention_name = f"{prefix}-MultiHeadSelfAttention"
        feed_forward_name = f"{prefix}-FeedForward"
        # Stateless layers get one per block so that every block's output has a name.
        per_block = f"Transformer-{index}"
        arguments = {"attention_mask": self.attention_mask}
        residual = self.attention_query(x, index)
        if residual is not x:
            arguments["query"] = residual
        y = self.apply(x, bk_layers.MultiHeadAttention, attention_name, arguments=arguments,
                       **self.attention_options())
        y = self.apply(y, bk_layers.Dropout, f"{per_block}-MultiHeadSelfAttention-Dropout",
                       rate=c.hidden_dropout_prob)
        x = self.apply([residual, y], keras.layers.Add,
                       f"{per_block}-MultiHeadSelfAttention-Add")
        x = self.apply_norm(x, f"{attention_name}-Norm")

        y = self.apply(x, bk_layers.FeedForward, feed_forward_name,
                       **self.feed_forward_options())
        y = self.apply(y, bk_layers.Dropout, f"{per_block}-FeedForward-Dropout",
                       rate=c.hidden_dropout_prob)
        x = self.apply([x, y], keras.layers.Add, f"{per_block}-FeedForward-Add")
        x = self.apply_norm(x, f"{feed_forward_name}-Norm")
        return x

    def apply_final_layers(self, x):
        """Pooler, NSP and the tied MLM head, as requested."""
        outputs = []
        if self.with_pool:
            outputs.append(self.apply_pooler(x))
        if self.with_mlm:
            outputs.append(self.apply_mlm_head(x))
        if not outputs:
            return x
        return outputs[0] if len(outputs) == 1 else outputs

    def apply_pooler(self, x):
        """``[CLS]`` -> dense (tanh, or linear) -> NSP probabilities when asked."""
        activation = "linear" if self.with_pool == "linear" else "tanh"
        pooled = self.apply(x, bk_layers.TakeToken, "Pooler", index=0)
        pooled = self.apply(pooled, keras.layers.Dense, "Pooler-Dense",
                            units=self.config.hidden_size, activation=activation,
                            kernel_initializer=self.initializer)
        if self.with_nsp:
            pooled = self.apply(pooled, keras.layers.Dense, "NSP-Proba", units=2,
                                activation="softmax", dtype="float32",
                                kernel_initializer=self.initializer)
        return pooled

    def apply_mlm_head(self, x):
        """The MLM logits (:meth:`mlm_logits`), then softmax (or none with ``'linear'``)."""
        return self.apply(self.mlm_logits(x), keras.layers.Activation, "MLM-Activation",
                          activation="linear" if self.with_mlm == "linear" else "softmax",
                          dtype="float32")

    def mlm_logits(self, x):
        """``[B, T, H] -> [B, T, V]``: dense, norm, the token embedding transposed (tied),
        bias. Pretraining calls it on the gathered masked positions only."""
        y = self.apply(x, keras.layers.Dense, "MLM-Dense", units=self.embedding_size(),
                       activation=bk_layers.get_activation(self.config.activation),
                       kernel_initializer=self.initializer)
        y = self.apply_norm(y, "MLM-Norm")
        y = self.apply(y, bk_layers.Embedding, "Embedding-Token", arguments={"mode": "dense"})
        return self.apply(y, bk_layers.BiasAdd, "MLM-Bias")

    # -- checkpoints ------------------------------------------------------------------

    @classmethod
    def variable_mapping(cls, layer_names):
        """``{layer name: [checkpoint variable name per layer weight]}`` for the layers
        of ``layer_names`` (a model of this family with any subset of heads and layers).

        Google's BERT names under :attr:`scope`; families override or extend it.
        """
        scope = cls.scope
        mapping = {
            "Embedding-Token": [f"{scope}/embeddings/word_embeddings"],
            "Embedding-Segment": [f"{scope}/embeddings/token_type_embeddings"],
            "Embedding-Position": [f"{scope}/embeddings/position_embeddings"],
            "Embedding-Norm": [f"{scope}/embeddings/LayerNorm/{n}" for n in NORM],
            "Pooler-Dense": [f"{scope}/pooler/dense/{n}" for n in DENSE],
            "NSP-Proba": ["cls/seq_relationship/output_weights",
                          "cls/seq_relationship/output_bias"],
            "MLM-Dense": [f"cls/predictions/transform/dense/{n}" for n in DENSE],
            "MLM-Norm": [f"cls/predictions/transform/LayerNorm/{n}" for n in NORM],
            "MLM-Bias": ["cls/predictions/output_bias"],
        }
        for name in layer_names:
            match = re.fullmatch(r"Transformer-(\d+)-MultiHeadSelfAttention", name)
            if match:
                mapping.update(cls.block_mapping(match.group(1), f"Transformer-{match.group(1)}"))
        return {name: names for name, names in mapping.items() if name in layer_names}

    @classmethod
    def block_mapping(cls, index, prefix):
        """The names of block ``index``'s variables, for its layers named ``prefix-...``."""
        layer = f"{cls.scope}/encoder/layer_{index}/"
        return {
            f"{prefix}-MultiHeadSelfAttention":
                [f"{layer}attention/self/{n}" for n in ATTENTION]
                + [f"{layer}attention/output/dense/{n}" for n in DENSE],
            f"{prefix}-MultiHeadSelfAttention-Norm":
                [f"{layer}attention/output/LayerNorm/{n}" for n in NORM],
            f"{prefix}-FeedForward": [f"{layer}intermediate/dense/{n}" for n in DENSE]
                                     + [f"{layer}output/dense/{n}" for n in DENSE],
            f"{prefix}-FeedForward-Norm": [f"{layer}output/LayerNorm/{n}" for n in NORM],
        }

    @classmethod
    def to_checkpoint(cls, variable_name, value):
        """Keras weight value -> the value stored under ``variable_name`` (and back: every
        transform is its own inverse)."""
        if variable_name == "cls/seq_relationship/output_weights":
            return value.T  # Google stores the NSP kernel as [2, H]
        return value

    @classmethod
    def token_row_variables(cls):
        """Variables with one row per token, cut to ``keep_tokens`` when loading."""
        return (f"{cls.scope}/embeddings/word_embeddings", "cls/predictions/output_bias")

    @classmethod
    def expected_unused(cls, variable_name):
        """Whether a checkpoint variable left unused is expected (a head or layer that was
        not built), reported at INFO rather than as a warning."""
        return variable_name.startswith(("cls/", f"{cls.scope}/pooler/",
                                         f"{cls.scope}/encoder/layer_"))

    # -- Hugging Face names ---------------------------------------------------------

    #: ``model_type`` of the family's Hugging Face ``config.json`` (None: none exists).
    huggingface_model_type = "bert"

    @classmethod
    def huggingface_name(cls, variable_name):
        """The Hugging Face (PyTorch) key of a Google variable name, and whether its value
        is stored transposed there (``torch.nn.Linear`` keeps ``[out, in]``).

        ``bert/encoder/layer_0/attention/self/query/kernel`` ->
        ``('bert.encoder.layer.0.attention.self.query.weight', True)``.
        """
        special = {
            "cls/predictions/output_bias": "cls.predictions.bias",
            "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
            "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
        }
        if variable_name in special:
            return special[variable_name], False
        parts = variable_name.split("/")
        if parts[0] == cls.scope:
            parts[0] = cls.huggingface_model_type
        parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", part) for part in parts]
        leaf = parts[-1]
        if leaf in ("kernel", "gamma"):
            parts[-1] = "weight"
        elif leaf == "beta":
            parts[-1] = "bias"
        elif leaf.endswith("embeddings"):
            parts.append("weight")
        return ".".join(parts), leaf == "kernel"

    @classmethod
    def huggingface_extra_tensors(cls, config):
        """Fixed tensors a Hugging Face file of the family carries beside the weights
        (none for BERT), written so that transformers finds every key it expects."""
        return {}

    # -- access -------------------------------------------------------------------

    def layer(self, name):
        """The layer named ``name`` (bert4keras-style), with a clear error if absent."""
        if name not in self.layers:
            raise KeyError(f"no layer named {name!r}; layers: {sorted(self.layers)}")
        return self.layers[name]


def _condition_input(value):
    """``layer_norm_cond`` as a Keras input tensor (or None), with a clear error."""
    if value is None or isinstance(value, keras.KerasTensor):
        if value is not None and len(value.shape) != 2:
            raise ValueError(f"layer_norm_cond must be a [batch, width] input, got shape "
                             f"{tuple(value.shape)}")
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return keras.Input(shape=(value,), name="Input-Condition")
    raise TypeError(f"layer_norm_cond must be None, a positive int (the condition's width) "
                    f"or a keras.Input tensor, got {value!r}")
