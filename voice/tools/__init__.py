"""Handlers for operator-defined tools (issue 7): the HTTPS webhook in :mod:`.webhook`."""
