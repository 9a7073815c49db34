"""From config entries to agent specs: resolve classes, expand ``count`` and ``grid``, check parameters.

Agent classes given as ``path/to/file.py:Class`` are loaded from the file (relative to the config file)
and pickled *by value* (with every module loaded from that file's folder), so Ray actors receive the code
itself and need no shared filesystem: the same config works on a cluster. Classes given as
``module:Class`` are imported by name and must be importable on every node (installed packages).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import json
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import ray.cloudpickle

from agents.base import Agent, ParameterError
from federation.config import AgentEntry, AgentRiskConfig, FleetConfig
from federation.errors import AgentLoadError, ConfigError
from policies.allocation import build_allocator
from policies.budget import BudgetLimit


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent to launch."""

    name: str
    agent_class: type[Agent]
    class_path: str
    symbols: tuple[str, ...]
    params: dict[str, Any]
    isolation: str
    capital: Decimal
    budgets: tuple[BudgetLimit, ...] = ()
    weight: float = 1.0
    """``[[agents]] weight``: the agent's base weight for the allocation policy."""
    risk: AgentRiskConfig | None = None
    """The agent's own risk limits and breakers (``[[agents]] risk``)."""

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)


def _load_module_from_file(path: Path, where: str) -> Any:
    if not path.is_file():
        raise AgentLoadError(f"{where}: agent file {path} not found; paths are relative to the config file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"federation_user_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = str(path.resolve().parent)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AgentLoadError(f"{where}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.modules[module_name] = module
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise AgentLoadError(f"{exc.filename}:{exc.lineno}: {where}: syntax error: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[module_name]
        raise AgentLoadError(f"{where}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(folder)
    ray.cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
    for name in set(sys.modules) - before:
        sibling = sys.modules[name]
        if str(getattr(sibling, "__file__", "") or "").startswith(folder):
            ray.cloudpickle.register_pickle_by_value(sibling)  # type: ignore[no-untyped-call]
    return module


def load_agent_class(spec: str, base_dir: Path, where: str = "class") -> type[Agent]:
    """Resolve ``module:Class`` or ``path/to/file.py:Class``; :class:`AgentLoadError` on any problem."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        module = _load_module_from_file(path if path.is_absolute() else base_dir / path, where)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise AgentLoadError(
                f"{where}: cannot import module {target!r} ({exc}); for a file next to the config use "
                f"'{target.replace('.', '/')}.py:{attr}'"
            ) from None
        except Exception as exc:
            raise AgentLoadError(
                f"{where}: importing {target!r} failed: {type(exc).__name__}: {exc}"
            ) from None
    found = getattr(module, attr, None)
    if found is None:
        candidates = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Agent)]
        close = difflib.get_close_matches(attr, candidates, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        listed = f" Agent classes there: {', '.join(sorted(candidates))}." if candidates else ""
        raise AgentLoadError(f"{where}: {target} has no class {attr!r}{hint}{listed}")
    if not (inspect.isclass(found) and issubclass(found, Agent)) or found is Agent:
        raise AgentLoadError(f"{where}: {spec} is not a subclass of agents.Agent; subclass it")
    if found.on_bar is Agent.on_bar and found.on_batch is Agent.on_batch:
        raise AgentLoadError(f"{where}: {spec} overrides neither on_bar nor on_batch, so it never trades")
    try:
        ray.cloudpickle.dumps(found)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise AgentLoadError(
            f"{where}: {spec} cannot be sent to its actor ({type(exc).__name__}: {exc}); objects such as "
            "locks, open files or connections must be created in on_start, not at module or class level"
        ) from None
    return found


def _variants(entry: AgentEntry) -> list[dict[str, Any]]:
    keys = list(entry.grid)
    combos = itertools.product(*(entry.grid[k] for k in keys)) if keys else [()]
    variants = [{**entry.params, **dict(zip(keys, combo, strict=True))} for combo in combos]
    return [v for v in variants for _ in range(entry.count)]


def build_fleet(
    config: FleetConfig, feed_symbols: tuple[str, ...], source: str = "config"
) -> list[AgentSpec]:
    """Expand every ``[[agents]]`` entry, check classes, parameters, symbols and names."""
    staged: list[tuple[str, type[Agent], AgentEntry, tuple[str, ...], dict[str, Any]]] = []
    for index, entry in enumerate(config.agents):
        where = f"{source}: agents[{index}]"
        cls = load_agent_class(entry.class_, config.base_dir, where + ".class")
        symbols = tuple(entry.symbols or feed_symbols)
        unknown = [s for s in symbols if s not in feed_symbols]
        if unknown:
            raise AgentLoadError(
                f"{where}.symbols: {', '.join(unknown)} not in the feed (feed symbols: "
                f"{', '.join(feed_symbols)})"
            )
        variants = _variants(entry)
        base = entry.name or cls.__name__
        width = len(str(len(variants) - 1))
        for k, params in enumerate(variants):
            name = base if len(variants) == 1 else f"{base}-{k:0{width}d}"
            try:
                values = cls.validate_params(params, agent_name=name)
            except ParameterError as exc:
                raise AgentLoadError(f"{where}.params: {exc}") from None
            staged.append((name, cls, entry, symbols, values))
    seen: set[str] = set()
    for name, *_ in staged:
        if name in seen:
            raise AgentLoadError(f"{source}: agent name {name!r} is used twice; give entries distinct names")
        seen.add(name)
    # The starting split is the allocation policy's with no history (by [[agents]] weight, equal shares
    # for "equal", within min/max_weight); the supervisor's allocator re-splits from the same inputs.
    weights = [entry.weight for _, _, entry, _, _ in staged]
    try:
        shares = build_allocator(config.allocation, weights, config.federation.capital).capital()
    except ValueError as exc:
        raise ConfigError(f"{source}: allocation: {str(exc).strip()}") from None
    return [
        AgentSpec(
            name,
            cls,
            entry.class_,
            symbols,
            values,
            entry.isolation or config.federation.isolation,
            share,
            budgets=tuple(
                b.to_limit() for b in (config.budgets.default if entry.budgets is None else entry.budgets)
            ),
            risk=entry.risk,
            weight=weight,
        )
        for (name, cls, entry, symbols, values), share, weight in zip(staged, shares, weights, strict=True)
    ]
