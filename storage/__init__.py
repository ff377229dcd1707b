"""Durable job storage: the `JobStore` interface, the records it keeps, and its SQLite implementation."""
