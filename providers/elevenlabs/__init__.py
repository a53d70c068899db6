"""ElevenLabs Agents (Conversational AI) provider."""
