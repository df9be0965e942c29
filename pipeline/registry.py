"""One registry mechanism for every named choice (as timm's model registry): a module registers a
callable or class under a name; the config names it; an unknown name is an error that lists the
names there are.

    SOURCES = Registry("weight source", "model.weights")

    @SOURCES.register("file")
    class LocalFile: ...

    SOURCES.get("file")
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from pipeline.errors import PipelineError


class Registry:
    def __init__(self, kind: str, config_key: str | None = None):
        self.kind, self.config_key = kind, config_key
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def wrap(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj
        return wrap

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise PipelineError(f"unknown {self.kind} {name!r}; use one of {', '.join(self.names())}",
                                self.config_key)
        return self._entries[name]

    def pop(self, name: str, default: Any = None) -> Any:
        """Removes an entry (a test's temporary registration)."""
        return self._entries.pop(name, default)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
