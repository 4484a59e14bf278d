"""Executing workflows: executor, caches, devices, events, reports, the CLI and embedding API."""
