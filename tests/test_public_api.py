"""The declared public API: every name in ``bertkit.__all__`` imports from ``bertkit``."""
import importlib

import bertkit


def test_every_public_name_imports_from_the_package_and_is_documented():
    assert len(bertkit.__all__) == len(set(bertkit.__all__))
    for name in bertkit.__all__:
        value = getattr(bertkit, name)
        defining = importlib.import_module(value.__module__)
        assert getattr(defining, name) is value, name  # the module that defines it
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    from bertkit import DataGenerator, Tokenizer, build_transformer_model  # noqa: F401
