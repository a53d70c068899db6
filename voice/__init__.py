"""The realtime voice engine and its persistent records (agents, tools, sessions)."""
