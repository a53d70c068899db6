"""Tenants, members, API keys, rooms, channel bindings and the room timeline."""
