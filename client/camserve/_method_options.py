"""The options each method of ``explain`` or ``report`` is sent, from ``--option`` flags.

``--option name=value`` goes to every chosen method that takes ``name`` (as the
server lists its options); ``--option method.name=value`` to that method alone. An
option that no chosen method takes is refused before any request, naming the
options they do take. Occlusion's window, unless given, is sized to the model's
input: a seventh of its shorter side (32 px at 224, the server's default), with a
stride of half the window, so a small input is not cut into a handful of blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from camserve._arguments import CommandError
from camserve.client import ExplainClient
from camserve.results import MethodInfo, ModelInfo

OCCLUSION = "occlusion"
OCCLUSION_WINDOW_SHARE = 7  # the window is the input's shorter side over this


def method_infos(client: ExplainClient) -> dict[str, MethodInfo]:
    """The server's methods by id."""
    return {m.id: m for m in client.methods()}


def _offered(methods: Sequence[MethodInfo]) -> str:
    listed = [f"{m.id}: {', '.join(m.options) or 'none'}" for m in methods]
    return "; ".join(listed)


def occlusion_defaults(model: ModelInfo, given: Mapping[str, Any]) -> dict[str, Any]:
    """``window`` and ``stride`` for occlusion where ``given`` lacks them (see the module)."""
    chosen: dict[str, Any] = {}
    if "window" not in given:
        side = min(model.input_size) if min(model.input_size) > 0 else 224
        chosen["window"] = max(2, round(side / OCCLUSION_WINDOW_SHARE))
    if "stride" not in given:
        window = given.get("window", chosen.get("window"))
        first = window[0] if isinstance(window, list | tuple) else window
        chosen["stride"] = max(1, int(first) // 2)
    return chosen


def split_options(
    pairs: Sequence[tuple[str, Any]] | None,
    methods: Sequence[MethodInfo],
    model: ModelInfo,
) -> dict[str, dict[str, Any]]:
    """Each method's options from ``--option`` ``(name, value)`` pairs (see the module)."""
    by_id = {m.id: m for m in methods}
    chosen: dict[str, dict[str, Any]] = {m.id: {} for m in methods}
    for name, value in pairs or ():
        scope, dot, option = name.rpartition(".")
        if dot:
            if scope not in by_id:
                raise CommandError(
                    f"--option {name}: {scope!r} is not among the chosen methods "
                    f"({', '.join(by_id)})"
                )
            if option not in by_id[scope].options:
                raise CommandError(
                    f"--option {name}: {scope} has no option {option!r}; "
                    f"its options: {', '.join(by_id[scope].options) or 'none'}"
                )
            chosen[scope][option] = value
            continue
        takers = [m.id for m in methods if name in m.options]
        if not takers:
            raise CommandError(f"--option {name}: no chosen method takes it ({_offered(methods)})")
        for method in takers:
            chosen[method][name] = value
    if OCCLUSION in chosen and OCCLUSION in model.methods:
        chosen[OCCLUSION] |= occlusion_defaults(model, chosen[OCCLUSION])
    return chosen


def describe(options: Mapping[str, Mapping[str, Any]]) -> str:
    """``occlusion window=9 stride=4; smoothgrad samples=10`` (methods with options only)."""
    parts = []
    for method, values in options.items():
        if values:
            settings = " ".join(f"{k}={_value(v)}" for k, v in values.items())
            parts.append(f"{method} {settings}")
    return "; ".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


__all__ = [
    "describe",
    "method_infos",
    "occlusion_defaults",
    "split_options",
]
