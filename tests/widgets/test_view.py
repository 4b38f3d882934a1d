"""The kernel side of :func:`live_layout`: when a live view may change.

The page side (the mark's script reporting in a real JupyterLab page, and what goes wrong
without the wait) is tested in tests/browser/test_live_views_in_lab.py.
"""

from __future__ import annotations

import asyncio
import threading

import panel as pn
from pyviz_comms import Comm

from mgtoolkit.widgets import _view
from mgtoolkit.widgets._view import comm_messages_on_kernel_thread, live_layout


def test_a_view_that_is_not_in_a_notebook_is_drawn():
    layout = live_layout(pn.pane.Markdown("text"))
    assert layout.drawn  # never displayed
    layout.get_root()  # served (panel serve): the server sends whole messages in order
    assert layout.drawn
    assert layout.objects[0].object == "text"  # the mark comes last


def test_each_notebook_display_waits_for_its_page():
    layout = live_layout(pn.pane.Markdown("text"))
    layout.get_root(comm=Comm())
    first = layout._mark.token
    layout.get_root(comm=Comm())  # displayed again before the first page reported
    second = layout._mark.token
    assert first != second and not layout.drawn

    layout._mark.shown = f"{second} 0"  # what the second page's script sends once built
    assert not layout.drawn and layout._mark.acked == second  # the first page is still due
    layout._mark.shown = f"{second} 1"  # a report sent before the answer arrived
    layout._mark.shown = "0123 4"  # a token this layout never gave out
    assert not layout.drawn
    layout._mark.shown = f"{first} 7"
    assert layout.drawn and layout._mark.acked == first


def test_a_page_that_never_reports_is_waited_for_until_the_timeout_with_its_comm_open(
    monkeypatch,
):
    layout = live_layout(pn.pane.Markdown("text"))
    comm = Comm()
    layout.get_root(comm=comm)  # e.g. an output cleared before the page drew it
    monkeypatch.setattr(_view, "DRAW_TIMEOUT_S", 0.0)
    assert not layout.drawn  # changes now would wait in panel's queue and overtake each other
    comm._comm = object()  # what pyviz_comms holds once the kernel has opened the comm
    assert layout.drawn


def test_comm_messages_from_subshell_threads_run_on_the_kernel_thread_in_order(monkeypatch):
    """JupyterLab sends comm messages to kernel subshells (threads); panel's handler must see
    them on the kernel's thread, in the order they came, as without subshells."""
    from panel.viewable import MimeRenderMixin

    seen = []

    def handler(self, ref, manager, msg):
        seen.append((threading.current_thread(), msg))

    monkeypatch.setattr(MimeRenderMixin, "_on_msg", handler)  # restored after the test

    async def kernel():
        comm_messages_on_kernel_thread()
        comm_messages_on_kernel_thread()  # idempotent: wrapped once
        subshells = [
            threading.Thread(
                target=lambda k=k: [
                    MimeRenderMixin._on_msg(None, "ref", None, (k, i)) for i in range(3)
                ]
            )
            for k in range(2)
        ]
        for t in subshells:
            t.start()
            t.join()
        MimeRenderMixin._on_msg(None, "ref", None, "kernel")  # on the kernel thread: at once
        assert seen[-1][1] == "kernel" and len(seen) == 1
        await asyncio.sleep(0.05)

    asyncio.run(kernel())
    assert all(thread is threading.main_thread() for thread, _ in seen)
    assert [msg for _, msg in seen] == ["kernel", (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_an_error_in_a_handed_over_message_is_shown_where_panel_shows_it(monkeypatch):
    from panel.viewable import MimeRenderMixin

    shown = []

    def handler(self, ref, manager, msg):
        raise RuntimeError(f"callback failed on {msg}")

    def on_error(self, ref, error):  # panel writes the traceback into the output of ``ref``
        shown.append((threading.current_thread(), ref, str(error)))

    monkeypatch.setattr(MimeRenderMixin, "_on_msg", handler)
    monkeypatch.setattr(MimeRenderMixin, "_on_error", on_error)

    async def kernel():
        comm_messages_on_kernel_thread()
        view = MimeRenderMixin()
        subshell = threading.Thread(
            target=lambda: MimeRenderMixin._on_msg(view, "r1", None, "click")
        )
        subshell.start()
        subshell.join()
        await asyncio.sleep(0.05)

    asyncio.run(kernel())
    assert shown == [(threading.main_thread(), "r1", "callback failed on click")]
