"""The HTML pages' jinja2 templates (the ``plots`` extra), read from the package.

Every page extends ``page.html.j2``: its head, title, summary line and shared style, so
the report and the evaluation look alike. Values are escaped (``autoescape``).
"""

from __future__ import annotations

import functools
import importlib
from importlib import resources
from typing import Any

from camserve.render._mpl import PLOTS_EXTRA_HINT


def require_jinja2() -> Any:
    """The jinja2 module; ImportError naming the extra where it is not installed."""
    try:
        return importlib.import_module("jinja2")
    except ImportError as exc:
        raise ImportError(f"the HTML report needs jinja2; {PLOTS_EXTRA_HINT}") from exc


def _source(name: str) -> str:
    return (resources.files("camserve.render") / "templates" / name).read_text(encoding="utf-8")


@functools.cache
def _environment() -> Any:
    jinja2 = require_jinja2()
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_source),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template(name: str) -> Any:
    """The template ``templates/<name>``, ready to ``render``."""
    require_jinja2()  # the environment is cached: a jinja2 gone since is still reported
    return _environment().get_template(name)


__all__ = ["require_jinja2", "template"]
