"""The harness's ratios and its printed table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Every ratio of the run: camserve (or a variant) over a baseline of the same run."""
    served = r["gradcam"]["throughput_rps"]
    occlusion = r["occlusion"]
    precision = r["precision"]
    fp32 = precision["float32"]["images_per_s"]
    return {
        "gradcam_vs_forward": served / r["model"]["forward_ips"],
        "gradcam_vs_forward_channels_last": served / r["model"]["forward_channels_last_ips"],
        "gradcam_vs_pytorch_grad_cam": served / r["pytorch_grad_cam_rps"],
        "gradcam_vs_unbatched": served / r["gradcam_unbatched"]["throughput_rps"],
        "gradcam_served_bfloat16_vs_float32": r["gradcam_bfloat16"]["throughput_rps"] / served,
        "frontend_noop_vs_gradcam_served": r["frontend"]["noop_rps"] / served,
        "frontend_warm_vs_gradcam_served": r["frontend"]["warm_rps"] / served,
        "cache_warm_speedup": r["cache"]["jpeg"]["speedup"],
        "cache_warm_speedup_tensor": r["cache"]["tensor"]["speedup"],
        "cache_warm_speedup_second_target": r["cache"]["jpeg"]["speedup_target"],
        "cache_warm_speedup_second_target_tensor": r["cache"]["tensor"]["speedup_target"],
        "occlusion_vs_captum": occlusion["captum_s_per_image"] / occlusion["camserve_s_per_image"],
        "occlusion_full_passes_vs_captum": occlusion["captum_s_per_image"]
        / occlusion["camserve_full_passes_s_per_image"],
        "occlusion_incremental_vs_full_passes": occlusion["camserve_full_passes_s_per_image"]
        / occlusion["camserve_s_per_image"],
        **_onnxruntime_ratios(r),
        "integrated_gradients_vs_captum": r["integrated_gradients"]["captum_s_per_image"]
        / r["integrated_gradients"]["camserve_s_per_image"],
        **{
            "onnxruntime_vs_eager_" + name.replace(" at ", "_"): row["onnxruntime_vs_eager"]
            for name, row in r.get("forward_only", {}).items()
        },
        **{
            "gradcam_" + name.replace(", ", "_").replace(" ", "_") + "_vs_float32": (
                figures["images_per_s"] / fp32
            )
            for name, figures in precision.items()
            if name != "float32"
        },
    }


def _onnxruntime_ratios(r: dict[str, Any]) -> dict[str, float]:
    """onnxruntime against the same run's baselines (measured on CPU runs only)."""
    ort = r.get("onnxruntime")
    if not ort:
        return {}
    occlusion = r["occlusion"]
    return {
        "occlusion_onnxruntime_vs_captum": occlusion["captum_s_per_image"]
        / ort["occlusion_s_per_image"],
        "occlusion_onnxruntime_vs_eager_camserve": occlusion["camserve_s_per_image"]
        / ort["occlusion_s_per_image"],
        "onnxruntime_forward_vs_eager": ort["forward_ips"] / r["model"]["forward_ips"],
        "onnxruntime_forward_vs_eager_channels_last": ort["forward_ips"]
        / r["model"]["forward_channels_last_ips"],
    }


def _onnxruntime_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    ort = r.get("onnxruntime")
    if not ort:
        return []
    served = "served on the ONNX model" if ort["occlusion_served_on_onnx"] else "harness loop"
    rows = [
        ("onnxruntime forward (CPU provider)", f"{ort['forward_ips']:.1f} img/s"),
        (
            f"occlusion onnxruntime ({served})",
            f"{ort['occlusion_s_per_image']:.2f} s per image, chunks of {ort['occlusion_chunk']}, "
            f"max |map - camserve map| {ort['occlusion_max_abs_diff_vs_camserve']:.2g}",
        ),
    ]
    if "occlusion_loop_s_per_image" in ort:
        rows.append(
            (
                "occlusion onnxruntime (harness loop)",
                f"{ort['occlusion_loop_s_per_image']:.2f} s per image",
            )
        )
    for name, row in r.get("forward_only", {}).items():
        rows.append(
            (
                f"{name}: eager / onnxruntime, served",
                f"{row['eager_s_per_image'] * 1e3:.0f} ms / "
                f"{row['onnxruntime_s_per_image'] * 1e3:.0f} ms per image "
                f"({row['onnxruntime_vs_eager']:.2f}x), max |diff| {row['max_abs_diff']:.2g}",
            )
        )
    return rows


# The value column of a load run and of a service-overhead measurement, over their figures.
LOAD = (
    "{throughput_rps:.1f} req/s  p50 {p50_ms:.0f} ms  p95 {p95_ms:.0f} ms  p99 {p99_ms:.0f} ms  "
    "({requests} requests in {elapsed_s:.1f} s, {errors} errors, "
    "cache hits {server_cache_hit_rate:.0%})"
)
OVERHEAD = (
    "{overhead_p50_ms:.2f} ms = transport {transport_p50_ms:.2f} + decode {decode_p50_ms:.2f} "
    "+ queue {queue_p50_ms:.2f} + other {server_other_p50_ms:.2f} "
    "(no-op RPC {noop_rtt_p50_ms:.2f} ms)"
)


def _load_row(label: str, g: dict[str, Any]) -> tuple[str, str]:
    return f"{label} ({g['input']}, {g['mode']})", LOAD.format_map(g)


def table(r: dict[str, Any]) -> str:
    """The results as an aligned two-column table."""
    g, u, c = r["gradcam"], r["gradcam_unbatched"], r["cache"]
    m = r["model"]
    rows = [
        (
            "model",
            f"{m['arch']} at {m['input']} on {r['machine']['device']}, "
            f"{r['machine']['threads']} threads",
        ),
        (f"model forward (batch {m['batch']})", f"{m['forward_ips']:.1f} img/s"),
        ("model forward, channels_last", f"{m['forward_channels_last_ips']:.1f} img/s"),
        ("model forward+input backward", f"{m['forward_backward_ips']:.1f} img/s"),
        _load_row("camserve gradcam served", g),
        ("  batch size mean", f"{g['batch_size']['mean']:.1f}"),
        _load_row("camserve gradcam, max_batch_size=1", u),
        _load_row("camserve gradcam, --precision bfloat16", r["gradcam_bfloat16"]),
        ("pytorch-grad-cam, one at a time", f"{r['pytorch_grad_cam_rps']:.1f} req/s"),
    ]
    for kind in ("jpeg", "tensor"):
        rows.append(
            (
                f"cache p50 ({kind}): cold / 2nd target / 2nd method",
                f"{c[kind]['cold_p50_ms']:.1f} ms / {c[kind]['warm_target_p50_ms']:.2f} ms / "
                f"{c[kind]['warm_p50_ms']:.2f} ms",
            )
        )
    rows += [
        (f"service overhead p50, concurrency 1 ({kind})", OVERHEAD.format_map(r["overhead"][kind]))
        for kind in ("jpeg", "tensor")
    ]
    f = r["frontend"]
    callers = f"{f['clients']:.0f} client processes x {f['concurrency']:.0f} callers"
    rows += [
        (f"front end: no-op ListMethods ({callers})", f"{f['noop_rps']:.0f} req/s"),
        (
            f"front end: Grad-CAM on cached images ({callers})",
            f"{f['warm_rps']:.0f} req/s, cache hits {f['warm_cache_hit_rate']:.0%}",
        ),
    ]
    o = r["occlusion"]
    rows.append(
        (
            "occlusion camserve incremental / full passes / captum",
            f"{o['camserve_s_per_image']:.2f} s / {o['camserve_full_passes_s_per_image']:.2f} s / "
            f"{o['captum_s_per_image']:.2f} s per image, max |incremental map - full passes map| "
            f"{o['incremental_max_abs_diff_vs_full_passes']:.2g}",
        )
    )
    rows += _onnxruntime_rows(r)
    rows += [
        (
            "integrated gradients camserve / captum",
            f"{r['integrated_gradients']['camserve_s_per_image']:.2f} s / "
            f"{r['integrated_gradients']['captum_s_per_image']:.2f} s per image",
        ),
    ]
    for name, p in r["precision"].items():
        rows.append(
            (
                f"gradcam {name}",
                f"{p['images_per_s']:.1f} img/s, max |diff| {p['max_abs_diff']:.2g}, "
                f"mean |diff| {p['mean_abs_diff']:.2g}",
            )
        )
    for row in r["memory"]:
        layer = f" at {row['layer']}" if row["layer"] else ""
        chunks = f", {row['rows_per_pass']} rows per pass" if row["rows_per_pass"] else ""
        rows.append(
            (
                f"peak memory {row['method']}{layer}, budget {row['budget_mb']} MiB",
                f"{row['peak_mb']:.0f} MiB (batch {row['batch']}{chunks})"
                f"{'' if row['within_budget'] else '  OVER BUDGET'}",
            )
        )
    rows += [(f"ratio {name}", f"{value:.2f}x") for name, value in r["ratios"].items()]
    load = r["machine"]["load_average"]
    rows.append(("load average at start", " ".join(f"{v:.2f}" for v in load)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def print_report(
    render: Callable[[dict[str, Any]], str], description: str, argv: list[str] | None
) -> int:
    """The command line of a report: ``render`` of the results file it is given, printed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("results", type=Path, help="a results file (JSON)")
    args = parser.parse_args(argv)
    print(render(json.loads(args.results.read_text())))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report results.json``: the table of a run saved with ``--json``."""
    return print_report(table, str(main.__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
