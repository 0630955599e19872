"""Replicated streams with consumer groups (Redis Streams semantics) on the public app API."""
