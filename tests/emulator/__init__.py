"""Tests of the local exchange emulator (real ccxt over HTTP on 127.0.0.1)."""
