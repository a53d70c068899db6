"""Realtime AI providers: one package per vendor, plus the credentials they use."""
