"""What every panel shares: showing itself, running its pure method from the sliders, showing errors.

The pattern, so the same code runs with and without a browser:

- a panel holds plain Python state and a pure method that does the work (``run`` or ``update``);
- the sliders and buttons only call that method with ``values()``; an exception raised there is shown
  in the panel (ipywidgets would otherwise swallow it silently) and the panel stays usable;
- a notebook cell can call the same method with ``panel.values()`` and assert on the result, which is
  how CI (no frontend, buttons never fire) tests the real path.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W
from IPython.display import clear_output, display

__all__ = ["Panel", "in_notebook", "error_html", "show_in", "divisors", "nearest_heads", "max_lr_slider"]


def in_notebook() -> bool:
    """True inside an IPython kernel/shell; outside, displaying would only print reprs to stdout."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return False
    return get_ipython() is not None


def error_html(exc: BaseException) -> str:
    """An exception as one red line: its type and the message (which names the bad value and the fix)."""
    return f"<span style='color:#c00'>{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"


def show_in(output: W.Output, *objects: Any) -> None:
    """Replace what ``output`` shows by ``objects`` (figures, text), without a flicker; no-op outside IPython."""
    if not in_notebook():
        return
    with output:
        clear_output(wait=True)
        for obj in objects:
            display(obj)


def divisors(n: int, limit: int = 32) -> list[int]:
    """Head counts that split ``n`` channels evenly (up to ``limit``): ``divisors(192) -> [1, 2, 3, 4, 6, 8, ...]``."""
    return [h for h in range(1, min(n, limit) + 1) if n % h == 0]


def nearest_heads(embedding_size: int, wanted: int, limit: int = 16) -> int:
    """The valid head count closest to ``wanted`` (ties: the smaller), so a slider never offers a bad pair."""
    return min(divisors(embedding_size, limit), key=lambda h: (abs(h - wanted), h))


def max_lr_slider(value: float, **kwargs: Any) -> W.FloatLogSlider:
    """The one ``max_lr`` slider of the course: log scale from 3e-5 to 3e-2, in quarter decades."""
    return W.FloatLogSlider(
        value=value, base=10, min=-4.5, max=-1.5, step=0.25, readout_format=".1e", description="max_lr", **kwargs
    )


class Panel:
    """Base of the notebook panels. Subclasses set ``widget`` (the tree to show) and ``message`` (an
    ``ipywidgets.HTML`` where errors appear), and implement ``values()``."""

    widget: W.Widget
    message: W.HTML

    def _ipython_display_(self) -> None:
        display(self.widget)

    def values(self) -> dict[str, Any]:
        """The controls' current values, as keyword arguments for the panel's pure method."""
        raise NotImplementedError

    def guarded(self, method: Callable[..., Any]) -> Any:
        """Call ``method(**self.values())``; on an exception show it in ``message`` and return None.

        Used by every slider and button callback: the learner sees the same sentence a plain call
        would raise, and the next change or click works as usual.
        """
        try:
            return method(**self.values())
        except Exception as exc:  # noqa: BLE001 - shown to the learner, not hidden
            self.message.value = error_html(exc)
            return None
