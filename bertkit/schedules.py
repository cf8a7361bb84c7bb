"""Learning-rate schedules: functions of the step, and factors per variable.

This module owns what decides how large a learning rate is, independent of any
optimizer: ``PiecewiseLinear`` (a Keras ``LearningRateSchedule``, bert4keras's
``piecewise_linear``), the interpolation it shares with
``extend_with_piecewise_linear_lr`` in ``bertkit.optimizers``, and
``layerwise_lr_decay``, which builds the factors for
``extend_with_parameter_wise_lr``. It imports nothing from bertkit, so the
optimizer modules can build on it.
"""
import re

import keras
from keras import ops

__all__ = ["PiecewiseLinear", "schedule_points", "piecewise_linear", "layerwise_lr_decay",
           "variable_path"]

# Part of the registered name ("bertkit>PiecewiseLinear") that saved configs refer to.
PACKAGE = "bertkit"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A piecewise-linear function of the step, bert4keras's ``piecewise_linear``.

    ``{1000: 1e-4, 2000: 1e-5}`` is 0 at step 0, rises linearly to 1e-4 at step
    1000, falls to 1e-5 at step 2000 and stays there. Without a key 0 the function
    starts from 0 (warm-up); give ``{0: value, ...}`` to start elsewhere.

    Args:
        schedule: dict from step (int >= 0) to value.

    Example:
        >>> optimizer = keras.optimizers.Adam(PiecewiseLinear({1000: 1e-4, 10000: 0.0}))
    """

    def __init__(self, schedule):
        self.schedule = dict(schedule_points(schedule, "schedule"))

    def __call__(self, step):
        return piecewise_linear(step, schedule_points(self.schedule, "schedule", with_zero=True))

    def get_config(self):
        return {"schedule": dict(self.schedule)}


def schedule_points(schedule, argument, with_zero=False):
    """Sorted ``(step, value)`` pairs of a ``{step: value}`` dict (JSON keys are strings)."""
    if not isinstance(schedule, dict) or not schedule:
        raise ValueError(f"`{argument}` must be a non-empty dict {{step: value}}, got {schedule!r}")
    points = {}
    for step, value in schedule.items():
        try:
            step, value = int(step), float(value)
        except (TypeError, ValueError):
            raise ValueError(f"`{argument}` must map integer steps to numbers, got {step!r}: {value!r}")
        if step < 0 or step in points:
            raise ValueError(f"`{argument}` has a negative or repeated step {step}")
        points[step] = value
    if with_zero and 0 not in points:
        points[0] = 0.0
    return sorted(points.items())


def piecewise_linear(step, points):
    """The piecewise-linear interpolation of sorted ``points`` at ``step`` (constant after)."""
    t = ops.cast(step, "float32")
    value = ops.convert_to_tensor(points[-1][1], "float32")
    for (t0, v0), (t1, v1) in reversed(list(zip(points[:-1], points[1:]))):
        value = ops.where(t < t1, v0 + (v1 - v0) * (t - t0) / (t1 - t0), value)
    return value


def layerwise_lr_decay(model, decay=0.9):
    """A ``paramwise_lr_schedule`` that decays the learning rate towards the input.

    Transformer layer ``i`` of ``L`` (layers named ``Transformer-{i}-...``) gets the
    factor ``decay ** (L - i)``, the embeddings ``decay ** (L + 1)``, everything else
    (pooler, MLM and task heads) 1.

    Args:
        model: a model whose variable paths contain bertkit's layer names.
        decay: factor between neighbouring layers, in (0, 1].

    Returns:
        A dict for ``extend_with_parameter_wise_lr``; keys end with ``-`` so that
        ``Transformer-1-`` does not also match ``Transformer-10-``.

    Example:
        >>> schedule = layerwise_lr_decay(model, decay=0.9)  # {'Embedding-': 0.729, ...}
        >>> optimizer = extend_with_parameter_wise_lr(Adam)(paramwise_lr_schedule=schedule)
    """
    if not 0 < decay <= 1:
        raise ValueError(f"`decay` must be in (0, 1], got {decay!r}")
    layers = {int(match.group(1)) for v in model.weights
              for match in [re.search(r"(?:^|/)Transformer-(\d+)-", variable_path(v))] if match}
    if not layers:
        raise ValueError(f"model {model.name!r} has no layers named 'Transformer-{{i}}-...' "
                         "to decay the learning rate over")
    num_layers = max(layers) + 1
    schedule = {"Embedding-": decay ** (num_layers + 1)}
    schedule.update({f"Transformer-{i}-": decay ** (num_layers - i) for i in range(num_layers)})
    return schedule


def variable_path(variable):
    """What name substrings are matched against (also by the optimizer extensions)."""
    return getattr(variable, "path", None) or variable.name
