"""The CLI's optimisation-job commands: ``visualize`` and ``adversarial``.

    camserve visualize --method activation_maximization --model M --layer L --channels 0-15
        --out grid.png
    camserve adversarial IMAGE --model M --epsilon 8/255 [--target 3] --out DIR

Each job streams its progress into one progress bar; the pictures are written
as PNG files (``camserve.render``, and so Pillow, is imported only here).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camserve._arguments import AddCommand, parse_fraction, parse_indices, parse_option
from camserve._commands import CommandError, resolve_model
from camserve._progress import ProgressBar
from camserve.client import ExplainClient
from camserve.jobs import VisualizationProgress, VisualizationResult
from camserve.results import ClassScore, ModelInfo


@dataclass(frozen=True)
class _Job:
    label: str
    target: int | None
    channel: int | None


class _JobsProgress:
    """One bar over every step of several jobs, sized when the first job reports its total."""

    def __init__(self, label: str, jobs: int) -> None:
        self.label = label
        self.jobs = jobs
        self.index = 0
        self.bar: ProgressBar | None = None

    def __call__(self, event: VisualizationProgress) -> None:
        if self.bar is None:
            self.bar = ProgressBar(self.label, self.jobs * event.total, unit="step")
        self.bar.offset = self.index * event.total
        self.bar(event.step)

    def next_job(self) -> None:
        self.index += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _score(score: ClassScore) -> str:
    return f"{score.name} {score.probability:.2f}"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = dict(args.option or [])
    if args.steps is not None:
        options["steps"] = args.steps
    return options


def _run_jobs(
    client: ExplainClient, model: ModelInfo, args: argparse.Namespace, jobs: Sequence[_Job]
) -> list[VisualizationResult]:
    progress = _JobsProgress(f"{args.method}", len(jobs))
    results = []
    try:
        for job in jobs:
            results.append(
                client.visualize(
                    method=args.method,
                    model=model.name,
                    image=args.image,
                    target=job.target,
                    layer=args.layer,
                    channel=job.channel,
                    options=_options(args),
                    on_progress=progress,
                    seed=args.seed,
                    timeout=args.job_timeout,
                )
            )
            progress.next_job()
    finally:
        progress.close()
    return results


def visualize(args: argparse.Namespace, client: ExplainClient) -> int:
    """Run one job per channel (or class) and write a labelled grid of the pictures."""
    from camserve.render.visuals import labelled_grid

    model = resolve_model(client, args.model)
    if args.channels is not None and args.targets is not None:
        raise CommandError("give --channels or --targets, not both")
    if args.channels is not None:
        jobs = [_Job(f"channel {c}", args.target, c) for c in args.channels]
    elif args.targets is not None:
        jobs = [_Job(model.label(t), t, None) for t in args.targets]
    else:
        label = model.label(args.target) if args.target is not None else args.method
        jobs = [_Job(label, args.target, None)]
    results = _run_jobs(client, model, args, jobs)
    layer = results[0].layer or args.layer
    title = f"{model.name} {args.method}" + (f" {layer}" if layer else "")
    grid = labelled_grid(
        [r.image for r in results],
        [job.label for job in jobs],
        columns=args.columns,
        cell=args.cell,
        title=title,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    cached = sum(r.cached for r in results)
    print(f"wrote {out} ({len(results)} pictures, {cached} from the server's cache)")
    return 0


def adversarial(args: argparse.Namespace, client: ExplainClient) -> int:
    """Attack one image; write original, perturbation and adversarial side by side."""
    from camserve.render.visuals import adversarial_panel

    model = resolve_model(client, args.model)
    image = Path(args.image)
    if not image.is_file():
        raise CommandError(f"no such file: {args.image}")
    options = _options(args) | {"attack": args.attack, "epsilon": args.epsilon}
    if args.step_size is not None:
        options["step_size"] = args.step_size
    progress = _JobsProgress("adversarial", 1)
    try:
        result = client.visualize(
            method="adversarial",
            model=model.name,
            image=image,
            target=args.target,
            options=options,
            on_progress=progress,
            seed=args.seed,
            timeout=args.job_timeout,
        )
    finally:
        progress.close()
    before = result.predictions.get("original", [])
    missing = {"original", "perturbation"} - set(result.images)
    if missing or not before:
        raise CommandError("the server's adversarial result lacks the original image")
    captions = (
        f"original: {_score(before[0])}",
        "perturbation (amplified)",
        f"adversarial: {_score(result.top)}",
    )
    panel = adversarial_panel(
        result.images["original"].image,
        result.images["perturbation"].image,
        result.image,
        captions,
        title=f"{model.name} {args.attack} epsilon={args.epsilon:.4g}",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    panel_path = out / f"{image.stem}_adversarial_panel.png"
    panel.save(panel_path)
    result.to_pil().save(out / f"{image.stem}_adversarial.png")
    result.images["perturbation"].to_pil().save(out / f"{image.stem}_perturbation.png")
    verdict = "flipped" if result.top.index != before[0].index else "unchanged"
    print(f"{image.name}: {_score(before[0])} -> {_score(result.top)} ({verdict}); wrote {out}")
    return 0


def register(command: AddCommand) -> None:
    """Add ``visualize`` and ``adversarial`` to the CLI's commands."""
    sub = command(
        "visualize", visualize, "run an optimisation job per channel or class; write a grid PNG"
    )
    sub.add_argument("--method", default="activation_maximization", help="job method id")
    sub.add_argument("--model", help="model name (default: the server's first model)")
    sub.add_argument("--layer", help="layer to read (default: the method's)")
    sub.add_argument(
        "--channels", type=parse_indices, help="channels to visualise, e.g. 0-15 or 0,4,8-11"
    )
    sub.add_argument("--targets", type=parse_indices, help="classes to visualise, e.g. 0-5")
    sub.add_argument("--target", type=int, help="one class (for a single job)")
    sub.add_argument("--image", help="starting or source image, for methods that take one")
    _job_options(sub)
    sub.add_argument("--out", required=True, metavar="PNG", help="grid PNG to write")
    sub.add_argument("--columns", type=int, default=8, help="pictures per row (default 8)")
    sub.add_argument("--cell", type=int, default=128, help="picture side in pixels (default 128)")

    sub = command("adversarial", adversarial, "write an adversarial example beside its original")
    sub.add_argument("image", metavar="IMAGE", help="image to attack")
    sub.add_argument("--model", help="model name (default: the server's first model)")
    sub.add_argument(
        "--epsilon", type=parse_fraction, default=8 / 255, help="L-inf budget, e.g. 8/255"
    )
    sub.add_argument("--target", type=int, help="target class (default: untargeted)")
    sub.add_argument("--attack", default="pgd", choices=("pgd", "fgsm"), help="default pgd")
    sub.add_argument("--step-size", type=parse_fraction, help="default epsilon/4")
    _job_options(sub)
    sub.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")


def _job_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--steps", type=int, help="optimisation steps (default: the method's)")
    sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sub.add_argument(
        "--option",
        type=parse_option,
        action="append",
        metavar="NAME=VALUE",
        help="a method option (repeatable), e.g. lr=0.05",
    )
    sub.add_argument(
        "--job-timeout",
        type=float,
        help="seconds each job may take (default: --timeout)",
    )


__all__ = [
    "adversarial",
    "parse_fraction",
    "parse_indices",
    "parse_option",
    "register",
    "visualize",
]
