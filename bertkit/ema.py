"""The exponential moving average (EMA) of the weights.

This module owns the weight average: ``extend_with_exponential_moving_average``
(the optimizer extension that keeps the averages and swaps them into the model on
request) and the ``EMAEvaluation`` callback that evaluates with them. The
extension is one more step of the derived-optimizer pipeline described in
``bertkit.optimizers`` (it runs last, after lookahead), so it builds on
``DerivedOptimizer`` from ``bertkit._derived``, as the other extensions do.
``bertkit.optimizers`` imports this module for ``AdamEMA`` and
``fine_tuning_optimizer``.
"""
import contextlib

import keras
from keras import ops

from bertkit._derived import copy_initializer, derive, DerivedOptimizer

__all__ = ["extend_with_exponential_moving_average", "EMAEvaluation"]


class _ExponentialMovingAverage(DerivedOptimizer):
    """Keeps ``avg <- m * avg + (1 - m) * w`` (``avg = w`` after the first update)."""

    _tag, _suffix = "exponential_moving_average", "EMA"

    def __init__(self, *args, ema_momentum=0.999, **kwargs):
        if kwargs.get("use_ema"):
            raise ValueError("`use_ema=True` would also run Keras's own EMA, which "
                             "overwrites the model at the end of fit; leave it off")
        if not 0 <= ema_momentum <= 1:
            raise ValueError(f"`ema_momentum` must be in [0, 1], got {ema_momentum!r}")
        super().__init__(*args, ema_momentum=ema_momentum, **kwargs)

    def _build_slots(self, variables):
        super()._build_slots(variables)
        # Start from the weights, so variables that never get a gradient average to themselves.
        self._averages = [self.add_variable_from_reference(v, "average", copy_initializer(v))
                          for v in variables]

    def _average_weights(self, variable, index):
        super()._average_weights(variable, index)
        average = self._averages[index]
        not_first = ops.cast(ops.not_equal(self.iterations, 0), variable.dtype)
        momentum = not_first * self.ema_momentum
        self.assign(average, momentum * average + (1 - momentum) * ops.convert_to_tensor(variable))

    def apply_ema_weights(self):
        """Puts the averages into the model, keeping the raw weights to restore later."""
        if not self.built:
            raise RuntimeError(f"optimizer {self.name!r} has no averages yet; it is built "
                               "on the first training step")
        if self._state.raw_weights is not None:
            raise RuntimeError("EMA weights are already in the model; call reset_old_weights() first")
        self._state.raw_weights = [ops.convert_to_numpy(v) for v in self._trainable_variables]
        for variable, average in zip(self._trainable_variables, self._averages):
            variable.assign(ops.convert_to_tensor(average))

    def reset_old_weights(self):
        """Puts back the raw weights that ``apply_ema_weights`` set aside."""
        if self._state.raw_weights is None:
            raise RuntimeError("no raw weights to restore: apply_ema_weights() was not called")
        for variable, value in zip(self._trainable_variables, self._state.raw_weights):
            variable.assign(value)
        self._state.raw_weights = None

    @contextlib.contextmanager
    def ema_weights(self):
        """Context manager: EMA weights inside the block, raw weights after it."""
        self.apply_ema_weights()
        try:
            yield self
        finally:
            self.reset_old_weights()


def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """Keeps an exponential moving average of the weights, swapped in on request.

    Follows Keras 3's ``use_ema`` convention (after the first update the average is
    the weights, then ``avg <- m * avg + (1 - m) * w``), but is updated per variable
    on real updates only (Keras's advances on every micro-step of gradient
    accumulation) and never overwrites the model at the end of ``fit`` (Keras's
    ``finalize_variable_values`` does): swap explicitly, as in bert4keras.

    Returns a subclass taking ``ema_momentum`` (default 0.999), with methods
    ``apply_ema_weights()``, ``reset_old_weights()`` and the context manager
    ``ema_weights()``; see also the ``EMAEvaluation`` callback.

    Example:
        >>> AdamEMA = extend_with_exponential_moving_average(Adam, "AdamEMA")
        >>> model.compile(AdamEMA(1e-4, ema_momentum=0.999), loss)
        >>> model.fit(data)
        >>> with model.optimizer.ema_weights():
        ...     save_weights_atomically(model, "best.weights.h5")  # bertkit.storage
    """
    return derive(BaseOptimizer, _ExponentialMovingAverage, name)


class EMAEvaluation(keras.callbacks.Callback):
    """Evaluates with the EMA weights at each epoch end, then restores the raw weights.

    Results go into the epoch logs with a prefix (``ema_loss``, ``ema_accuracy``), so
    ``ModelCheckpoint`` or ``EarlyStopping`` can monitor them. ``evaluate_fn`` runs
    while the EMA weights are in the model, so it may also save them.

    Args:
        validation_data: data for ``model.evaluate``, or ``None``.
        evaluate_fn: ``evaluate_fn(model) -> dict of metrics`` (or ``None``).
        prefix: prefix of the log keys.

    Example:
        >>> model.fit(train, epochs=3, callbacks=[EMAEvaluation(validation_data=valid)])
    """

    def __init__(self, validation_data=None, evaluate_fn=None, prefix="ema_"):
        super().__init__()
        if validation_data is None and evaluate_fn is None:
            raise ValueError("give `validation_data`, `evaluate_fn` or both")
        self.validation_data, self.evaluate_fn, self.prefix = validation_data, evaluate_fn, prefix

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if not hasattr(optimizer, "ema_weights"):
            raise TypeError("EMAEvaluation needs an optimizer from "
                            f"extend_with_exponential_moving_average, got {type(optimizer).__name__}")
        results = {}
        with optimizer.ema_weights():
            if self.validation_data is not None:
                results.update(self._evaluate())
            if self.evaluate_fn is not None:
                results.update(self.evaluate_fn(self.model) or {})
        if logs is not None:
            logs.update({self.prefix + key: value for key, value in results.items()})

    def _evaluate(self):
        data = self.validation_data
        if isinstance(data, tuple):  # (x, y) or (x, y, sample_weight), as fit takes it
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            return self.model.evaluate(x, y, sample_weight=sample_weight, verbose=0, return_dict=True)
        return self.model.evaluate(data, verbose=0, return_dict=True)
