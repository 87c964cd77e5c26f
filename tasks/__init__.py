"""Prefect task wrappers: retry, cache and timeout policy around the ``perpflow`` mechanism."""
