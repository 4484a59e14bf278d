"""The workflow as data: JSON <-> pydantic models, port specs, validation, the DAG, hashing.
Imports neither node code nor the runtime."""
