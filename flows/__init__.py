"""Prefect flows: one module per job, each a thin composition of tasks."""
