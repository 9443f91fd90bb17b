"""A worker's "fraction done" message (search, diff).

Workers post these far faster than frames are drawn; ``can_replace`` lets
Textual collapse a queue of them into the latest (Toolong's technique)."""

from __future__ import annotations

from textual.message import Message


class Progress(Message):
    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self)
