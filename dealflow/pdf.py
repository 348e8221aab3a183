"""HTML to PDF with WeasyPrint, the one module that imports it.

WeasyPrint costs about a second of CPU to import (Pango, fontconfig, its CSS tables). Only the
processes that lay out PDFs load it: ``DocumentRenderer`` (dealflow/rendering.py) imports this
module when it is built, in each of the worker's renderer processes (dealflow/render_pool.py).
The worker process itself never renders, so it starts without it: a worker restart (a deploy,
a crash) polls sooner and spends less of the machine doing so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from weasyprint import HTML, URLFetcher
from weasyprint.urls import FatalURLFetchingError

from dealflow.rendering import RenderError


class LocalOnlyFetcher(URLFetcher):
    """Serves files under the templates folder and ``data:`` URLs; refuses everything else.

    Built with ``fail_on_errors=True`` so a refused or missing resource aborts the render
    (WeasyPrint would otherwise log a warning and print the contract without it).
    """

    def __init__(self, root: Path) -> None:
        super().__init__(
            allowed_protocols={"file", "data"}, allow_redirects=False, fail_on_errors=True
        )
        self._root = root.resolve()

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        parts = urlsplit(url)
        if parts.scheme == "file":
            path = Path(unquote(parts.path)).resolve()
            if not path.is_relative_to(self._root):
                raise ValueError(f"refusing to read {url}: outside {self._root}")
        elif parts.scheme != "data":
            raise ValueError(f"refusing to fetch {url}: contracts render without network access")
        return super().fetch(url, headers)


def write_pdf(
    html: str, *, base_url: str, fetcher: URLFetcher, title: str, stamp: str, identifier: str
) -> bytes:
    """Lay out ``html``; the PDF's title, creation and modification dates and ``/ID`` as given
    (dealflow/rendering.py explains why they make the bytes deterministic)."""
    try:
        document = HTML(
            string=html, base_url=base_url, url_fetcher=fetcher, media_type="print"
        ).render()
        document.metadata.title = title
        document.metadata.created = stamp
        document.metadata.modified = stamp
        return document.write_pdf(pdf_identifier=identifier.encode("ascii"))
    except FatalURLFetchingError as exc:
        # A BaseException in WeasyPrint; turn it into an ordinary, reportable error.
        raise RenderError(f"{title}: {exc} ({exc.__cause__})") from exc
