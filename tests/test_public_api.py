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


def module_imports():
    """``(module file, imported module, name)`` of every ``from bertkit... import`` in the
    package, top level or inside functions."""
    import ast
    import pathlib

    root = pathlib.Path(bertkit.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bertkit"):
                for alias in node.names:
                    yield path.relative_to(root.parent).as_posix(), node.module, alias.name


def test_no_module_imports_another_modules_private_name():
    private = [f"{path}: from {module} import {name}"
               for path, module, name in module_imports()
               if name.startswith("_") and module != "bertkit"]
    assert not private, private


def test_every_module_declares_its_public_names():
    import pkgutil

    for module in pkgutil.walk_packages(bertkit.__path__, "bertkit."):
        loaded = importlib.import_module(module.name)
        assert isinstance(getattr(loaded, "__all__", None), list), module.name
        for name in loaded.__all__:
            assert hasattr(loaded, name), f"{module.name}.__all__ names missing {name}"


def test_module_level_imports_run_one_way():
    """No cycle among the package's modules at import time (a module that needs a later
    one inside a function, as ``build_transformer_model`` needs the checkpoint readers,
    imports it there)."""
    import ast
    import pathlib

    root = pathlib.Path(bertkit.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        name = name[: -len(".__init__")] if name.endswith(".__init__") else name
        edges = graph.setdefault(name, set())
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # top level only
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bertkit"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    edges.add(target if (root.parent / (target.replace(".", "/") + ".py")
                                         ).exists() else node.module)
    graph.pop("bertkit")  # the package's __init__ imports everything, by design
    state = {}

    def visit(module, trail):
        if state.get(module) == "done" or module not in graph:
            return
        assert state.get(module) != "open", " -> ".join(trail + [module])
        state[module] = "open"
        for target in graph[module]:
            if target != module and not module.startswith(target + "."):
                visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
