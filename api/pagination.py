from __future__ import annotations

from rest_framework.pagination import CursorPagination, LimitOffsetPagination


class Page(LimitOffsetPagination):
    """``?limit=`` (default 50, at most 200) and ``?offset=``; ``count``, ``next``,
    ``previous`` and ``results`` in the body."""

    default_limit = 50
    max_limit = 200


class EventCursor(CursorPagination):
    """Room events in index order: an opaque ``?cursor=``; stable under appends."""

    ordering = "index"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500
