"""The HTML pages the API serves itself (the approval link page, the unsubscribe page)."""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from dealflow.settings import Settings


@functools.cache
def _environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(enabled_extensions=("html.j2",)),
    )


def page_env(settings: Settings) -> Environment:
    """The page templates' environment (autoescaped ``*.html.j2``), built once per folder."""
    return _environment(Path(settings.templates_dir))
