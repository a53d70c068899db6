"""Google Gemini Live provider."""
