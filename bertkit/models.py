"""Transformer builders (BERT, RoBERTa as BERT, ALBERT) and `build_transformer_model`.

A builder is a small class whose ``apply_embeddings``, ``apply_main_layers`` and
``apply_final_layers`` read like the paper; it creates each layer once under a stable
bert4keras-style name (``Embedding-Token``, ``Transformer-3-MultiHeadSelfAttention``,
``Pooler-Dense``, ``MLM-Norm``, ...). Checkpoint mapping, parameter-wise learning rates
and intermediate outputs all address layers by these names.

Example:

>>> model = build_transformer_model('bert_config.json', 'bert_model.ckpt', with_pool=True)
>>> pooled = model.predict([token_ids, segment_ids])          # [B, H]
>>> probs = attention_model(model).predict([token_ids, segment_ids])  # [B, N, T, T] per layer
"""
import keras
import numpy as np

from bertkit import layers as bk_layers
from bertkit.config import BertConfig
# Bucketed padding lives with the rest of the padding, in bertkit.data; importable
# from here as before.
from bertkit.data import DEFAULT_LENGTH_BUCKETS, bucket_length, pad_to_bucket  # noqa: F401


class Transformer:
    """Base builder: owns the config, the named layers and the resulting Keras model.

    Subclasses implement ``apply_embeddings``, ``apply_main_layers`` and
    ``apply_final_layers``. Layers are created through :meth:`apply`, which reuses a
    layer when its name was seen before; that is how ALBERT shares one set of
    transformer weights across its layers.

    Args:
        config: a :class:`~bertkit.config.BertConfig`.
        with_pool: output the pooled ``[CLS]`` vector (tanh dense) instead of the
            sequence.
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

    model_type = None

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
        self.config = config
        self.with_pool = bool(with_pool) or bool(with_nsp)
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
        pooled_only = self.with_pool and not with_mlm
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
                layer_kwargs.setdefault("dtype", self.dtype)
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
        self.attention_mask = self.apply(inputs[0], bk_layers.PaddingMask, "Attention-Mask")
        x = self.apply_embeddings(inputs)
        for index in range(self.config.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        outputs = self.apply_final_layers(x)
        if self.layer_norm_cond is not None:
            inputs = inputs + [self.layer_norm_cond]
        self.model = keras.Model(inputs, outputs, name=self.name)
        return self.model

    def apply_norm(self, x, name):
        """The layer norm ``name`` on ``x``; conditional when ``layer_norm_cond`` is set."""
        epsilon = self.config.layer_norm_eps
        if self.layer_norm_cond is None:
            return self.apply(x, keras.layers.LayerNormalization, name, epsilon=epsilon)
        return self.apply(x, bk_layers.ConditionalLayerNormalization, name,
                          arguments={"condition": self.layer_norm_cond}, epsilon=epsilon,
                          hidden_units=self.layer_norm_cond_hidden_size,
                          hidden_activation=self.layer_norm_cond_hidden_act,
                          hidden_initializer=self.initializer)

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, x, index):
        raise NotImplementedError

    def apply_final_layers(self, x):
        raise NotImplementedError

    # -- access -------------------------------------------------------------------

    def layer(self, name):
        """The layer named ``name`` (bert4keras-style), with a clear error if absent."""
        if name not in self.layers:
            raise KeyError(f"no layer named {name!r}; layers: {sorted(self.layers)}")
        return self.layers[name]


class BERT(Transformer):
    """BERT as in Google's ``modeling.py``: post-layer-norm blocks, learned positions."""

    model_type = "bert"

    def embedding_size(self):
        return self.config.embedding_size or self.config.hidden_size

    def apply_embeddings(self, inputs):
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
        """Name prefix of transformer block ``index`` (shared in ALBERT)."""
        return f"Transformer-{index}"

    def apply_main_layers(self, x, index):
        """One post-layer-norm block: attention, add & norm, feed-forward, add & norm."""
        c = self.config
        prefix = self.block_name(index)
        attention_name = f"{prefix}-MultiHeadSelfAttention"
        feed_forward_name = f"{prefix}-FeedForward"
        # Stateless layers get one per block so that every block's output has a name.
        per_block = f"Transformer-{index}"
        arguments = {"attention_mask": self.attention_mask}
        residual = x
        if self.cls_only_last_layer and index == c.num_hidden_layers - 1:
            # Only [CLS] goes on to the pooler: its query attends to every key and value,
            # and the rest of the block runs on that one position.  [B, T, H] -> [B, 1, H]
            residual = self.apply(x, bk_layers.TakeToken, f"{per_block}-CLS", index=0,
                                  keepdims=True)
            arguments["query"] = residual

        y = self.apply(x, bk_layers.MultiHeadAttention, attention_name, arguments=arguments,
                       heads=c.num_attention_heads, head_size=c.attention_head_size,
                       attention_dropout=c.attention_probs_dropout_prob,
                       kernel_initializer=self.initializer)
        y = self.apply(y, bk_layers.Dropout, f"{per_block}-MultiHeadSelfAttention-Dropout",
                       rate=c.hidden_dropout_prob)
        x = self.apply([residual, y], keras.layers.Add,
                       f"{per_block}-MultiHeadSelfAttention-Add")
        x = self.apply_norm(x, f"{attention_name}-Norm")

        y = self.apply(x, bk_layers.FeedForward, feed_forward_name,
                       units=c.intermediate_size, activation=c.activation,
                       kernel_initializer=self.initializer)
        y = self.apply(y, bk_layers.Dropout, f"{per_block}-FeedForward-Dropout",
                       rate=c.hidden_dropout_prob)
        x = self.apply([x, y], keras.layers.Add, f"{per_block}-FeedForward-Add")
        x = self.apply_norm(x, f"{feed_forward_name}-Norm")
        return x

    def apply_final_layers(self, x):
        """Pooler, NSP and the tied MLM head, as requested."""
        c = self.config
        outputs = []
        if self.with_pool:
            pooled = self.apply(x, bk_layers.TakeToken, "Pooler", index=0)
            pooled = self.apply(pooled, keras.layers.Dense, "Pooler-Dense", units=c.hidden_size,
                                activation="tanh", kernel_initializer=self.initializer)
            if self.with_nsp:
                pooled = self.apply(pooled, keras.layers.Dense, "NSP-Proba", units=2,
                                    activation="softmax", dtype="float32",
                                    kernel_initializer=self.initializer)
            outputs.append(pooled)
        if self.with_mlm:
            y = self.apply(x, keras.layers.Dense, "MLM-Dense", units=self.embedding_size(),
                           activation=bk_layers.get_activation(c.activation),
                           kernel_initializer=self.initializer)
            y = self.apply_norm(y, "MLM-Norm")
            y = self.apply(y, bk_layers.Embedding, "Embedding-Token", arguments={"mode": "dense"})
            y = self.apply(y, bk_layers.BiasAdd, "MLM-Bias")
            activation = "linear" if self.with_mlm == "linear" else "softmax"
            y = self.apply(y, keras.layers.Activation, "MLM-Activation",
                           activation=activation, dtype="float32")
            outputs.append(y)
        if not outputs:
            return x
        return outputs[0] if len(outputs) == 1 else outputs


class ALBERT(BERT):
    """ALBERT: factorised embedding and one set of transformer weights for all layers.

    The shared layers are named ``Transformer-MultiHeadSelfAttention``,
    ``Transformer-MultiHeadSelfAttention-Norm``, ``Transformer-FeedForward`` and
    ``Transformer-FeedForward-Norm``; layer ``i``'s output is still reachable by the
    per-block name ``Transformer-{i}-FeedForward-Add`` (before the shared norm), or
    by ``(name, i)`` in :func:`intermediate_model`.
    """

    model_type = "albert"

    def block_name(self, index):
        return "Transformer"


class RoBERTa(BERT):
    """RoBERTa-style checkpoints saved in Google's BERT naming (e.g. Chinese RoBERTa-wwm).

    The architecture is BERT's; the class exists so that ``model='roberta'`` reads as
    what it is.
    """

    model_type = "roberta"


BUILDERS = {"bert": BERT, "roberta": RoBERTa, "albert": ALBERT}


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            with_pool=False, with_nsp=False, with_mlm=False,
                            keep_tokens=None, return_keras_model=True, layer_norm_cond=None,
                            layer_norm_cond_hidden_size=None, layer_norm_cond_hidden_act=None,
                            dtype=None, cls_only_last_layer=None, **overrides):
    """Builds a BERT/RoBERTa/ALBERT encoder and optionally loads a Google checkpoint.

    Args:
        config_path: path to ``bert_config.json``, or a ``BertConfig``/dict. May be
            ``None`` when ``overrides`` give at least ``vocab_size``.
        checkpoint_path: the checkpoint prefix (``.../bert_model.ckpt``) or its
            directory; ``None`` keeps the random initialisation.
        model: ``'bert'``, ``'roberta'`` or ``'albert'``.
        with_pool: output the pooled ``[CLS]`` vector ``[B, H]`` instead of the sequence.
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
            the first four layers of a checkpoint, or ``hidden_dropout_prob=0``.

    Returns:
        A ``keras.Model`` with inputs ``[Input-Token, Input-Segment]``; with several
        heads its output is ``[pooled or nsp, mlm]`` as in bert4keras. Or the builder.

    Raises:
        ValueError: unknown ``model``, bad config values, or a checkpoint that does not
            match the config (naming the variable and both shapes).
        FileNotFoundError: a missing config or checkpoint file.
    """
    key = str(model).lower()
    if key not in BUILDERS:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(BUILDERS)}")
    config = _resolve_config(config_path, overrides)
    builder = BUILDERS[key](config, with_pool=with_pool, with_nsp=with_nsp,
                            with_mlm=with_mlm, keep_tokens=keep_tokens,
                            layer_norm_cond=layer_norm_cond,
                            layer_norm_cond_hidden_size=layer_norm_cond_hidden_size,
                            layer_norm_cond_hidden_act=layer_norm_cond_hidden_act,
                            dtype=dtype, cls_only_last_layer=cls_only_last_layer)
    builder.build()
    if checkpoint_path is not None:
        from bertkit import checkpoints  # imported here: checkpoints imports models

        checkpoints.load_weights_from_checkpoint(builder, checkpoint_path)
    return builder.model if return_keras_model else builder


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


def _resolve_config(config_path, overrides):
    if config_path is None:
        return BertConfig.from_dict(dict(overrides))
    if isinstance(config_path, BertConfig):
        config = config_path
    elif isinstance(config_path, dict):
        config = BertConfig.from_dict(config_path)
    else:
        config = BertConfig.from_json_file(config_path)
    return config.replace(**overrides) if overrides else config


BLOCK_LAYER_SUFFIXES = ("-MultiHeadSelfAttention", "-MultiHeadSelfAttention-Norm",
                        "-FeedForward", "-FeedForward-Norm")


def reinitialize_top_blocks(model, count, initializer_range=0.02, seed=None):
    """Gives the last ``count`` transformer blocks fresh weights, as a new BERT starts.

    Kernels are drawn from a truncated normal of stddev ``initializer_range`` (Google's
    initialiser), biases and LayerNorm betas become 0, gammas 1; every other weight is
    left as it is. Why: a small pretrained encoder's top blocks carry what its
    pretraining task needed (predicting masked tokens) more than what a new task needs,
    and on small data starting them afresh often fine-tunes better (Zhang et al., 2021,
    "Revisiting Few-sample BERT Fine-tuning").

    Args:
        model: a BERT/RoBERTa model from :func:`build_transformer_model` (its blocks
            named ``Transformer-{i}-...``), or a model containing those layers.
        count: how many blocks, counted from the top; at least 1, at most the number of
            blocks.
        initializer_range: stddev of the kernels' truncated normal.
        seed: seed of the draws (``None``: Keras's global seed generator).

    Returns:
        The names of the layers re-initialised.

    Raises:
        ValueError: ``count`` out of range, or a model without per-block layers (ALBERT
            shares one block across all layers, so it has no top block of its own).
    """
    names = {layer.name for layer in model.layers}
    num_blocks = 0
    while f"Transformer-{num_blocks}-FeedForward-Norm" in names:
        num_blocks += 1
    if not num_blocks:
        raise ValueError(f"model {model.name!r} has no per-block transformer layers "
                         "(Transformer-{i}-...); ALBERT's shared block cannot be re-initialised "
                         "on its own")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= num_blocks:
        raise ValueError(f"count must be an int in [1, {num_blocks}] (the model's blocks), "
                         f"got {count!r}")
    kernel_initializer = keras.initializers.TruncatedNormal(stddev=initializer_range,
                                                            seed=seed)
    done = []
    for index in range(num_blocks - count, num_blocks):
        for suffix in BLOCK_LAYER_SUFFIXES:
            layer = model.get_layer(f"Transformer-{index}{suffix}")
            for variable in layer.weights:
                leaf = variable.path.rsplit("/", 1)[-1]
                if leaf.endswith("kernel"):
                    value = kernel_initializer(variable.shape, dtype=variable.dtype)
                elif leaf == "gamma":
                    value = np.ones(variable.shape)
                elif leaf == "beta" or leaf.endswith("bias"):
                    value = np.zeros(variable.shape)
                else:  # a weight this function does not know how BERT initialises
                    raise ValueError(f"reinitialize_top_blocks: unknown weight {variable.path}")
                variable.assign(keras.ops.cast(value, variable.dtype))
            done.append(layer.name)
    return done


def intermediate_model(model, names):
    """A Keras model with ``model``'s inputs whose outputs are the named layers' outputs.

    Args:
        model: a model built by :func:`build_transformer_model` (or any functional model).
        names: a layer name, or a list of them; ``(name, i)`` picks the ``i``-th call of
            a shared layer (ALBERT's ``Transformer-FeedForward-Norm``, say).

    Returns:
        ``keras.Model`` sharing ``model``'s weights.

    Example:

    >>> features = intermediate_model(model, ['Transformer-0-FeedForward-Norm',
    ...                                       'Transformer-1-FeedForward-Norm'])
    >>> layer0, layer1 = features.predict([token_ids, segment_ids])
    """
    single = isinstance(names, (str, tuple))
    outputs = [_layer_output(model, name) for name in ([names] if single else names)]
    return keras.Model(model.inputs, outputs[0] if single else outputs)


def _layer_output(model, name):
    node_index = 0
    if isinstance(name, tuple):
        name, node_index = name
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named {name!r}") from None
    nodes = [n for n in layer._inbound_nodes if n.operation is layer]
    if not 0 <= node_index < len(nodes):
        raise ValueError(f"layer {name!r} is called {len(nodes)} time(s); no call {node_index}")
    outputs = nodes[node_index].outputs
    return outputs[0] if len(outputs) == 1 else outputs


def attention_model(model, layers=None):
    """A Keras model returning the attention probabilities ``[B, N, T, T]`` of each layer.

    It re-applies each attention layer (same weights) to the inputs it receives in
    ``model`` with ``return_attention_scores=True``, so ``model`` itself is unchanged.

    Args:
        model: a model built by :func:`build_transformer_model`.
        layers: indices of the transformer layers to return (default: all).

    Returns:
        ``keras.Model`` whose outputs are the list of probabilities, one per layer
        (a single tensor when ``layers`` is an int).

    Example:

    >>> probs = attention_model(model, layers=0).predict([token_ids, segment_ids])
    >>> probs.shape   # [batch, heads, seq, seq]; rows sum to 1, padded keys get 0

    In a pooled-only model (``cls_only_last_layer``) the last layer's are
    ``[B, N, 1, T]``: the ``[CLS]`` row only.
    """
    calls = []
    for layer in model.layers:
        if isinstance(layer, bk_layers.MultiHeadAttention):
            calls.extend(n for n in layer._inbound_nodes if n.operation is layer)
    single = isinstance(layers, int)
    indices = range(len(calls)) if layers is None else ([layers] if single else list(layers))
    outputs = []
    for index in indices:
        if not 0 <= index < len(calls):
            raise ValueError(f"the model has {len(calls)} attention layers; no layer {index}")
        node = calls[index]
        probe = _AttentionProbabilities(node.operation, name=f"Attention-Probabilities-{index}")
        outputs.append(probe(*node.arguments.args, **node.arguments.kwargs))
    return keras.Model(model.inputs, outputs[0] if single else outputs)


class _AttentionProbabilities(keras.layers.Layer):
    """Calls an attention layer (sharing its weights) and keeps only its probabilities.

    A separate layer, because a Keras functional graph expects every call of one layer
    to return the same number of outputs as its first call.
    """

    def __init__(self, attention, **kwargs):
        super().__init__(**kwargs)
        self.attention = attention

    def call(self, inputs, attention_mask=None, query=None):
        _, probs = self.attention(inputs, attention_mask=attention_mask, query=query,
                                  return_attention_scores=True)
        return probs

    def compute_output_spec(self, inputs, attention_mask=None, query=None):
        batch, length = inputs.shape[0], inputs.shape[1]
        queries = length if query is None else query.shape[1]
        return keras.KerasTensor((batch, self.attention.heads, queries, length),
                                 dtype="float32")
