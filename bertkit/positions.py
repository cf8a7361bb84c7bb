"""Positions inside attention, for families without learned absolute positions.

:func:`rotary_position_embedding` (RoFormer; GlobalPointer heads reuse it) rotates
queries and keys by their positions; :func:`relative_position_table` is NEZHA's fixed
sinusoid of the clipped distance, added to keys and values.
:class:`bertkit.layers.MultiHeadAttention` applies them with ``position_encoding``.
"""
import math

from keras import ops

__all__ = ["rotary_position_embedding", "relative_position_table"]


def rotary_position_embedding(x, offset=0):
    """Rotates ``x`` by its positions: RoFormer's rotary position embedding (RoPE).

    ``x`` is ``[B, T, ..., D]`` (queries or keys, per head; ``D`` even) and position
    ``t = offset + index along axis 1``. Pair ``m`` (elements ``2m``, ``2m + 1``, the
    interleaved layout of RoFormer and GlobalPointer) turns by the angle
    ``t * 10000 ** (-2m / D)``, so that the dot product of a rotated query and key
    depends on their positions only through ``t_q - t_k``. Computed in float32 and
    returned in ``x``'s dtype.
    """
    depth = x.shape[-1]
    if depth is None or depth % 2:
        raise ValueError(f"rotary position embedding needs an even last axis, got {depth}")
    positions = ops.cast(ops.arange(ops.shape(x)[1]) + offset, "float32")
    inverse_frequencies = ops.power(10000.0, -ops.arange(0, depth, 2, dtype="float32") / depth)
    angles = positions[:, None] * inverse_frequencies[None, :]           # [T, D/2]
    # [T, D/2] -> [T, D] (each angle twice, for its pair) -> [1, T, 1.., D]
    shape = (1, -1) + (1,) * (len(x.shape) - 3) + (depth,)
    cos = ops.reshape(ops.repeat(ops.cos(angles), 2, axis=-1), shape)
    # (-sin, sin) per pair: the sign of the turn lives in the small [T, D] table
    sin = ops.reshape(ops.sin(angles)[..., None] * ops.convert_to_tensor([-1.0, 1.0]), shape)
    x32 = ops.cast(x, "float32")
    # (x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...): one reverse over pairs, where two
    # strided slices, a negation and a stack (and their gradients) took 3x as long
    swapped = ops.reshape(ops.flip(ops.reshape(x32, (-1, depth // 2, 2)), axis=-1),
                          ops.shape(x32))
    return ops.cast(x32 * cos + swapped * sin, x.dtype)


def relative_position_table(query_length, key_length, depth, max_relative_position):
    """NEZHA's functional relative positions: ``[Q, K, D]`` sinusoids of ``j - i``.

    Row ``r = clip(j - i, -max, max) + max`` of a table whose entry ``[r, 2m]`` is
    ``sin(r / 10000 ** (2m / D))`` and ``[r, 2m + 1]`` the cosine (the row index itself is
    the angle's position, as NEZHA's code has it). Not trained and not stored in
    checkpoints; added to the keys and to the values of attention.
    """
    rows = 2 * max_relative_position + 1
    div = ops.exp(ops.arange(0, depth, 2, dtype="float32") * (-math.log(10000.0) / depth))
    angles = ops.arange(rows, dtype="float32")[:, None] * div[None, :]      # [R, D/2]
    table = ops.reshape(ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (rows, -1))
    table = table[:, :depth]  # an odd depth keeps its last sine
    distance = ops.arange(key_length)[None, :] - ops.arange(query_length)[:, None]  # j - i
    index = ops.clip(distance, -max_relative_position, max_relative_position)
    return ops.take(table, index + max_relative_position, axis=0)  # [Q, K, D]
