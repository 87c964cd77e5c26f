"""Alembic revisions of the market database, oldest first (``NNNN_name.py``)."""
