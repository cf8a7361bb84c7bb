"""Looking inside a built model: intermediate outputs, attention probabilities, and
starting its top blocks afresh. Works on any family (the layers' bert4keras-style names
are the interface)."""
import keras
import numpy as np

from bertkit import layers as bk_layers

__all__ = ["intermediate_model", "attention_model", "reinitialize_top_blocks"]

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
