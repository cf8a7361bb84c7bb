"""The registry of model families: ``build_transformer_model(model=NAME)`` looks here.

A family registers itself where it is defined, with ``@register_family("name")``;
``bertkit.models`` imports every module of its package, so a new family module is
found without any other change. A user's family registers the same way from anywhere.
"""
from bertkit.models.base import Transformer

__all__ = ["register_family", "family_names", "get_family"]

_FAMILIES = {}


def register_family(name, family=None):
    """Registers a builder class under ``name`` for ``build_transformer_model(model=name)``.

    Use it as a class decorator, ``@register_family("name")``, or as
    ``register_family("name", MyFamily)``. The examples' ``--model`` choices are the
    registry's names.

    Raises:
        TypeError: ``family`` is not a subclass of :class:`Transformer`.
        ValueError: ``name`` is taken by another class.
    """
    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, Transformer)):
            raise TypeError(f"a family must be a subclass of bertkit.models.Transformer, "
                            f"got {cls!r}")
        key = str(name).lower()
        if _FAMILIES.get(key, cls) is not cls:
            raise ValueError(f"model family {key!r} is already registered "
                             f"({_FAMILIES[key].__name__})")
        _FAMILIES[key] = cls
        return cls

    return register if family is None else register(family)


def family_names():
    """The registered family names, sorted."""
    return sorted(_FAMILIES)


def get_family(model):
    """The builder class for a registered name (any case) or a ``Transformer`` subclass."""
    if isinstance(model, type) and issubclass(model, Transformer):
        return model
    key = str(model).lower()
    if key not in _FAMILIES:
        raise ValueError(f"unknown model {model!r}; expected one of {family_names()} or a "
                         "bertkit.models.Transformer subclass")
    return _FAMILIES[key]
