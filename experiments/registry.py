"""Name -> builder registries, so that a new model or dataset is one module plus one YAML.

Modules register themselves with a decorator; `discover()` imports every module of a
package so that registration happens without a central list to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, TypeVar

from experiments.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries with a helpful error for unknown names."""

    def __init__(self, kind: str, package: str, aliases: dict[str, str] | None = None):
        self.kind, self.package = kind, package
        self.aliases = dict(aliases or {})  # old names still found (configs saved by earlier versions)
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def discover(self) -> None:
        """Import every module in the package so that their decorators run."""
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    def get(self, name: str) -> T:
        self.discover()
        name = self.canonical(name)
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}"
            )
        return self._entries[name]

    def items(self) -> list[tuple[str, Any]]:
        self.discover()
        return sorted(self._entries.items())
