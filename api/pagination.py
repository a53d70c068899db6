from __future__ import annotations

from typing import Any

from rest_framework.pagination import CursorPagination, LimitOffsetPagination


class Page(LimitOffsetPagination):
    """``?limit=`` (default 50, at most 200) and ``?offset=``; ``count``, ``next``,
    ``previous`` and ``results`` in the body."""

    default_limit = 50
    max_limit = 200
    max_offset = 10**12  # beyond any real table; a larger one would overflow the database

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), self.max_offset)


class EventCursor(CursorPagination):
    """Room events in index order: an opaque ``?cursor=``; stable under appends."""

    ordering = "index"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500
