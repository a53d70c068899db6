"""Fakes of the realtime providers' wire protocols, for tests."""
