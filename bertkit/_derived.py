"""The machinery behind derived optimizers, shared by ``bertkit.optimizers`` and ``bertkit.ema``.

This module owns what every derived optimizer is made of, but no extension:

- ``DerivedOptimizer``, the base class whose ``update_step`` runs the update
  pipeline described in ``bertkit.optimizers``: it calls the hooks the extensions
  override, and captures the base optimizer's write to the weights as a step;
- ``derive``, which builds the subclass of a base optimizer with one more
  extension (one class per base, extension and name, all registered with Keras as
  ``bertkit>DerivedOptimizer``);
- the config round trip: ``_describe`` records a class's base and extensions in its
  config, ``_rebuild`` derives the class again from them, finding each extension
  by its tag among the subclasses that declared one.

The extensions live in ``bertkit.optimizers`` and, for the weight average, in
``bertkit.ema``; both import this module, which imports only ``bertkit.schedules``.
"""
import keras
import tensorflow as tf  # tf.IndexedSlices and tf.init_scope have no keras.ops equivalent
from keras import ops

from bertkit.schedules import variable_path

__all__ = ["PACKAGE", "dense_gradient", "copy_initializer", "DerivedOptimizer", "derive"]

# Part of the registered names ("bertkit>Adam", "bertkit>DerivedOptimizer") that
# saved configs refer to.
PACKAGE = "bertkit"

# Derived classes are created here but belong to the public module, where the
# ready-made ones (AdamW, ...) are found; saved configs record this module name.
_MODULE = "bertkit.optimizers"

_EXTENSIONS = {}  # extension tag, as recorded in configs -> extension class, for `_rebuild`


def dense_gradient(gradient):
    # Embedding gradients arrive as tf.IndexedSlices; the pipeline works on dense rows.
    return tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


def copy_initializer(variable):
    return lambda shape, dtype=None: ops.cast(ops.convert_to_tensor(variable), dtype)


class _State:
    """Python-side state of a derived optimizer, kept out of Keras's variable tracking."""

    def __init__(self):
        self.variable = self.delta = self.mask = None  # the variable being updated
        self.raw_weights = None  # model weights put aside while EMA weights are in


class DerivedOptimizer:
    """The update pipeline shared by all derived optimizers (described in ``bertkit.optimizers``)."""

    _derivation = None  # (base class, ((extension tag, class name), ...)), set by derive

    def __init_subclass__(cls, **kwargs):
        # An extension declares its `_tag`; the classes `derive` builds inherit it.
        super().__init_subclass__(**kwargs)
        if "_tag" in cls.__dict__:
            _EXTENSIONS[cls._tag] = cls

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._state = _State()

    def _get_current_learning_rate(self):
        # Keras evaluates schedules on `_iterations`, which counts micro-steps.
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _variable_path(self, index):
        return variable_path(self._trainable_variables[index])

    def build(self, variables):
        if self.built:
            return
        # Keras may build the optimizer while it traces the train step; slots that
        # start as copies of the weights must then be made eagerly, or XLA cannot
        # lift their initial values out of the compiled function.
        with tf.init_scope():
            super().build(variables)
            self._build_slots(variables)

    def _build_slots(self, variables):
        """Hook: extensions create their per-variable slots here."""

    def update_step(self, gradient, variable, learning_rate):
        self._update_variable(gradient, variable, learning_rate)

    def _update_variable(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        gradient = self._transform_gradient(dense_gradient(gradient), index)
        learning_rate = self._variable_learning_rate(learning_rate, index)
        mask = self._update_mask(gradient, index)
        if not (mask is None and self._steps_in_place()
                and self.apply_step_in_place(gradient, variable, learning_rate,
                                             self._decay_rate(index, learning_rate))):
            delta = self._base_step(gradient, variable, learning_rate, mask)
            delta = self._transform_update(delta, variable, index, learning_rate)
            if mask is not None:
                delta = ops.where(mask, delta, ops.zeros_like(delta))
            super().assign_add(variable, delta)
        self._after_update(variable, index)
        self._average_weights(variable, index)

    def _base_step(self, gradient, variable, learning_rate, mask):
        """Runs the base optimizer's update_step and returns its step instead of taking it."""
        state = self._state
        state.variable, state.delta, state.mask = variable, None, mask
        try:
            super().update_step(gradient, variable, learning_rate)
            delta = state.delta
        finally:
            state.variable = state.delta = state.mask = None
        return ops.zeros_like(variable) if delta is None else delta

    @classmethod
    def _steps_in_place(cls):
        """Whether the base optimizer may write the whole update itself.

        The base step is normally captured and handed to ``_transform_update``; a base
        with ``apply_step_in_place`` (bertkit's ``Adam``: one fused kernel, a third of
        the memory traffic of the op-by-op step) may instead update the weights in
        place, when every extension that transforms the update can say its transform
        as a decoupled decay (``_decay_rate``). Any other transform (layer adaptation,
        an extension written elsewhere) keeps the captured step.
        """
        if getattr(cls, "apply_step_in_place", None) is None:
            return False
        return all("_decay_rate" in klass.__dict__ for klass in cls.__mro__
                   if "_transform_update" in klass.__dict__ and klass is not DerivedOptimizer)

    # Hooks the extensions override; each calls super() first, so inner ones run first.
    def _transform_gradient(self, gradient, index):
        return gradient

    def _variable_learning_rate(self, learning_rate, index):
        return learning_rate

    def _update_mask(self, gradient, index):
        return None

    def _transform_update(self, delta, variable, index, learning_rate):
        return delta

    def _decay_rate(self, index, learning_rate):
        """The in-place form of ``_transform_update`` (see ``_steps_in_place``): the
        factor ``r`` of ``w <- w - r * w`` taken before the base step, or None."""
        return None

    def _after_update(self, variable, index):
        pass

    def _average_weights(self, variable, index):
        pass

    # While `_base_step` runs, writes to the model variable become the captured step.
    def assign(self, variable, value):
        state = self._state
        if state.variable is None:
            return super().assign(variable, value)
        if variable is state.variable:
            state.delta = ops.subtract(ops.cast(value, variable.dtype), variable)
        else:
            super().assign(variable, self._masked(variable, value, keep=True))

    def assign_add(self, variable, value):
        state = self._state
        if state.variable is None:
            return super().assign_add(variable, value)
        if variable is state.variable:
            value = ops.cast(value, variable.dtype)
            state.delta = value if state.delta is None else state.delta + value
        else:
            super().assign_add(variable, self._masked(variable, value, keep=False))

    def assign_sub(self, variable, value):
        state = self._state
        if state.variable is None or (variable is not state.variable and state.mask is None):
            return super().assign_sub(variable, value)
        self.assign_add(variable, ops.negative(dense_gradient(value)))

    def _masked(self, slot, value, keep):
        """A slot write limited to the rows with a gradient (lazy optimization)."""
        mask, variable = self._state.mask, self._state.variable
        if mask is None:
            return value
        if tuple(slot.shape) != tuple(variable.shape):
            raise ValueError(
                f"lazy optimization needs optimizer slots shaped like the variable; "
                f"{self.__class__.__name__} keeps a slot of shape {tuple(slot.shape)} for "
                f"a variable of shape {tuple(variable.shape)} (factored moments?)")
        value = dense_gradient(value)
        return ops.where(mask, value, slot if keep else ops.zeros_like(value))

    def get_config(self):
        config = super().get_config()
        config["derivation"] = _describe(self._derivation)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the derived class from the config's ``derivation``, then the optimizer."""
        config = dict(config)
        derivation = config.pop("derivation", None)
        # All derived classes share one registered name, so `cls` may be any of them.
        if derivation is not None and _describe(cls._derivation) != derivation:
            cls = _rebuild(derivation)
        return super(DerivedOptimizer, cls).from_config(config, custom_objects=custom_objects)


_DERIVED = {}  # (base, extension, name) -> class, so that equal derivations are one class


def derive(base, mixin, name=None):
    """The subclass of ``base`` with ``mixin`` on top (one class per base, mixin and name)."""
    if not (isinstance(base, type) and issubclass(base, keras.optimizers.Optimizer)):
        raise TypeError(f"expected a Keras optimizer class such as keras.optimizers.Adam, got {base!r}")
    if issubclass(base, mixin):
        raise ValueError(f"{base.__name__} already has {mixin._suffix}")
    name = name or base.__name__ + mixin._suffix
    key = (base, mixin, name)
    if key not in _DERIVED:
        root, extensions = base._derivation if issubclass(base, DerivedOptimizer) else (base, ())
        cls = type(name, (mixin, base), {"__module__": _MODULE, "__doc__": mixin.__doc__,
                                         "_derivation": (root, extensions + ((mixin._tag, name),))})
        # One registered name for all: from_config rebuilds the exact class from the config.
        _DERIVED[key] = keras.saving.register_keras_serializable(PACKAGE, "DerivedOptimizer")(cls)
    return _DERIVED[key]


def _describe(derivation):
    base, extensions = derivation
    return {"base": keras.saving.get_registered_name(base), "extensions": [list(e) for e in extensions]}


def _rebuild(derivation):
    """The derived class that a config's ``derivation`` describes."""
    name = derivation["base"]
    cls = keras.saving.get_registered_object(name) or getattr(keras.optimizers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
        raise ValueError(f"cannot rebuild a derived optimizer on {name!r}: it is neither a "
                         "Keras optimizer nor registered with register_keras_serializable")
    for tag, class_name in derivation["extensions"]:
        if tag not in _EXTENSIONS:
            raise ValueError(f"unknown optimizer extension {tag!r}; known: {sorted(_EXTENSIONS)}")
        cls = derive(cls, _EXTENSIONS[tag], class_name)
    return cls
