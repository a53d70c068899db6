"""xAI Grok Voice Agent realtime provider."""
