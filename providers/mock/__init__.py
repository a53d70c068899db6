"""In-process mock realtime provider."""
