"""Derived optimizers in the bert4keras style, for Keras 3.

Each ``extend_with_*`` function takes a Keras optimizer class (``SGD``, ``Adam``,
``AdamW``, ``Lion``, ``Adafactor``, bertkit's ``Adam`` or an already derived class)
and returns a subclass with one more behaviour; they nest::

    AdamWLR = extend_with_piecewise_linear_lr(extend_with_weight_decay(Adam))
    optimizer = AdamWLR(learning_rate=2e-5, weight_decay_rate=0.01,
                        exclude_from_weight_decay=["Norm", "bias"],
                        lr_schedule={1000: 1.0, 10000: 0.0})

Write ``g`` for a variable's gradient, ``lr`` for its learning rate, ``w`` for its
value and ``lr * h`` for the step the base optimizer would take (``h = -delta / lr``).
All derived classes share one pipeline, run per variable inside ``update_step``:

1. gradient accumulation: add ``g`` to an accumulator; every ``k``-th step go on
   with the mean of the last ``k`` gradients, otherwise stop here;
2. ``gradient_transform(g, variable)``;
3. ``lr`` times the parameter-wise factor (the piecewise-linear factor is already in
   ``optimizer.learning_rate``);
4. the base optimizer's own ``update_step``, with its write to ``w`` captured as a
   step instead of applied (lazy optimization masks its writes to the slots);
5. step transforms (weight decay, layer adaptation) in nesting order, innermost
   first: layer adaptation over weight decay is LAMB;
6. the step is added to ``w`` (only on rows with a gradient, for lazy variables);
7. lookahead, then the exponential moving average.

Steps 4-6 are one fused kernel where nothing needs the captured step: bertkit's
``Adam`` (``apply_step_in_place``, TensorFlow's ``ResourceApplyAdam``) updates ``w``,
``m`` and ``v`` in one pass over memory, with weight decay taken first as
``w -= lr * rate * w``. That is the case of ``AdamW``, ``AdamWLR`` and
``fine_tuning_optimizer`` (with schedules, parameter-wise rates, accumulation,
lookahead and the moving average around it); layer adaptation, lazy optimization,
AMSGrad and extensions of one's own that transform the step keep the captured
op-by-op step (an extension opts in by giving its transform as ``_decay_rate``).

Running per variable inside ``update_step`` is what makes everything work under
``tf.distribute``: Keras calls ``update_step`` once per device copy after the
gradients are all-reduced, so no extension needs a synchronisation point of its own
(Keras's own ``gradient_accumulation_steps`` puts one inside a ``cond`` and fails
under ``MirroredStrategy``). Base optimizers must write to the model variable only
through ``self.assign*``, as every Keras optimizer does. Learning-rate schedules of
derived optimizers see the number of real updates, also with gradient accumulation.

Derived optimizers serialize: their config records the base class and the
extensions, so ``keras.models.load_model`` rebuilds the class after ``import
bertkit`` even in a fresh process. The base class must be a Keras optimizer or be
registered with ``keras.saving.register_keras_serializable``.

This module owns bertkit's ``Adam``, the extensions (one private mixin per
``extend_with_*`` function, overriding the pipeline's hooks) and the ready-made
classes (``AdamW``, ``AdamWLR``, ``AdamEMA``, ``fine_tuning_optimizer``). The
pipeline itself, the derivation of classes and their config round trip live in
the private ``bertkit._derived``, which the weight average in ``bertkit.ema``
(``extend_with_exponential_moving_average``, ``EMAEvaluation``) builds on as well.
Schedules (``PiecewiseLinear``, ``layerwise_lr_decay``) live in
``bertkit.schedules``; import them from there (or from ``bertkit``).
"""
import keras
import tensorflow as tf  # the fused Adam kernel, tf.raw_ops.ResourceApplyAdam
from keras import ops

from bertkit._derived import PACKAGE, DerivedOptimizer, copy_initializer, dense_gradient, derive
from bertkit.ema import extend_with_exponential_moving_average
from bertkit.schedules import layerwise_lr_decay, piecewise_linear, schedule_points

__all__ = ["Adam", "extend_with_weight_decay", "extend_with_layer_adaptation",
           "extend_with_piecewise_linear_lr", "extend_with_gradient_accumulation",
           "extend_with_lookahead", "extend_with_lazy_optimization",
           "extend_with_parameter_wise_lr", "extend_with_gradient_transform", "AdamW",
           "AdamWLR", "AdamEMA", "fine_tuning_optimizer"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class Adam(keras.optimizers.Adam):
    """Keras's Adam with an optional switch to Google's BERT update.

    With ``bias_correction=False`` the step is ``lr * m / (sqrt(v) + epsilon)``, the
    update of Google's ``AdamWeightDecayOptimizer``; with weight decay on top,
    ``extend_with_weight_decay(Adam)(bias_correction=False, epsilon=1e-6, ...)``
    reproduces it. ``epsilon`` defaults to 1e-6 as in bert4keras and Google's BERT
    (Keras uses 1e-7); all other arguments are those of ``keras.optimizers.Adam``.
    Sparse gradients (embedding lookups) are made dense first: Keras's Adam squares
    the slices of a ``tf.IndexedSlices`` one by one, which is wrong for repeated tokens.

    Args:
        bias_correction: divide the moments by ``1 - beta**t`` (Keras's and the Adam
            paper's update) or not (Google's BERT).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 amsgrad=False, bias_correction=True, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, **kwargs)
        self.bias_correction = bool(bias_correction)

    def update_step(self, gradient, variable, learning_rate):
        """One Adam step; without bias correction, Google's ``AdamWeightDecayOptimizer``."""
        # Keras squares a tf.IndexedSlices gradient slice by slice, so a token seen
        # twice in a batch adds g1**2 + g2**2 to `v` instead of (g1 + g2)**2.
        gradient = dense_gradient(gradient)
        if not isinstance(self, DerivedOptimizer) and self.apply_step_in_place(
                gradient, variable, learning_rate):
            return  # (a derived optimizer decides itself; here it only captures the step)
        if self.bias_correction:
            return super().update_step(gradient, variable, learning_rate)
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        self.assign_sub(variable, ops.divide(ops.multiply(m, lr), ops.add(ops.sqrt(v), self.epsilon)))

    def apply_step_in_place(self, gradient, variable, learning_rate, decay_rate=None):
        """Takes this step on ``variable`` with TensorFlow's fused Adam kernel.

        ``ResourceApplyAdam`` reads the weight, gradient and both moments once and writes
        them once, where the op-by-op step makes about ten passes over memory: on
        BERT-base the update falls from about 320 to 150 ms on 2 cores. ``decay_rate``
        ``r`` first takes ``w -= r * w`` (a decoupled weight decay does not change the
        Adam step, so the order is free).

        The kernel computes ``1 - beta`` in the variable's precision, where 0.999 is not
        representable: its ``v`` comes out 1.3e-5 (relative) smaller than Adam's, and
        without bias correction nothing cancels it (2.5e-6 off Google's update after ten
        steps at lr 0.01). The rate and epsilon passed undo that scale exactly, and the
        bias correction is computed in float64, so the step stays as close to Adam's as
        the op-by-op one.

        Returns:
            False, having done nothing, where the kernel does not apply (AMSGrad, or a
            variable that is not floating point); True once applied.
        """
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if self.amsgrad or dtype not in ("float16", "bfloat16", "float32", "float64"):
            return False
        stored = tf.as_dtype(dtype).as_numpy_dtype  # what the kernel computes `1 - beta` in
        beta_1, beta_2 = float(self.beta_1), float(self.beta_2)
        scale_1 = (1 - float(stored(beta_1))) / (1 - beta_1)  # kernel's m = scale_1 * Adam's m
        scale_2 = (1 - float(stored(beta_2))) / (1 - beta_2)  # kernel's v = scale_2 * Adam's v
        rate = ops.cast(learning_rate, "float64") * (scale_2 ** 0.5 / scale_1)
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, "float64")
            rate = rate * ops.sqrt(1 - ops.power(beta_2, step)) / (1 - ops.power(beta_1, step))
        if decay_rate is not None:
            super().assign_sub(variable, ops.multiply(ops.cast(decay_rate, dtype), variable))
        index = self._get_variable_index(variable)
        zero = ops.zeros((), dtype)  # beta powers: the bias correction is in `rate`
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle, beta1_power=zero, beta2_power=zero,
            lr=ops.cast(rate, dtype), beta1=ops.cast(beta_1, dtype),
            beta2=ops.cast(beta_2, dtype),
            epsilon=ops.cast(self.epsilon * scale_2 ** 0.5, dtype),
            grad=ops.cast(dense_gradient(gradient), dtype))
        return True

    def get_config(self):
        config = super().get_config()
        config["bias_correction"] = self.bias_correction
        return config


def _matches(path, names):
    return any(name in path for name in names)


def _check_names(value, argument):
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"`{argument}` must be a list of name substrings such as "
                        f"['Norm', 'bias'], got {value!r}")
    return list(value)


class _WeightDecay(DerivedOptimizer):
    """Decoupled weight decay: ``w <- w - lr * (h + weight_decay_rate * w)``."""

    _tag, _suffix = "weight_decay", "WeightDecay"

    def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=None, **kwargs):
        if weight_decay_rate < 0:
            raise ValueError(f"`weight_decay_rate` must be >= 0, got {weight_decay_rate!r}")
        excluded = _check_names(exclude_from_weight_decay, "exclude_from_weight_decay")
        super().__init__(*args, **kwargs)
        self.weight_decay_rate = float(weight_decay_rate)
        self.weight_decay_excluded = excluded

    def _transform_update(self, delta, variable, index, learning_rate):
        delta = super()._transform_update(delta, variable, index, learning_rate)
        if _matches(self._variable_path(index), self.weight_decay_excluded):
            return delta
        rate = ops.cast(learning_rate, variable.dtype) * self.weight_decay_rate
        return ops.subtract(delta, ops.multiply(rate, variable))

    def _decay_rate(self, index, learning_rate):
        rate = super()._decay_rate(index, learning_rate)
        if self.weight_decay_rate == 0 or _matches(self._variable_path(index),
                                                   self.weight_decay_excluded):
            return rate
        own = ops.cast(learning_rate, "float32") * self.weight_decay_rate
        return own if rate is None else rate + own

    def get_config(self):
        config = super().get_config()
        config.update(weight_decay_rate=self.weight_decay_rate,
                      exclude_from_weight_decay=list(self.weight_decay_excluded))
        return config


def extend_with_weight_decay(BaseOptimizer, name=None):
    """Adds decoupled weight decay: ``w <- w - lr * (h + weight_decay_rate * w)``.

    ``lr`` is the variable's effective learning rate (schedules and parameter-wise
    factors included), as in Google's BERT. Keras's own ``weight_decay`` is not used
    underneath: it decays before the base update (outside layer adaptation, with the
    global learning rate) and its ``exclude_from_weight_decay`` matches short names
    (``gamma``), so ``'Norm'`` would never match; here names match the variable's path
    (``Transformer-0-FeedForward-Norm/gamma``).

    Returns a subclass of ``BaseOptimizer`` taking, besides its arguments:
        weight_decay_rate: the decay rate (default 0.01).
        exclude_from_weight_decay: list of path substrings, e.g. ``['Norm', 'bias']``.

    Example:
        >>> AdamW = extend_with_weight_decay(Adam, "AdamW")
        >>> optimizer = AdamW(1e-4, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"])
    """
    return derive(BaseOptimizer, _WeightDecay, name)


class _LayerAdaptation(DerivedOptimizer):
    """Scales each variable's step by the trust ratio ``||w|| / ||h||`` (LAMB)."""

    _tag, _suffix = "layer_adaptation", "LayerAdaptation"

    def __init__(self, *args, exclude_from_layer_adaptation=None, **kwargs):
        excluded = _check_names(exclude_from_layer_adaptation, "exclude_from_layer_adaptation")
        super().__init__(*args, **kwargs)
        self.layer_adaptation_excluded = excluded

    def _transform_update(self, delta, variable, index, learning_rate):
        delta = super()._transform_update(delta, variable, index, learning_rate)
        if _matches(self._variable_path(index), self.layer_adaptation_excluded):
            return delta
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        delta_norm = ops.sqrt(ops.sum(ops.square(delta)))
        # ||w|| / ||h|| with ||h|| = ||delta|| / lr; 1 where either norm is 0.
        defined = ops.logical_and(w_norm > 0, delta_norm > 0)
        lr = ops.cast(learning_rate, variable.dtype)
        ratio = w_norm * lr / ops.where(defined, delta_norm, ops.ones_like(delta_norm))
        return ops.multiply(delta, ops.where(defined, ratio, ops.ones_like(ratio)))

    def get_config(self):
        config = super().get_config()
        config["exclude_from_layer_adaptation"] = list(self.layer_adaptation_excluded)
        return config


def extend_with_layer_adaptation(BaseOptimizer, name=None):
    """Scales each variable's step by the trust ratio ``||w|| / ||h||`` (1 if a norm is 0).

    Over ``extend_with_weight_decay(Adam)`` this is LAMB: the ratio is taken of the
    decayed step ``h + weight_decay_rate * w``.

    Returns a subclass taking ``exclude_from_layer_adaptation`` (path substrings).

    Example:
        >>> LAMB = extend_with_layer_adaptation(extend_with_weight_decay(Adam), "LAMB")
    """
    return derive(BaseOptimizer, _LayerAdaptation, name)


class _PiecewiseLinearLR(DerivedOptimizer):
    """Multiplies the learning rate by a piecewise-linear function of the step."""

    _tag, _suffix = "piecewise_linear_lr", "PiecewiseLinearLR"

    def __init__(self, *args, lr_schedule, **kwargs):
        points = schedule_points(lr_schedule, "lr_schedule")
        super().__init__(*args, **kwargs)
        self.lr_schedule = dict(points)

    def _get_current_learning_rate(self):
        # In `learning_rate` itself, so Keras's own weight decay and callbacks see it too.
        points = schedule_points(self.lr_schedule, "lr_schedule", with_zero=True)
        learning_rate = super()._get_current_learning_rate()
        factor = piecewise_linear(self.iterations, points)
        return learning_rate * ops.cast(factor, ops.dtype(learning_rate))

    def get_config(self):
        config = super().get_config()
        config["lr_schedule"] = dict(self.lr_schedule)
        return config


def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """Multiplies the learning rate by a piecewise-linear function of the step.

    ``lr_schedule={1000: 1, 2000: 0.1}`` gives the factor 0 at step 0, 1 at step 1000,
    0.1 at step 2000 and after (see ``PiecewiseLinear``). The update that moves the
    step counter from ``t`` to ``t + 1`` uses the factor at ``t``, as Keras schedules
    do; ``optimizer.learning_rate`` includes the factor.

    Returns a subclass taking ``lr_schedule`` (dict from step to factor).

    Example:
        >>> AdamLR = extend_with_piecewise_linear_lr(Adam, "AdamLR")
        >>> optimizer = AdamLR(2e-5, lr_schedule={1000: 1.0, 10000: 0.0})  # warm-up, decay
    """
    return derive(BaseOptimizer, _PiecewiseLinearLR, name)


class _GradientAccumulation(DerivedOptimizer):
    """Updates every ``grad_accum_steps`` steps with the mean of the last gradients."""

    _tag, _suffix = "gradient_accumulation", "GradientAccumulation"

    def __init__(self, *args, grad_accum_steps, **kwargs):
        if kwargs.get("gradient_accumulation_steps"):
            raise ValueError("pass `grad_accum_steps` only, not also Keras's "
                             "`gradient_accumulation_steps`")
        if not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
            raise ValueError(f"`grad_accum_steps` must be an int >= 1, got {grad_accum_steps!r}")
        super().__init__(*args, **kwargs)
        self.grad_accum_steps = grad_accum_steps

    @property
    def iterations(self):
        """The number of real updates (micro-steps are counted in ``_iterations``)."""
        return ops.floor_divide(self._iterations, self.grad_accum_steps)

    def _build_slots(self, variables):
        super()._build_slots(variables)
        self._accumulators = self.add_optimizer_variables(variables, "accumulator")

    def _update_variable(self, gradient, variable, learning_rate):
        accumulator = self._accumulators[self._get_variable_index(variable)]
        steps = self.grad_accum_steps
        update = super()._update_variable

        def apply():
            update(ops.divide(ops.add(accumulator, dense_gradient(gradient)), steps), variable, learning_rate)
            self.assign(accumulator, ops.zeros_like(accumulator))

        def accumulate():
            self.assign_add(accumulator, gradient)

        ops.cond(ops.equal((self._iterations + 1) % steps, 0), apply, accumulate)

    def get_config(self):
        config = super().get_config()
        config["grad_accum_steps"] = self.grad_accum_steps
        return config


def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """Takes one update every ``grad_accum_steps`` steps, with the mean gradient.

    Steps ``k, 2k, 3k, ...`` apply the mean of the last ``k`` gradients; the other
    steps only add to an accumulator and change no weight and no optimizer slot.
    ``optimizer.iterations`` (what schedules, bias correction and the other
    extensions see) counts real updates. This reimplements Keras's
    ``gradient_accumulation_steps``, which fails under ``MirroredStrategy`` and
    evaluates schedules on micro-steps. Keras's ``clipnorm``/``clipvalue``/
    ``global_clipnorm`` act on each micro-batch gradient; a ``gradient_transform``
    acts on the mean.

    Returns a subclass taking ``grad_accum_steps`` (int >= 1).

    Example:
        >>> AdamGA = extend_with_gradient_accumulation(Adam, "AdamGA")
        >>> optimizer = AdamGA(1e-4, grad_accum_steps=4)  # batch 8 acts as batch 32
    """
    return derive(BaseOptimizer, _GradientAccumulation, name)


class _Lookahead(DerivedOptimizer):
    """Lookahead: every k steps ``slow <- slow + alpha * (fast - slow)``, ``fast <- slow``."""

    _tag, _suffix = "lookahead", "Lookahead"

    def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
        if not isinstance(steps_per_slow_update, int) or steps_per_slow_update < 1:
            raise ValueError("`steps_per_slow_update` must be an int >= 1, "
                             f"got {steps_per_slow_update!r}")
        if not 0 < slow_step_size <= 1:
            raise ValueError(f"`slow_step_size` must be in (0, 1], got {slow_step_size!r}")
        super().__init__(*args, **kwargs)
        self.steps_per_slow_update = steps_per_slow_update
        self.slow_step_size = float(slow_step_size)

    def _build_slots(self, variables):
        super()._build_slots(variables)
        self._slow_weights = [self.add_variable_from_reference(v, "slow", copy_initializer(v))
                              for v in variables]

    def _after_update(self, variable, index):
        super()._after_update(variable, index)
        slow = self._slow_weights[index]

        def synchronise():
            new_slow = slow + self.slow_step_size * (ops.convert_to_tensor(variable) - slow)
            self.assign(slow, new_slow)
            self.assign(variable, new_slow)

        k = self.steps_per_slow_update
        ops.cond(ops.equal((self.iterations + 1) % k, 0), synchronise, lambda: None)

    def get_config(self):
        config = super().get_config()
        config.update(steps_per_slow_update=self.steps_per_slow_update,
                      slow_step_size=self.slow_step_size)
        return config


def extend_with_lookahead(BaseOptimizer, name=None):
    """Adds Lookahead (Zhang et al., 2019) over the base optimizer's fast weights.

    The slow weights start as a copy of the weights when the optimizer is built;
    after every ``steps_per_slow_update``-th update ``slow <- slow + alpha * (fast -
    slow)`` and ``fast <- slow``.

    Returns a subclass taking ``steps_per_slow_update`` (default 5) and
    ``slow_step_size`` (alpha, default 0.5).

    Example:
        >>> AdamLA = extend_with_lookahead(Adam, "AdamLA")
        >>> optimizer = AdamLA(1e-3, steps_per_slow_update=5, slow_step_size=0.5)
    """
    return derive(BaseOptimizer, _Lookahead, name)


class _LazyOptimization(DerivedOptimizer):
    """Rows (first axis) with an all-zero gradient keep their value and their slots."""

    _tag, _suffix = "lazy_optimization", "LazyOptimization"

    def __init__(self, *args, include_in_lazy_optimization, **kwargs):
        included = _check_names(include_in_lazy_optimization, "include_in_lazy_optimization")
        super().__init__(*args, **kwargs)
        self.lazy_included = included

    def _update_mask(self, gradient, index):
        mask = super()._update_mask(gradient, index)
        if not _matches(self._variable_path(index), self.lazy_included):
            return mask
        rows = ops.not_equal(gradient, 0)
        if len(gradient.shape) > 1:  # [V, H] -> [V, 1]
            rows = ops.any(rows, axis=tuple(range(1, len(gradient.shape))), keepdims=True)
        return rows if mask is None else ops.logical_and(mask, rows)

    def get_config(self):
        config = super().get_config()
        config["include_in_lazy_optimization"] = list(self.lazy_included)
        return config


def extend_with_lazy_optimization(BaseOptimizer, name=None):
    """Leaves rows whose gradient is all zero untouched, slots included.

    For the variables whose path contains a name in ``include_in_lazy_optimization``
    (usually ``['Embedding-Token']``), a row (index on the first axis) without
    gradient keeps its weight and its momentum, so rare tokens keep their pretrained
    values. The base optimizer's slots must have the variable's shape (SGD, Adam,
    AdamW, Lion; not Adafactor's factored moments).

    Example:
        >>> AdamLO = extend_with_lazy_optimization(Adam, "AdamLO")
        >>> optimizer = AdamLO(1e-4, include_in_lazy_optimization=["Embedding-Token"])
    """
    return derive(BaseOptimizer, _LazyOptimization, name)


class _ParameterWiseLR(DerivedOptimizer):
    """Multiplies the learning rate of variables whose path contains a key."""

    _tag, _suffix = "parameter_wise_lr", "ParameterWiseLR"

    def __init__(self, *args, paramwise_lr_schedule, **kwargs):
        if not isinstance(paramwise_lr_schedule, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) for k, v in paramwise_lr_schedule.items()):
            raise TypeError("`paramwise_lr_schedule` must be a dict {name substring: factor}, "
                            f"got {paramwise_lr_schedule!r}")
        super().__init__(*args, **kwargs)
        self.paramwise_lr_schedule = {k: float(v) for k, v in paramwise_lr_schedule.items()}

    def _variable_learning_rate(self, learning_rate, index):
        learning_rate = super()._variable_learning_rate(learning_rate, index)
        path, factor = self._variable_path(index), 1.0
        for key, value in self.paramwise_lr_schedule.items():
            if key in path:
                factor *= value
        return learning_rate if factor == 1.0 else learning_rate * factor

    def get_config(self):
        config = super().get_config()
        config["paramwise_lr_schedule"] = dict(self.paramwise_lr_schedule)
        return config


def extend_with_parameter_wise_lr(BaseOptimizer, name=None):
    """Multiplies the learning rate of every variable whose path contains a key.

    ``paramwise_lr_schedule={'Transformer-0-': 0.1, 'Embedding-': 0.05}``; a variable
    matching several keys gets the product of their factors. Mind that
    ``'Transformer-1'`` also matches ``'Transformer-10'``: end keys with ``-``.
    ``layerwise_lr_decay(model, decay)`` builds such a schedule.

    Example:
        >>> AdamPLR = extend_with_parameter_wise_lr(Adam)
        >>> optimizer = AdamPLR(1e-4, paramwise_lr_schedule=layerwise_lr_decay(model, 0.9))
    """
    return derive(BaseOptimizer, _ParameterWiseLR, name)


class _GradientTransform(DerivedOptimizer):
    """Replaces each gradient by ``gradient_transform(gradient, variable)``."""

    _tag, _suffix = "gradient_transform", "GradientTransform"

    def __init__(self, *args, gradient_transform, **kwargs):
        if isinstance(gradient_transform, dict):
            gradient_transform = keras.saving.deserialize_keras_object(gradient_transform)
        if not callable(gradient_transform):
            raise TypeError(f"`gradient_transform` must be callable, got {gradient_transform!r}")
        super().__init__(*args, **kwargs)
        self.gradient_transform = gradient_transform

    def _transform_gradient(self, gradient, index):
        gradient = super()._transform_gradient(gradient, index)
        return self.gradient_transform(gradient, self._trainable_variables[index])

    def get_config(self):
        config = super().get_config()
        config["gradient_transform"] = keras.saving.serialize_keras_object(self.gradient_transform)
        return config


def extend_with_gradient_transform(BaseOptimizer, name=None):
    """Replaces each gradient by ``gradient_transform(gradient, variable)``.

    The transform gets the dense gradient (the mean one under gradient accumulation)
    and the Keras variable (``variable.path`` names it), once per variable and step.
    Register it with ``keras.saving.register_keras_serializable`` so that a saved
    model reloads. Keras's ``clipnorm`` already clips every variable to one norm;
    a transform can treat variables differently.

    Example, clipping the embeddings' gradients to norm 1 and others to norm 5:

        >>> @keras.saving.register_keras_serializable(package="my_project")
        ... def clip_per_variable(gradient, variable):
        ...     max_norm = 1.0 if "Embedding-" in variable.path else 5.0
        ...     norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(gradient)))
        ...     return gradient * keras.ops.minimum(1.0, max_norm / keras.ops.maximum(norm, 1e-12))
        >>> AdamGT = extend_with_gradient_transform(Adam)
        >>> optimizer = AdamGT(1e-4, gradient_transform=clip_per_variable)
    """
    return derive(BaseOptimizer, _GradientTransform, name)


# Ready-made classes, as in bert4keras; importing them registers the derived-class
# loader, so saved models with any derived optimizer reload after `import bertkit`.
AdamW = extend_with_weight_decay(Adam, "AdamW")
AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
AdamEMA = extend_with_exponential_moving_average(Adam, "AdamEMA")


def fine_tuning_optimizer(learning_rate, total_steps, warmup_steps=None, weight_decay_rate=0.01,
                          layerwise_decay=None, model=None, ema_momentum=None):
    """The usual BERT fine-tuning optimizer, assembled from the extensions above.

    bertkit's ``Adam`` with decoupled weight decay (layer norms and biases excluded),
    linear warm-up to ``learning_rate`` and linear decay to zero at ``total_steps``,
    optionally layer-wise learning-rate decay and an exponential moving average.

    Args:
        learning_rate: the peak learning rate.
        total_steps: the number of updates of the whole run.
        warmup_steps: warm-up length; defaults to 10% of ``total_steps``.
        weight_decay_rate: decoupled weight decay.
        layerwise_decay: with ``model``, layer ``i`` of ``L`` learns at
            ``learning_rate * layerwise_decay ** (L - i)`` (see ``layerwise_lr_decay``).
        model: the model, needed for ``layerwise_decay``.
        ema_momentum: keep an EMA of the weights with this momentum (e.g. 0.999).

    Example: ``model.compile(fine_tuning_optimizer(2e-5, steps * epochs), loss)``.
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if warmup_steps is None:
        warmup_steps = max(1, total_steps // 10)
    warmup_steps = min(max(1, warmup_steps), max(1, total_steps - 1))
    optimizer_class = AdamWLR
    kwargs = dict(learning_rate=learning_rate, weight_decay_rate=weight_decay_rate,
                  exclude_from_weight_decay=["Norm", "bias"],
                  lr_schedule={warmup_steps: 1.0, max(total_steps, warmup_steps + 1): 0.0})
    if layerwise_decay:
        if model is None:
            raise ValueError("layerwise_decay needs the model (model=...)")
        optimizer_class = extend_with_parameter_wise_lr(optimizer_class)
        kwargs["paramwise_lr_schedule"] = layerwise_lr_decay(model, layerwise_decay)
    if ema_momentum:
        optimizer_class = extend_with_exponential_moving_average(optimizer_class)
        kwargs["ema_momentum"] = ema_momentum
    return optimizer_class(**kwargs)
