"""Recorded or hand-written series for ``collectd-monitor test-rules``.

One record per line; blank lines and lines starting with ``#`` are skipped.
A line is either JSON or a unixsock command, so a series can be written by
hand or recorded from collectd:

* a metric as collectd's JSON format (what ``write_http`` and ``write_log``
  send; one object or a list of them)::

    {"time": 1700000000, "interval": 10, "host": "web1", "plugin": "memory",
     "plugin_instance": "", "type": "memory", "type_instance": "free",
     "values": [52428800], "dsnames": ["value"], "dstypes": ["gauge"]}

  ``dsnames``/``dstypes`` may be left out (they come from types.db, else
  ``value``/``gauge``); so may ``host`` (``localhost``), the instances and
  ``interval`` (10).
* a notification: an object with ``severity`` (``failure``, ``warning``,
  ``okay``) and ``message`` instead of ``values``;
* only ``{"time": T}``: nothing arrives, time passes (missing data, breakers);
* ``PUTVAL host/plugin-instance/type-instance [interval=10] TIME:V[:V...]``;
* ``PUTNOTIF severity=failure time=T [host=..] [plugin=..] [type=..] message="..."``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from collectd_monitor.rules.model import Metric, Notice, Severity

DataSets = Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]]


class SeriesError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Tick:
    time: float


Record = Metric | Notice | Tick


def read_types_db(path: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``type -> (dsnames, dstypes)`` from a collectd types.db file."""
    found: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.split(None, 1)
            if len(parts) < 2 or parts[0].startswith("#"):
                continue
            sources = [s.strip().split(":") for s in parts[1].split(",") if s.strip()]
            found[parts[0]] = (
                tuple(s[0] for s in sources),
                tuple(s[1].lower() for s in sources if len(s) > 1),
            )
    return found


def _no_types(type_: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (), ()


def _metric(obj: Mapping[str, Any], datasets: DataSets) -> Metric:
    values = obj["values"]
    if not isinstance(values, list) or not values:
        raise ValueError("values must be a non-empty list of numbers")
    type_ = str(obj.get("type", ""))
    known_names, known_types = datasets(type_)
    count = len(values)
    dsnames = tuple(
        obj.get("dsnames")
        or known_names
        or (("value",) if count == 1 else tuple(str(i) for i in range(count)))
    )
    dstypes = tuple(
        str(t).lower() for t in (obj.get("dstypes") or known_types or ("gauge",) * count)
    )
    if not type_ or "plugin" not in obj:
        raise ValueError("a metric needs plugin and type")
    return Metric(
        host=str(obj.get("host", "localhost")),
        plugin=str(obj["plugin"]),
        plugin_instance=str(obj.get("plugin_instance", "")),
        type=type_,
        type_instance=str(obj.get("type_instance", "")),
        time=float(obj["time"]),
        interval=float(obj.get("interval", 10)),
        values=tuple(float("nan") if v is None else float(v) for v in values),
        dsnames=dsnames,
        dstypes=dstypes,
    )


def _notice(obj: Mapping[str, Any]) -> Notice:
    return Notice(
        host=str(obj.get("host", "localhost")),
        plugin=str(obj.get("plugin", "")),
        plugin_instance=str(obj.get("plugin_instance", "")),
        type=str(obj.get("type", "")),
        type_instance=str(obj.get("type_instance", "")),
        time=float(obj["time"]),
        severity=int(Severity.parse(obj["severity"])),
        message=str(obj.get("message", "")),
    )


def _from_object(obj: Any, datasets: DataSets) -> Record:
    if not isinstance(obj, Mapping):
        raise ValueError("expected a JSON object")
    if "time" not in obj:
        raise ValueError("missing time")
    if "values" in obj:
        return _metric(obj, datasets)
    if "severity" in obj:
        return _notice(obj)
    return Tick(float(obj["time"]))


def _split_identifier(identifier: str) -> dict[str, str]:
    parts = identifier.split("/")
    if len(parts) != 3:
        raise ValueError(f"identifier {identifier!r} is not host/plugin[-instance]/type[-instance]")
    plugin, _, plugin_instance = parts[1].partition("-")
    type_, _, type_instance = parts[2].partition("-")
    return {
        "host": parts[0],
        "plugin": plugin,
        "plugin_instance": plugin_instance,
        "type": type_,
        "type_instance": type_instance,
    }


def _from_command(line: str, datasets: DataSets) -> Record:
    words = shlex.split(line)
    verb = words[0].upper()
    if verb == "PUTVAL":
        if len(words) < 3:
            raise ValueError("PUTVAL needs an identifier and TIME:VALUE")
        obj: dict[str, Any] = _split_identifier(words[1])
        for option in words[2:-1]:
            key, _, value = option.partition("=")
            if key == "interval":
                obj["interval"] = float(value)
        stamp, *values = words[-1].split(":")
        obj["time"] = float(stamp)
        obj["values"] = [None if v == "U" else float(v) for v in values]
        return _metric(obj, datasets)
    if verb == "PUTNOTIF":
        fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        return _notice(fields)
    raise ValueError(f"unknown command {words[0]!r} (PUTVAL, PUTNOTIF or JSON)")


def parse_series(
    lines: Iterator[str] | list[str], datasets: DataSets = _no_types
) -> Iterator[Record]:
    """Records in file order; a bad line raises :class:`SeriesError` with its number."""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line[0] in "{[":
                data = json.loads(line)
                for obj in data if isinstance(data, list) else [data]:
                    yield _from_object(obj, datasets)
            else:
                yield _from_command(line, datasets)
        except (ValueError, KeyError, TypeError) as exc:
            text = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise SeriesError(number, text) from None
