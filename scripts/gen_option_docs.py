"""Write ``docs/options.md``: every option of every method and job, from the one schema.

The server's option declarations (``camserve_server.options.Option``) are the only
place an option's type, valid values, default and help are written; this page is
made from them, as ``ListMethods`` and ``ListJobMethods`` are.

Usage::

    python scripts/gen_option_docs.py          # (re)write docs/options.md
    python scripts/gen_option_docs.py --check  # exit 1 if it is missing or stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from camserve_server.jobs.registry import JOB_METHODS
from camserve_server.methods.registry import METHODS
from camserve_server.options import Option

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "options.md"

HEADER = """# Options

Every option of every explanation method (`Explain`'s `options`) and
optimisation job (`Visualize`'s `options`; the CLI's `--option name=value`),
with its valid values and default; a method or job not listed takes none.
Generated from the server's declarations by `python scripts/gen_option_docs.py`;
`make lint` checks that it is current.
`ListMethods` and `ListJobMethods` return the same at run time.
"""


def _default(option: Option) -> str:
    value = option.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return f"[{value[0]}, {value[1]}]"
    return f"`{value}`" if isinstance(value, str) else f"{value:g}"


def _section(title: str, owners: Iterable[tuple[str, tuple[Option, ...]]]) -> list[str]:
    lines = [f"## {title}", ""]
    for owner, options in owners:
        if not options:
            continue
        lines += [
            f"### `{owner}`",
            "",
            "| option | valid values | default | what it does |",
            "|---|---|---|---|",
        ]
        for option in options:
            allowed = option.allowed or "any text"
            lines.append(f"| `{option.name}` | {allowed} | {_default(option)} | {option.help} |")
        lines.append("")
    return lines


def render() -> str:
    """The page's text."""
    lines = [HEADER]
    lines += _section("Explanation methods", ((m.id, m.options) for m in METHODS.values()))
    lines += _section("Optimisation jobs", ((m.id, m.options) for m in JOB_METHODS.values()))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/gen_option_docs.py")
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
