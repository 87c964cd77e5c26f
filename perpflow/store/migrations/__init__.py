"""Alembic migration environment of the market database (``env.py``, ``versions/``).

Applied by ``perpflow.store.migrate`` (no ``alembic.ini`` needed); ``alembic.ini`` at the
repository root points the ``alembic`` command line here too.
"""
