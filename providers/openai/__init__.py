"""OpenAI Realtime provider."""
