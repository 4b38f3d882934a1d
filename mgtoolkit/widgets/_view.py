"""Shared view helpers: offline resources, figure names, level colours.

Everything here imports panel/holoviews inside functions, so the logic classes stay importable
and testable without them loaded.
"""

from __future__ import annotations

import contextlib
import functools
import html
import math
import time
import uuid

__all__ = [
    "LEVEL_COLORS",
    "LiveText",
    "Slot",
    "comm_messages_on_kernel_thread",
    "dashboard_link_through_jupyter",
    "extension",
    "holoviews",
    "inline_holoviews_stylesheets",
    "level_color",
    "live_layout",
    "live_update",
    "named",
]

#: One colour per multigrid level (level 1 first); colour-blind friendly (Okabe–Ito).
LEVEL_COLORS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def level_color(level: int) -> str:
    """The colour of ``level`` (1 = finest) in every mgtoolkit plot."""
    return LEVEL_COLORS[(int(level) - 1) % len(LEVEL_COLORS)]


def dashboard_link_through_jupyter(environ=None) -> str | None:
    """Inside a Jupyter kernel, point every dask cluster's dashboard link at JupyterLab's
    proxy (jupyter-server-proxy): ``{JUPYTERHUB_SERVICE_PREFIX or /}proxy/{port}/status``.

    A dashboard on a compute node or bound to 127.0.0.1 is not reachable from the user's
    browser; through the proxy it is, on a login node and under JupyterHub alike. Sets dask's
    ``distributed.dashboard.link`` and returns it; does nothing (None) outside Jupyter or when
    the user configured a link already (``DASK_DISTRIBUTED__DASHBOARD__LINK``).
    """
    import os

    import dask

    env = os.environ if environ is None else environ
    if "JPY_PARENT_PID" not in env and "JPY_SESSION_NAME" not in env:
        return None  # not a kernel started by a Jupyter server
    if "DASK_DISTRIBUTED__DASHBOARD__LINK" in env:
        return None
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    link = prefix.rstrip("/") + "/proxy/{port}/status"
    dask.config.set({"distributed.dashboard.link": link})
    return link


def extension() -> None:
    """Load panel and the holoviews bokeh backend with resources inline; in Jupyter, open
    dask dashboards through JupyterLab's proxy (:func:`dashboard_link_through_jupyter`).

    panel loads its JavaScript from a CDN by default, so plots stay blank offline (CI,
    air-gapped HPC portals); inline resources render everywhere. Call once per notebook,
    before displaying any widget or starting a cluster.
    """
    import holoviews as hv
    import panel as pn

    pn.extension(inline=True)
    hv.extension("bokeh", inline=True)
    inline_holoviews_stylesheets()
    comm_messages_on_kernel_thread()
    dashboard_link_through_jupyter()


def comm_messages_on_kernel_thread() -> None:
    """Handle what panel's notebook outputs send to the kernel on the kernel's own thread.

    JupyterLab (4.4 and later, setting *Kernel Comms over subshells*, on by default) sends
    comm messages to kernel subshells (ipykernel 7), each on its own thread. panel handles
    them as if nothing else ran: while it applies a page's message it holds and then
    releases the output's document, dropping the changes the kernel's thread has just made
    there (a periodic refresh: the page then lacks models that later changes name,
    ``reference … isn't known``), and both threads send on the same comm at once (the page
    then reads parts of two messages as one, ``s is not iterable``). A live view stops
    following, and a button's callback runs beside the refresh. This hands each message to
    the kernel's event loop, in order, as a kernel without subshells does; an error in its
    handling (a callback that raised) is shown in the output as panel shows it. Idempotent;
    a no-op outside a running event loop (a script).
    """
    import asyncio
    import threading

    from panel.viewable import MimeRenderMixin

    original = MimeRenderMixin._on_msg
    if getattr(original, "_mgtoolkit_kernel_thread", False):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    kernel_thread = threading.current_thread()

    def handle(self, ref, manager, msg):
        try:
            original(self, ref, manager, msg)
        except Exception as exc:  # shown in the output, as pyviz_comms shows a failed callback
            self._on_error(ref, exc)

    @functools.wraps(original)
    def on_msg(self, ref, manager, msg):
        if threading.current_thread() is kernel_thread:
            return original(self, ref, manager, msg)
        loop.call_soon_threadsafe(handle, self, ref, manager, msg)

    on_msg._mgtoolkit_kernel_thread = True
    MimeRenderMixin._on_msg = on_msg


def inline_holoviews_stylesheets() -> None:
    """Give holoviews' own notebook output the stylesheets panel inlines for panel objects.

    A holoviews object shown as a cell's result (``hv.Layout(...)``) is rendered by holoviews'
    bokeh renderer through panel, but without the step that panel's ``_repr_mimebundle_``
    takes with inline resources: its models keep links to panel's CSS on cdn.holoviz.org
    (loading, list panel, theme) — failed requests and unstyled figures offline, and again
    each time the saved notebook is opened. This wraps the two panel functions that
    holoviews' renderer calls so that they inline those stylesheets first, as panel does.
    Idempotent; a no-op when panel's resources are not inline.
    """
    import holoviews.plotting.renderer as hv_renderer

    if getattr(hv_renderer.render_model, "_mgtoolkit_inline", False):
        return
    from bokeh.models import UIElement
    from panel import config
    from panel.io.notebook import patch_inline_stylesheets

    def inlined(render):
        def wrapper(model, *args, **kwargs):
            if config.inline:
                for sub in model.select({"type": UIElement}):
                    patch_inline_stylesheets(sub)
            return render(model, *args, **kwargs)

        wrapper._mgtoolkit_inline = True
        wrapper.__wrapped__ = render
        return wrapper

    hv_renderer.render_model = inlined(hv_renderer.render_model)
    hv_renderer.render_mimebundle = inlined(hv_renderer.render_mimebundle)


def holoviews():
    """The holoviews module with its bokeh backend registered (options need a backend).

    Outside a notebook (scripts, tests) nobody calls ``hv.extension``; importing the bokeh
    plotting module registers the backend without loading any notebook JavaScript.
    """
    import holoviews as hv
    import holoviews.plotting.bokeh

    return hv


def named(name: str):
    """A holoviews hook giving the bokeh figure ``name`` (tests and users find it in the page)."""

    def hook(plot, element) -> None:
        plot.state.name = name

    return hook


class Slot:
    """A place in a panel layout whose content is replaced, not edited, on every redraw.

    Setting ``Markdown.object`` (or ``HoloViews.object``) from a running notebook cell sends
    the pane's stylesheets as links to panel's CDN — failed requests and unstyled output
    offline, even with inline resources. Replacing the layout's child renders the new pane
    the way a new cell output is rendered, with inline stylesheets.
    """

    def __init__(self, obj=None, **pane_options):
        import panel as pn

        self._options = pane_options
        self.layout = pn.Column(margin=0)
        if obj is not None:
            self.show(obj)

    def show(self, obj) -> None:
        """Display ``obj`` (a holoviews object, a panel object, or text as Markdown)."""
        import panel as pn

        if isinstance(obj, str):
            obj = pn.pane.Markdown(obj, **self._options)
        elif not isinstance(obj, pn.viewable.Viewable):
            obj = pn.pane.HoloViews(obj, **self._options)
        self.layout.objects = [obj]

    def alert(self, text: str, alert_type: str = "danger") -> None:
        """Display ``text`` in a coloured alert box."""
        import panel as pn

        self.show(pn.pane.Alert(text, alert_type=alert_type))

    def clear(self) -> None:
        self.layout.objects = []

    @property
    def object(self):
        """What the current pane shows (a holoviews object or text), None when empty."""
        return self.layout.objects[0].object if self.layout.objects else None


#: How long a live view waits for a page that does not report it drawn (an output cleared
#: before it was drawn, a frontend without panel's JavaScript) before it changes anyway.
DRAW_TIMEOUT_S = 10.0


def live_layout(*objects, **params):
    """A ``pn.Column`` that knows whether the page has drawn it: ``layout.drawn``.

    A view that changes on its own (a timer, a run's events) must not change before the
    page has drawn it. In a notebook, panel sends each change over the output's comm as
    several messages. Until the kernel has opened that comm (late when it is busy with other
    cells), panel queues changes and sends them out of order once it opens; until the page
    has built the output, the page drops what arrives. A later change then names models the
    page never received (``reference … isn't known``), or the page reads the rest of a
    half-dropped message as whole ones (``s is not iterable``), and the view stops updating.

    The layout ends with an invisible mark whose page-side script reports to the kernel
    once the page takes the output's messages; ``drawn`` is False from each notebook display
    until then (or until :data:`DRAW_TIMEOUT_S` has passed with the comm open). Outside a
    notebook (``panel serve``, never displayed) it is True.
    """
    return _live_column_type()(*objects, **params)


def _comm_open(comm) -> bool:
    try:
        return comm.comm is not None  # pyviz_comms raises until the kernel has opened it
    except ValueError:
        return False


@functools.cache
def _live_column_type():
    import panel as pn
    import param
    from panel.reactive import ReactiveHTML

    class DrawnMark(ReactiveHTML):
        """Empty. Its page-side script reports the display's ``token`` in ``shown`` every
        quarter second, once panel's comm manager in the page takes the output's messages
        (its root view is indexed: before that it drops them), until the kernel answers with
        ``acked``. Each report also asks the comm manager to send at once: it holds back
        what follows a message the kernel did not answer (one sent before the kernel had
        opened the comm) for 5 s."""

        token = param.String(default="")
        shown = param.String(default="")
        acked = param.String(default="")
        _template = "<div id='mark'></div>"
        _scripts = {  # noqa: RUF012 (panel reads a class attribute)
            "render": """
                const token = data.token;
                const managers = () => model.document.roots().filter(
                  (root) => typeof root.process_events === "function");
                const indexed = (m) => m.plot_id == null
                  || (m.ns && m.ns.plot_index && m.ns.plot_index[m.plot_id] != null)
                  || (window.Bokeh !== undefined && m.plot_id in window.Bokeh.index);
                let count = 0;
                const report = () => {
                  if (data.acked === token || count++ >= 240) return;
                  if (managers().every(indexed)) {
                    data.shown = token + " " + count;
                    for (const m of managers()) setTimeout(() => m.process_events(), 0);
                  }
                  state.timer = setTimeout(report, 250);
                };
                report();
            """,
            "remove": "clearTimeout(state.timer)",
        }

    class LiveColumn(pn.Column):
        def __init__(self, *objects, **params):
            self._mark = DrawnMark(width=0, height=0, margin=0)
            super().__init__(*objects, self._mark, **params)
            self._undrawn: dict[str, tuple[float, object]] = {}  # token -> (displayed, comm)
            self._mark.param.watch(self._on_shown, "shown")

        def _on_shown(self, event) -> None:
            token = event.new.split(" ")[0]
            if self._undrawn.pop(token, None) is not None:
                self._mark.acked = token  # that page has drawn it: changes reach it whole

        def _get_model(self, doc, root=None, parent=None, comm=None):
            if comm is not None:  # a notebook output: its page reports when drawn
                token = uuid.uuid4().hex
                self._undrawn[token] = (time.monotonic(), comm)
                self._mark.token = token  # before the models are built: they carry it
            return super()._get_model(doc, root, parent, comm)

        @property
        def drawn(self) -> bool:
            """Whether the page has drawn every notebook display of the layout."""
            now = time.monotonic()
            return all(
                now - since > DRAW_TIMEOUT_S and _comm_open(comm)
                for since, comm in self._undrawn.values()
            )

    return LiveColumn


@contextlib.contextmanager
def live_update(viewable, model):
    """Edit bokeh models of a displayed panel object; the changes reach the browser at the end.

    Live views change only the *data* of bokeh models built once (a source's rows, a Div's
    text), never the layout: replacing panes re-sends panel's stylesheets (CDN links) and
    references models the page may not know yet. In a notebook the changes are pushed over the
    comm (``pn.io.push_notebook``); in a server session the document sends them itself.
    """
    doc = model.document
    if doc is None:  # not displayed yet
        yield
        return
    held = doc.callbacks.hold_value
    doc.hold("combine")
    try:
        yield
    finally:
        import panel as pn

        pn.io.push_notebook(viewable)
        if held:
            doc.hold(held)
        else:
            doc.unhold()


class LiveText:
    """A line of text (a bokeh Div) whose content changes in place while it is displayed."""

    def __init__(self, text: str = "", **div_options):
        import panel as pn
        from bokeh.models import Div

        self.div = Div(text=self._html(text), sizing_mode="stretch_width", **div_options)
        self.pane = pn.pane.Bokeh(self.div, sizing_mode="stretch_width", margin=(0, 10))
        self.text = text

    @staticmethod
    def _html(text: str) -> str:
        return "<br>".join(html.escape(line) for line in str(text).split("\n"))

    def set(self, text: str) -> None:
        """Show ``text`` (lines separated by newlines); a no-op when it did not change."""
        if text == self.text:
            return
        self.text = text
        with live_update(self.pane, self.div):
            self.div.text = self._html(text)


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
