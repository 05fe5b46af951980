"""``gpu.json`` -> the targets met or missed, and the Markdown table for BENCHMARKS.md.

``python -m bench.gpu_report gpu.json`` prints the table of any run, complete or cut
short: a missing figure shows as ``-``.
"""

from __future__ import annotations

import math
from typing import Any

from .report import print_report

# name -> (what, the line to reach)
TARGETS: dict[str, tuple[str, float]] = {
    "served_vs_forward": ("served Grad-CAM (JPEG) / the model's float32 batched forward", 0.5),
    "served_vs_pytorch_grad_cam": ("served Grad-CAM (JPEG) / pytorch-grad-cam per request", 10.0),
    "occlusion_vs_captum": ("Captum Occlusion seconds / camserve's", 10.0),
    "best_processes_rps": ("Grad-CAM/s end to end, float16, best --processes N", 5000.0),
    "best_processes_gpu_busy_pct": ("GPU busy % at that N (nvidia-smi)", 80.0),
}


def _get(r: dict[str, Any], *path: str) -> Any:
    value: Any = r
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return float(a) / float(b)
    return None


def _best_processes(r: dict[str, Any]) -> dict[str, Any] | None:
    measured = [e for e in r.get("processes") or [] if "gradcam_rps" in e]
    return max(measured, key=lambda e: e["gradcam_rps"]) if measured else None


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target's value, its line and whether it is met (``None``: not measured)."""
    served = _get(r, "gradcam_rps", "jpeg", "rps")
    best = _best_processes(r)
    values = {
        "served_vs_forward": _ratio(served, _get(r, "forward_ips", "float32")),
        "served_vs_pytorch_grad_cam": _ratio(served, r.get("pgc_rps")),
        "occlusion_vs_captum": _get(r, "occlusion_vs_captum", "speedup"),
        "best_processes_rps": best["gradcam_rps"] if best else None,
        "best_processes_gpu_busy_pct": _get(best or {}, "gpu_util", "busy_mean_pct"),
    }
    return {
        name: {
            "value": value,
            "line": line,
            "met": None if value is None else bool(value >= line),
        }
        for name, (_, line) in TARGETS.items()
        for value in [values[name]]
    }


def _fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int | float):
        if math.isnan(float(value)):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def _load_row(label: str, load: dict[str, Any] | None) -> str:
    if not load:
        return f"| {label} | - | - |"
    server = load.get("server_p50_ms") or {}
    util = _get(load, "gpu_util", "busy_mean_pct")
    where = ", ".join(f"{k.removesuffix('_ms')} {_fmt(v, 1)}" for k, v in server.items())
    return (
        f"| {label} | {_fmt(load.get('rps'))} req/s | p50 {_fmt(load.get('p50_ms'), 1)} ms, "
        f"p99 {_fmt(load.get('p99_ms'), 1)} ms; server p50 ms: {where}; GPU busy "
        f"{_fmt(util)}%; errors {_fmt(load.get('errors'))} |"
    )


def markdown(r: dict[str, Any]) -> str:
    """The run as Markdown: device, figures, targets, errors."""
    device = r.get("device") or {}
    forward = r.get("forward_ips") or {}
    lines = [
        f"Device: {device.get('name', device.get('device', '-'))}, torch {device.get('torch', '-')}"
        f", {device.get('arch', '-')} at {device.get('input', '-')}"
        + (" (CPU smoke run: the numbers mean nothing)" if device.get("smoke") else ""),
        "",
        "| figure | value | detail |",
        "|---|---|---|",
        f"| model's own forward, batch {_fmt(forward.get('batch'))} | "
        f"{_fmt(forward.get('float32'))} img/s | channels_last "
        f"{_fmt(forward.get('channels_last'))}, float16 {_fmt(forward.get('float16'))}, "
        f"channels_last with TF32 {_fmt(forward.get('channels_last_tf32'))} |",
        _load_row("served Grad-CAM, JPEG", _get(r, "gradcam_rps", "jpeg")),
        _load_row("served Grad-CAM, tensor", _get(r, "gradcam_rps", "tensor")),
        f"| mean batch size | {_fmt(_get(r, 'gradcam_rps', 'batch_size', 'mean'), 1)} | |",
        f"| pytorch-grad-cam, one at a time | {_fmt(r.get('pgc_rps'), 1)} req/s | |",
    ]
    for key, name in (("occlusion_vs_captum", "Occlusion"), ("ig_vs_captum", "IG")):
        f = r.get(key) or {}
        lines.append(
            f"| {name}: camserve / Captum | {_fmt(f.get('camserve_s_per_image'), 3)} s / "
            f"{_fmt(f.get('captum_s_per_image'), 3)} s per image | {_fmt(f.get('speedup'), 1)}x |"
        )
    cache = r.get("cache") or {}
    lines += [
        f"| front end, no-op RPC | {_fmt(r.get('frontend_noop_rps'))} /s | warm Grad-CAM "
        f"{_fmt(r.get('frontend_warm_rps'))} /s |",
        f"| cache: cold / warm p50 | {_fmt(cache.get('cold_p50_ms'), 1)} / "
        f"{_fmt(cache.get('warm_p50_ms'), 1)} ms | {_fmt(cache.get('speedup'), 1)}x |",
    ]
    for precision, f in (r.get("precision") or {}).items():
        lines.append(
            f"| served Grad-CAM, {precision} | {_fmt(f.get('rps'))} req/s | max map difference "
            f"from float32 {_fmt(f.get('max_diff'), 4)} |"
        )
    for entry in r.get("processes") or []:
        if "skipped" in entry:
            lines.append(f"| --processes {entry['n']} | - | {entry['skipped']} |")
        else:
            lines.append(_load_row(f"--processes {entry['n']}, {entry['precision']}", {
                **entry, "rps": entry["gradcam_rps"]}))  # fmt: skip
    for label, f in (r.get("switch_interval") or {}).items():
        lines.append(_load_row(f"served Grad-CAM, JPEG, GIL switch interval {label}", f))
    parity = r.get("parity_max_diff") or {}
    lines.append(
        "| device against CPU, max map difference | "
        + ", ".join(f"{k} {_fmt(v, 5) if not isinstance(v, str) else v}" for k, v in parity.items())
        + " | |"
    )
    timing = r.get("time") or {}
    lines.append(
        "| engine alone, no server | "
        + ", ".join(f"{k.removesuffix('_ms')} {_fmt(v, 2)} ms" for k, v in timing.items()
                    if isinstance(v, int | float))
        + " | |"
    )  # fmt: skip
    peak = r.get("peak_memory_bytes")
    lines.append(f"| peak device memory | {_fmt(peak / 2**20 if peak else None)} MiB | |")
    lines += ["", "| target | value | line | met |", "|---|---|---|---|"]
    for name, t in (r.get("targets") or targets(r)).items():
        lines.append(f"| {TARGETS[name][0]} | {_fmt(t['value'], 2)} | {_fmt(t['line'], 1)} | "
                     f"{_fmt(t['met'])} |")  # fmt: skip
    for name, error in (r.get("errors") or {}).items():
        lines.append(f"\nSection `{name}` failed: {error}")
    seconds = r.get("sections_s") or {}
    lines.append("\nSeconds per section: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return print_report(markdown, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
