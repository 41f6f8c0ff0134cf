"""A small name -> constructor registry; one instance per kind of component."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors of one kind (quantizers, tokenizers, reducers, metrics)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(constructor: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = constructor
            return constructor

        return add

    def get(self, name: str) -> Callable[..., T]:
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
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
