"""Named limits from a configuration file, in the shape of Envoy's ratelimit service.

A file holds one *domain* (a mapping) or a list of them::

    domain: api
    descriptors:
      - key: user                     # matches entry ("user", any value)
        rate_limit: {unit: minute, requests_per_unit: 100}
      - key: path
        value: /login                 # matches ("path", "/login") only
        rate_limit: {unit: second, requests_per_unit: 5}
        shadow_mode: true             # count and report, always answer OK
        descriptors:                  # nested: ("path", "/login"), ("user", x)
          - key: user
            rate_limit: {unit: hour, requests_per_unit: 20}

Matching follows Envoy's ratelimit service: a request descriptor is a list
of ``(key, value)`` entries; at each level the entry matches the child with
that key *and* value, or else the child with that key and no value; the
limit is the one on the node the *last* entry reached. No node, or a node
without ``rate_limit``, means "no limit" for that descriptor. Counting is
per full descriptor (values included, also when matched by key only), so
``("user", "42")`` and ``("user", "43")`` have separate counters.

Envoy's service counts in fixed windows aligned to the unit; that is the
default here too. Our extensions, optional in ``rate_limit``:
``algorithm`` (``token_bucket``, ``leaky_bucket``, ``gcra``,
``fixed_window``, ``sliding_window``) and ``burst``. ``unlimited: true``
answers OK without counting (Envoy's). Every error names the file path of
the bad node and raises :class:`~peer_ring.errors.ConfigError`.

Pure: parsing takes already-loaded data (:meth:`Limits.from_data`);
:meth:`Limits.from_file` reads JSON, or YAML when PyYAML is installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from peer_ring.app import ConfigError
from peer_ring.apps.ratelimit._types import NS_PER_S, Algorithm, check_limit

__all__ = ["UNITS", "DescriptorLimit", "Limits"]

#: Envoy's ``RateLimitResponse.RateLimit.Unit`` names and numbers -> seconds.
#: MONTH is 30 days and YEAR 365 days (fixed lengths; calendar units are not
#: supported, as gubernator's ``DURATION_IS_GREGORIAN`` is not).
UNITS: Final[dict[str, tuple[int, int]]] = {
    "second": (1, 1),
    "minute": (2, 60),
    "hour": (3, 3600),
    "day": (4, 86400),
    "month": (5, 30 * 86400),
    "year": (6, 365 * 86400),
}
_ALGORITHMS: Final = {
    "token_bucket": Algorithm.TOKEN_BUCKET,
    "leaky_bucket": Algorithm.LEAKY_BUCKET,
    "gcra": Algorithm.GCRA,
    "fixed_window": Algorithm.FIXED_WINDOW,
    "sliding_window": Algorithm.SLIDING_WINDOW,
}
#: Deepest nesting of descriptors accepted (Envoy requests carry few entries).
MAX_DEPTH: Final = 16


@dataclass(frozen=True, slots=True)
class DescriptorLimit:
    """The limit one configured descriptor node carries."""

    name: str
    unit: str
    requests_per_unit: int
    algorithm: Algorithm = Algorithm.FIXED_WINDOW
    burst: int = 0
    unlimited: bool = False
    shadow_mode: bool = False

    @property
    def duration_ns(self) -> int:
        return UNITS[self.unit][1] * NS_PER_S

    @property
    def unit_number(self) -> int:
        """Envoy's ``Unit`` enum value."""
        return UNITS[self.unit][0]


@dataclass(frozen=True, slots=True)
class _Node:
    limit: DescriptorLimit | None
    children: Mapping[str, _Node] = field(default_factory=dict)


def _key(key: str, value: str) -> str:
    return f"{key}_{value}" if value else key


def _text(raw: Any, where: str, what: str, *, required: bool) -> str:
    if raw is None and not required:
        return ""
    if type(raw) is not str or (required and not raw):
        raise ConfigError(f"{where}: {what} must be a non-empty string, got {raw!r:.60}")
    return raw


def _flag(raw: Any, where: str, what: str) -> bool:
    if raw is None:
        return False
    if type(raw) is not bool:
        raise ConfigError(f"{where}: {what} must be true or false, got {raw!r:.60}")
    return raw


def _limit(raw: Any, where: str, shadow: bool) -> DescriptorLimit:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.rate_limit must be a mapping")
    unknown = set(raw) - {"unit", "requests_per_unit", "name", "unlimited", "algorithm", "burst"}
    if unknown:
        raise ConfigError(f"{where}.rate_limit: unknown fields {sorted(unknown)}")
    unlimited = _flag(raw.get("unlimited"), where, "rate_limit.unlimited")
    unit = raw.get("unit", "second" if unlimited else None)
    if type(unit) is not str or unit.lower() not in UNITS:
        raise ConfigError(f"{where}.rate_limit.unit must be one of {sorted(UNITS)}, got {unit!r}")
    alg_name = raw.get("algorithm", "fixed_window")
    if type(alg_name) is not str or alg_name.lower() not in _ALGORITHMS:
        raise ConfigError(
            f"{where}.rate_limit.algorithm must be one of {sorted(_ALGORITHMS)}, got {alg_name!r}"
        )
    rpu = raw.get("requests_per_unit", 1 if unlimited else None)
    burst = raw.get("burst", 0)
    alg = _ALGORITHMS[alg_name.lower()]
    try:
        check_limit(alg, rpu, UNITS[unit.lower()][1] * NS_PER_S, burst, error=ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"{where}.rate_limit: {exc}") from None
    if rpu > 0xFFFFFFFF:
        raise ConfigError(f"{where}.rate_limit.requests_per_unit must fit uint32 (Envoy's)")
    return DescriptorLimit(
        name=_text(raw.get("name"), where, "rate_limit.name", required=False),
        unit=unit.lower(),
        requests_per_unit=int(rpu),
        algorithm=alg,
        burst=int(burst),
        unlimited=unlimited,
        shadow_mode=shadow,
    )


def _nodes(raw: Any, where: str, depth: int) -> dict[str, _Node]:
    if raw is None:
        return {}
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: descriptors nest deeper than {MAX_DEPTH}")
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise ConfigError(f"{where}: descriptors must be a list")
    out: dict[str, _Node] = {}
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{here} must be a mapping")
        unknown = set(item) - {"key", "value", "rate_limit", "descriptors", "shadow_mode",
                               "detailed_metric"}  # fmt: skip
        if unknown:
            raise ConfigError(f"{here}: unknown fields {sorted(unknown)}")
        key = _text(item.get("key"), here, "key", required=True)
        value = _text(item.get("value"), here, "value", required=False)
        shadow = _flag(item.get("shadow_mode"), here, "shadow_mode")
        _flag(item.get("detailed_metric"), here, "detailed_metric")
        limit = None
        if item.get("rate_limit") is not None:
            limit = _limit(item["rate_limit"], here, shadow)
        name = _key(key, value)
        if name in out:
            raise ConfigError(f"{here}: duplicate descriptor {key}={value!r}")
        out[name] = _Node(limit, _nodes(item.get("descriptors"), f"{here}.descriptors", depth + 1))
    return out


@dataclass(frozen=True, slots=True)
class Match:
    """A request descriptor matched to its limit: ``key`` is its counter's key."""

    key: str
    limit: DescriptorLimit


class Limits:
    """Parsed descriptor configuration: domain -> tree of descriptor nodes."""

    def __init__(self, domains: Mapping[str, Mapping[str, _Node]]) -> None:
        self._domains = dict(domains)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted(self._domains))

    @classmethod
    def from_data(cls, data: Any, source: str = "config") -> Limits:
        """Parse loaded YAML/JSON: one domain mapping or a list of them."""
        items = data if isinstance(data, list) else [data]
        domains: dict[str, Mapping[str, _Node]] = {}
        for i, item in enumerate(items):
            where = f"{source}[{i}]" if isinstance(data, list) else source
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}: a domain is a mapping with domain and descriptors")
            unknown = set(item) - {"domain", "descriptors"}
            if unknown:
                raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
            domain = _text(item.get("domain"), where, "domain", required=True)
            if domain in domains:
                raise ConfigError(f"{where}: domain {domain!r} defined twice")
            domains[domain] = _nodes(item.get("descriptors"), f"{where}.descriptors", 1)
        return cls(domains)

    @classmethod
    def from_file(cls, path: str | Path) -> Limits:
        """Read a ``.json``, ``.yaml`` or ``.yml`` file (YAML needs PyYAML)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read rate-limit config {p}: {exc}") from exc
        try:
            if p.suffix in (".yaml", ".yml"):
                try:
                    import yaml
                except ImportError:
                    raise ConfigError(
                        f"{p}: YAML configs need PyYAML (pip install pyyaml), or use JSON"
                    ) from None
                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except ConfigError:
            raise
        except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
            raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
        return cls.from_data(data, str(p))

    def match(self, domain: str, entries: Sequence[tuple[str, str]]) -> Match | None:
        """The limit of one request descriptor, or None (no limit applies).

        Raises :class:`KeyError` for an unknown domain (surfaces answer it as
        a bad request: Envoy's service does the same for an unknown domain).
        """
        tree = self._domains[domain]
        node: _Node | None = None
        parts = [domain]
        for key, value in entries:
            child = tree.get(_key(key, value)) or tree.get(key)
            if child is None:
                return None
            node, tree = child, child.children
            parts.append(f"{key}_{value}")
        if node is None or node.limit is None:
            return None
        return Match("|".join(parts), node.limit)
