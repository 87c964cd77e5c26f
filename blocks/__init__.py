"""Prefect Block types for perpflow: exchange accounts/config and the market database."""

from blocks.exchange import ExchangeBlock
from blocks.database import MarketDatabase

__all__ = ["ExchangeBlock", "MarketDatabase"]
