"""Contract rendering in warm processes of their own, beside the worker.

Why: WeasyPrint is pure Python and holds the GIL for most of a render (0.2-1 s a document on
the 2-core machine). Run in the worker's threads (``asyncio.to_thread``), every render stalled
the worker's event loop, and with it every other workflow task and activity of the process;
and the documents of a deal rendered one after another on one core. Here each render runs in
one of ``processes`` renderer processes (``DEALFLOW_RENDER_PROCESSES``), each holding one
:class:`~dealflow.rendering.DocumentRenderer` whose fonts were loaded at start, so a deal's
documents render side by side on both cores and the worker process stays responsive.

The bytes are the same: a render depends only on the template, the context, the title and the
``created`` time (see :mod:`dealflow.rendering`), wherever it runs, so the checksums the approvers
see, the stored files and the envelope's documents agree as before.

Why not ``multiprocessing`` / ``ProcessPoolExecutor``: with ``spawn`` (the only safe start method
in a process with the SDK's threads running) every child re-imports the parent's ``__main__``,
and for ``python worker.py`` that is the whole worker (4.6 s and 185 MB a renderer instead of
1.4 s and 62 MB). A renderer here is ``python -m dealflow.render_pool``, which imports the
renderer only, and speaks length-prefixed pickles over its stdin and stdout (our own two
processes at both ends; nothing from outside crosses this pipe unpickled).

Failure shapes:

- A template or resource problem raises :class:`~dealflow.rendering.RenderError` in the child;
  it comes back and is raised in the worker unchanged.
- A renderer that dies (out of memory, a crash in a C library) fails that render with
  :class:`RendererLost`, a retryable error; the next render starts a fresh renderer.
- A renderer that does not start fails the render that started it with :class:`RendererLost`,
  and wakes the renders waiting for a renderer: one of them starts the next, so none waits on a
  renderer that will not come (until the activity's own timeout).
- A render cancelled mid-way (the activity was) kills its renderer: its answer would otherwise
  be read as the answer to the next request.
- A killed worker leaves no renderer behind: a renderer exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from dealflow.rendering import DocumentRenderer, RenderedDocument, RenderError

__all__ = ["RenderPool", "RendererLost"]

log = logging.getLogger(__name__)

_HEADER = 8  # bytes of a frame's length prefix
_READY = b"ready"
# A renderer that is not up within this long (importing WeasyPrint, loading fonts: ~1.5 s on
# the 2-core machine, several times that under load) is taken as broken.
_START_TIMEOUT_SECONDS = 60.0
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Renderers run at their worker's CPU priority. Tried and measured: 10 nice levels below it
# asked the approvers sooner under load (stage-0 p99 4.5 -> 2.4 s in the approvals bench), but
# on a saturated host a render then starves: in the chaos test (a worker killed every 3-6 s) an
# order form's render outlived ten workers in a row and the deal parked. A render is on the way
# to the envelope, so it must keep its share of the CPU.


class RendererLost(RuntimeError):
    """A renderer process died mid-render; a retry renders in a fresh one."""


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(_HEADER, "big") + data


class _Renderer:
    """One renderer process and its pipes. Used by one render at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, templates_dir: Path, python: str) -> _Renderer:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "dealflow.render_pool",
            str(templates_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        renderer = cls(proc)
        try:
            ready = await asyncio.wait_for(renderer._read(), _START_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            renderer.kill()
            raise RendererLost(f"a renderer process did not start: {exc!r}") from exc
        except BaseException:
            renderer.kill()
            raise
        if ready != _READY:
            renderer.kill()
            raise RendererLost("a renderer process answered its start with something else")
        return renderer

    async def _read(self) -> bytes:
        assert self.proc.stdout is not None
        header = await self.proc.stdout.readexactly(_HEADER)
        return await self.proc.stdout.readexactly(int.from_bytes(header, "big"))

    async def call(self, request: tuple[Any, ...]) -> RenderedDocument:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_frame(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)))
        await self.proc.stdin.drain()
        ok, value = pickle.loads(await self._read())  # noqa: S301 - our own renderer's answer
        if not ok:
            raise value
        assert isinstance(value, RenderedDocument)
        return value

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class RenderPool:
    """Renders documents in up to ``processes`` warm renderer processes. One per worker.

    A render takes an idle renderer, or starts one if fewer than ``processes`` are alive, or
    waits until either is true again: a renderer coming back, or one lost or failing to start
    (so a render never waits on a renderer that will not come). Taking one is synchronous
    after the wait, so a render cancelled while it waits takes nothing with it.
    """

    def __init__(
        self, templates_dir: Path, processes: int, *, python: str = sys.executable
    ) -> None:
        if processes < 1:
            raise ValueError("a render pool needs at least one process")
        self.templates_dir = templates_dir
        self.processes = processes
        self.python = python  # the interpreter a renderer runs in (tests: one that fails)
        self._idle: deque[_Renderer] = deque()
        self._alive = 0  # renderers started (idle, busy or starting) and not lost
        self._changed = asyncio.Event()  # set whenever a renderer comes back or is lost
        self._starting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start every renderer in the background; without a running loop, the first render
        starts one."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.warm_up())

    async def ready(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until the renderers started by :meth:`start` are
        up. A renderer that did not start is logged, not raised: the first render tries again."""
        if self._starting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starting), timeout)

    async def warm_up(self) -> None:
        """Start renderers until ``processes`` are up, each with its fonts loaded."""
        missing = self.processes - self._alive
        self._alive += missing
        started = await asyncio.gather(
            *(_Renderer.start(self.templates_dir, self.python) for _ in range(missing)),
            return_exceptions=True,
        )
        for renderer in started:
            if isinstance(renderer, _Renderer):
                self._put(renderer)
            else:
                self._alive -= 1
                self._changed.set()
                log.warning("a renderer process did not start: %r", renderer)

    async def _take(self) -> _Renderer:
        while True:
            if self._idle:
                return self._idle.popleft()
            if self._alive < self.processes:
                self._alive += 1
                try:
                    return await _Renderer.start(self.templates_dir, self.python)
                except BaseException:
                    self._alive -= 1
                    self._changed.set()
                    raise
            # No await between the checks above and this clear: no change can be missed.
            self._changed.clear()
            await self._changed.wait()

    def _put(self, renderer: _Renderer) -> None:
        self._idle.append(renderer)
        self._changed.set()

    async def render(
        self, template: str, context: Mapping[str, Any], *, title: str, created: datetime
    ) -> RenderedDocument:
        """Render ``template`` to HTML and PDF in a renderer process (same bytes as in-process)."""
        renderer = await self._take()
        try:
            document = await renderer.call((template, dict(context), title, created))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._lose(renderer)
            raise RendererLost(f"a renderer process died while rendering {template}") from exc
        except BaseException as exc:
            if isinstance(exc, Exception) and renderer.proc.returncode is None:
                self._put(renderer)  # the render's own error: the renderer is fine
            else:
                self._lose(renderer)  # cancelled mid-call: its answer is still on the pipe
            raise
        self._put(renderer)
        return document

    def _lose(self, renderer: _Renderer) -> None:
        renderer.kill()
        self._alive -= 1
        self._changed.set()

    def pids(self) -> list[int]:
        """The idle renderers' process ids (tests)."""
        return [r.proc.pid for r in self._idle]

    async def close(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        while self._idle:
            renderer = self._idle.popleft()
            renderer.kill()
            await renderer.proc.wait()
        self._alive = 0


def _serve(templates_dir: str, requests: BinaryIO, answers: BinaryIO) -> None:
    """The renderer process: answer render requests until the worker closes our stdin."""
    renderer = DocumentRenderer(Path(templates_dir))
    renderer.warm_up()
    answers.write(_frame(_READY))
    answers.flush()
    while True:
        header = requests.read(_HEADER)
        if len(header) < _HEADER:
            return  # the worker is gone (or closed us): nothing more to do
        payload = requests.read(int.from_bytes(header, "big"))
        template, context, title, created = pickle.loads(payload)  # noqa: S301 - from our worker
        try:
            answer: tuple[bool, Any] = (
                True,
                renderer.render(template, context, title=title, created=created),
            )
        except Exception as exc:  # noqa: BLE001 - every render error goes back to the worker
            answer = (False, exc)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: say what it was
            data = pickle.dumps((False, RenderError(f"{template}: {answer[1]!r}")))
        answers.write(_frame(data))
        answers.flush()


if __name__ == "__main__":
    # Our stdout is the answer pipe: anything a library prints goes to stderr instead.
    answer_pipe = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(sys.argv[1], sys.stdin.buffer, answer_pipe)
    except BrokenPipeError:
        pass  # the worker went away while we answered (killed): nobody is left to tell
    os._exit(0)  # no flush at exit into a pipe whose reader may be gone
