"""Helpers for testing peer-ring and applications built on it (real servers, fakes)."""
