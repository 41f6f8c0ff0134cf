"""A small name -> constructor registry; one instance per kind of component.

`registered_in` lists what source files register without importing them (so `vtok list`
stays free of torch); a test keeps it equal to the live registries.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors of one kind (quantizers, tokenizers, reducers, metrics)."""

    def __init__(self, kind: str, modules: Iterable[str] = ()) -> None:
        """modules: the modules whose import registers the entries; imported on the first
        lookup, so a registry is complete whichever module was imported first."""
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._modules = tuple(modules)

    def _load(self) -> None:
        while self._modules:
            module, self._modules = self._modules[0], self._modules[1:]
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(constructor: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = constructor
            return constructor

        return add

    def get(self, name: str) -> Callable[..., T]:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **options: Any) -> T:
        """Build `name` with `options`, naming any option the constructor does not take."""
        constructor = self.get(name)
        params = inspect.signature(constructor).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if not takes_any:
            unknown = sorted(set(options) - set(params))
            if unknown:
                allowed = ", ".join(n for n in params if n != "self")
                raise ValueError(
                    f"{self.kind} {name!r} has no option {', '.join(unknown)}; "
                    f"its options are: {allowed}"
                )
        return constructor(**options)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items


def registered_in(paths: Iterable[Path], registry: str) -> dict[str, str]:
    """name -> docstring of each class or function decorated `@REGISTRY.register("name")` in
    these source files, read with `ast` (nothing is imported)."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == "register"
                        and isinstance(deco.func.value, ast.Name) and deco.func.value.id == registry
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    found[deco.args[0].value] = ast.get_docstring(node) or ""
    return dict(sorted(found.items()))
