"""Styles for Line-API widgets, cached until the styles really change.

Textual empties a widget's component-style cache on every ``refresh()`` --
that is, on every repaint of even one line -- and recomputing a component
style costs a walk over the CSS (about 0.3 ms each here).  A row of the
event list uses a dozen, so a single step paid several milliseconds for
styles that had not changed.  ``CachedStyles`` keeps them (and the widget's
base style, which walks the ancestors) until Textual says the styles did
change (``notify_style_update``: CSS, theme, pseudo-classes such as focus).
Translucent component colours are resolved against the widget's background
here (a partial Rich style would drop their alpha).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.style import Style

if TYPE_CHECKING:
    from textual.widget import Widget as _WidgetBase
else:
    _WidgetBase = object    # a mixin: the Widget comes later in the subclass's bases


class CachedStyles(_WidgetBase):
    """Mix into a Widget subclass before the Widget base."""

    _cached_components: dict[Any, Style] | None = None
    _cached_base: Style | None = None

    def cstyle(self, name: str) -> Style:
        """The component class's own (partial) Rich style."""
        cache = self._cached_components
        if cache is None:
            cache = self._cached_components = {}
        style = cache.get(name)
        if style is None:
            style = cache[name] = self._component_style(name)
        return style

    def _component_style(self, name: str) -> Style:
        """The partial style with its colours as Textual resolves them.

        A partial style keeps a translucent colour (``$error 8%``,
        ``$text-muted``) as the opaque colour underneath -- a solid red row,
        white "muted" text.  The full style has them blended over the
        widget's background, which is what the line is drawn on."""
        part = self.get_component_rich_style(name, partial=True)
        if part.color is None and part.bgcolor is None:
            return part
        full = self.get_component_rich_style(name)
        return part + Style(color=full.color if part.color is not None else None,
                            bgcolor=full.bgcolor if part.bgcolor is not None else None)

    def cstyle_full(self, name: str) -> Style:
        """The component class's style combined with the widget's."""
        cache = self._cached_components
        if cache is None:
            cache = self._cached_components = {}
        key = ("full", name)
        style = cache.get(key)
        if style is None:
            style = cache[key] = self.get_component_rich_style(name)
        return style

    def base_style(self) -> Style:
        style = self._cached_base
        if style is None:
            style = self._cached_base = self.rich_style
        return style

    def notify_style_update(self) -> None:
        self._cached_components = None
        self._cached_base = None
        super().notify_style_update()
