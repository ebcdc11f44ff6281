"""One reader for every config section: config.json, ``<Module>`` blocks, Security, Rules.

A :class:`Section` wraps one JSON object (or the options of a ``<Module>``
block) together with the file it came from and its dotted key path. Keys are
matched case-insensitively, because collectd's own keys are and the original's
example file spells ``Commands`` as ``commands``. Values are read with typed
getters that take a converter; a converter is a plain function of the value
that raises :class:`TypeError` or :class:`ValueError`, and the section turns
that into one :class:`ConfigError` naming the file and the dotted key, e.g.
``Services.nginx.Commands.restart`` or ``Rules.Values[2].Above``. A key is
named as the file spells it when it is there, by its documented name when it
is missing.

Keys nobody asked for are reported by :meth:`Section.unknown`; the caller picks
whether that is a warning (top-level keys) or an error (everything nested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar, overload

from collectd_monitor.errors import ConfigError

T = TypeVar("T")
Converter = Callable[[Any], T]

# --------------------------------------------------------------------------- converters


def as_any(value: Any) -> Any:
    return value


def as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise TypeError(f"expected true or false, got {value!r}")


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise TypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def number(*, minimum: float | None = None, above: float | None = None) -> Converter[float]:
    """A finite number (collectd hands every number over as a float; JSON may quote it)."""

    def convert(value: Any) -> float:
        result = _as_float(value)
        if minimum is not None and result < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {value!r}")
        if above is not None and not result > above:
            raise ValueError(f"must be greater than {above:g}, got {value!r}")
        return result

    return convert


def integer(*, minimum: int | None = None) -> Converter[int]:
    """A whole number; ``2.0`` is 2 (collectd's ``<Module>`` numbers arrive as floats)."""

    def convert(value: Any) -> int:
        result = _as_float(value)
        if not result.is_integer():
            raise TypeError(f"expected a whole number, got {value!r}")
        if minimum is not None and result < minimum:
            raise ValueError(f"must be at least {minimum}, got {value!r}")
        return int(result)

    return convert


as_float = number()
as_int = integer()
as_positive_float = number(above=0)
as_positive_int = integer(minimum=1)


def choice(options: Sequence[str], aliases: Mapping[str, str] | None = None) -> Converter[str]:
    """One of ``options``, case-insensitively; ``aliases`` map other spellings onto them."""

    def convert(value: Any) -> str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise TypeError(f"expected one of {', '.join(options)}, got {value!r}")
        text = (value if isinstance(value, str) else f"{value:g}").strip().lower()
        text = (aliases or {}).get(text, text)
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return text

    return convert


def as_object(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"expected an object, got {type(value).__name__}")


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"expected a list, got {type(value).__name__}")


# --------------------------------------------------------------------------- the reader


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Section:
    """Case-insensitive, typed access to one JSON object at a dotted key path."""

    def __init__(
        self, data: Mapping[str, Any], *, source: str | None = None, path: str = ""
    ) -> None:
        self.source = source
        self.path = path
        self._data: Mapping[str, Any] = MappingProxyType(dict(data))
        self._spelled = {key.lower(): key for key in data if isinstance(key, str)}

    @classmethod
    def of(cls, value: Any, *, source: str | None, path: str) -> Section:
        """``value`` as a section, or a ConfigError at ``path`` when it is not an object."""
        if isinstance(value, Section):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"expected an object, got {type(value).__name__}", path=source, key=path
            )
        return cls(value, source=source, path=path)

    def __repr__(self) -> str:
        return f"Section({self.path or '<top>'!r}, source={self.source!r})"

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._spelled

    def where(self, key: str) -> str:
        """The dotted path of ``key``, spelled as the file spells it if present."""
        return join(self.path, self._spelled.get(key.lower(), key))

    def error(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(
            message, path=self.source, key=self.where(key) if key is not None else self.path
        )

    def raw(self, key: str) -> Any:
        """The value as given (``None`` when absent): only for values of free shape."""
        spelled = self._spelled.get(key.lower())
        return None if spelled is None else self._data[spelled]

    def convert(self, key: str, value: Any, converter: Converter[T]) -> T:
        try:
            return converter(value)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc), key) from None

    @overload
    def get(self, key: str, converter: Converter[T]) -> T | None: ...

    @overload
    def get(self, key: str, converter: Converter[T], default: T) -> T: ...

    def get(self, key: str, converter: Converter[T], default: T | None = None) -> T | None:
        """The converted value of ``key``; ``default`` when it is absent or null."""
        value = self.raw(key)
        if value is None:
            return default
        return self.convert(key, value, converter)

    def require(self, key: str, converter: Converter[T], missing: str = "missing") -> T:
        value = self.get(key, converter)
        if value is None:
            raise self.error(missing, key)
        return value

    def section(self, key: str) -> Section | None:
        """The object at ``key`` as a section; ``None`` when absent or null."""
        value = self.raw(key)
        if value is None:
            return None
        return Section.of(value, source=self.source, path=self.where(key))

    def section_or_empty(self, key: str) -> Section:
        """Like :meth:`section`, with an empty section for an absent key."""
        found = self.section(key)
        return found if found is not None else Section({}, source=self.source, path=self.where(key))

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every entry as given, for objects whose keys are names (services, key ids)."""
        yield from self._data.items()

    def elements(self, key: str) -> list[tuple[str, Any]]:
        """The list at ``key`` as (dotted path, item) pairs, e.g. ``Rules.Values[2]``."""
        items: list[Any] = self.get(key, as_list, [])
        return [(f"{self.where(key)}[{index}]", item) for index, item in enumerate(items)]

    def child(self, name: str, value: Any) -> Section:
        """The object ``value`` found under the name ``name`` of :meth:`items`."""
        return Section.of(value, source=self.source, path=join(self.path, name))

    def read(self, fields: Mapping[str, Converter[Any]]) -> dict[str, Any]:
        """Every present key of ``fields`` converted, by its documented spelling.

        Unlike :meth:`get`, a key given as null is an error: nothing to merge.
        """
        return {
            key: self.convert(key, self.raw(key), converter)
            for key, converter in fields.items()
            if key in self
        }

    def unknown(self, known: Collection[str]) -> list[str]:
        """The keys (as spelled) that are not in ``known`` (documented spellings)."""
        lowered = {key.lower() for key in known}
        return [key for key in self._data if not isinstance(key, str) or key.lower() not in lowered]

    def reject_unknown(self, known: Collection[str], message: str = "unknown key") -> None:
        for key in self.unknown(known):
            raise self.error(message, str(key))

    def warn_unknown(self, known: Collection[str], warn: Callable[[str], None] | None) -> None:
        if warn is None:
            return
        for key in self.unknown(known):
            warn(f"{self.source or 'config'}: unknown key {join(self.path, str(key))!r} ignored")
