"""The render pool: the same bytes as rendering in-process, errors that cross, a lost renderer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from dealflow.render_pool import RendererLost, RenderPool
from dealflow.rendering import TEMPLATES_DIR, DocumentRenderer, RenderError
from dealflow.settings import PROJECT_ROOT
from tests.unit.test_rendering import make_context
from tests.utils.polling import eventually

CREATED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
ORDER_FORM = "contracts/order_form.html.j2"


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[RenderPool]:
    pool = RenderPool(TEMPLATES_DIR, processes=2)
    await pool.warm_up()
    yield pool
    await pool.close()


async def test_a_pooled_render_has_the_bytes_of_an_in_process_render(pool: RenderPool) -> None:
    context = make_context()
    here = DocumentRenderer().render(ORDER_FORM, context, title="Order Form", created=CREATED)
    there = await pool.render(ORDER_FORM, context, title="Order Form", created=CREATED)
    assert there.pdf == here.pdf
    assert (there.pdf_sha256, there.html_sha256) == (here.pdf_sha256, here.html_sha256)


async def test_documents_render_side_by_side_in_two_processes(pool: RenderPool) -> None:
    context = make_context()
    kinds = ["order_form", "executive_summary", "msa", "dpa"]
    docs = await asyncio.gather(
        *(pool.render(f"contracts/{k}.html.j2", context, title=k, created=CREATED) for k in kinds)
    )
    assert [d.template for d in docs] == [f"contracts/{k}.html.j2" for k in kinds]
    assert all(d.pdf.startswith(b"%PDF-") for d in docs)


async def test_a_template_error_crosses_the_process_boundary(pool: RenderPool) -> None:
    with pytest.raises(RenderError, match="contracts/missing.html.j2"):
        await pool.render("contracts/missing.html.j2", {}, title="x", created=CREATED)


async def test_a_renderer_that_dies_is_replaced_and_the_next_render_works() -> None:
    pool = RenderPool(TEMPLATES_DIR, processes=1)
    await pool.warm_up()
    try:
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RendererLost):
            await pool.render(ORDER_FORM, make_context(), title="Order Form", created=CREATED)
        doc = await pool.render(ORDER_FORM, make_context(), title="Order Form", created=CREATED)
        assert doc.pdf.startswith(b"%PDF-")
        assert pool.pids() != [pid]
    finally:
        await pool.close()


async def test_a_render_waiting_on_renderers_that_fail_to_start_fails_instead_of_hanging() -> None:
    # Every renderer exits at once (the interpreter is /bin/false). The render below is asked
    # while the pool's warm-up is still starting them: it must hear of the failure and fail
    # itself (retryable), not wait for a renderer that will never come back.
    pool = RenderPool(TEMPLATES_DIR, processes=2, python="/bin/false")
    pool.start()
    try:
        with pytest.raises(RendererLost, match="did not start"):
            await asyncio.wait_for(
                pool.render(ORDER_FORM, make_context(), title="Order Form", created=CREATED),
                timeout=30,
            )
    finally:
        await pool.close()


async def test_ready_waits_for_the_renderers_started_in_the_background() -> None:
    pool = RenderPool(TEMPLATES_DIR, processes=2)
    pool.start()
    try:
        assert pool.pids() == []
        await pool.ready(timeout=60)
        assert len(pool.pids()) == 2
    finally:
        await pool.close()


async def test_a_render_cancelled_mid_way_does_not_answer_the_next_one() -> None:
    pool = RenderPool(TEMPLATES_DIR, processes=1)
    await pool.warm_up()
    try:
        context = make_context()
        first = asyncio.ensure_future(
            pool.render("contracts/msa.html.j2", context, title="MSA", created=CREATED)
        )

        async def busy() -> bool:  # the render holds the only renderer: its request is out
            return not pool.pids()

        await eventually(busy, timeout=10, what="the first render to take the renderer")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        doc = await pool.render(ORDER_FORM, context, title="Order Form", created=CREATED)
        assert doc.template == ORDER_FORM
    finally:
        await pool.close()


async def test_renderers_exit_when_the_worker_that_started_them_is_killed(tmp_path) -> None:
    # A stand-in worker: starts a pool, writes its renderers' pids, then waits to be killed.
    pids_file = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import asyncio, pathlib, time
        from dealflow.render_pool import RenderPool
        from dealflow.rendering import TEMPLATES_DIR

        async def main():
            pool = RenderPool(TEMPLATES_DIR, processes=2)
            await pool.warm_up()
            pids = pool.pids()
            pathlib.Path({str(pids_file)!r}).write_text(" ".join(map(str, pids)))
            await asyncio.Event().wait()  # until killed

        asyncio.run(main())
        """
    )
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=os.getcwd())
    try:

        async def written() -> str:
            return pids_file.read_text() if pids_file.exists() else ""

        await eventually(written, timeout=60, what="the renderers' pids")
        children = [int(p) for p in pids_file.read_text().split()]
        assert len(children) == 2 and all(_alive(p) for p in children)
        worker.kill()
        await asyncio.wait_for(worker.wait(), timeout=10)

        async def all_gone() -> bool:
            return not any(_alive(p) for p in children)

        await eventually(all_gone, timeout=30, what="the orphaned renderers to exit")
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_the_worker_process_starts_without_weasyprint():
    """Only renderer processes lay out PDFs: the worker (and what it imports to build contexts
    and run activities) leaves WeasyPrint, about a second of CPU to import, to them."""
    script = "import sys, worker; print(sorted(m for m in sys.modules if 'weasyprint' in m))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
