"""Error classes at the exchange boundary: what a retry may fix is transient, with the venue's
Retry-After; what it cannot fix is permanent; a payload ccxt cannot parse is a PayloadError."""

from __future__ import annotations

import aiohttp
import ccxt
import pytest

from perpflow.exchanges import (
    PayloadError,
    PermanentExchangeError,
    TransientExchangeError,
    call,
    retry_after_seconds,
)


class FakeClient:
    def __init__(self, exc, json_body=None, headers=None):
        self.exc, self.last_json_response, self.last_response_headers = exc, json_body, headers

    async def fetch_tickers(self, *args):
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "json_body", "expected"),
    [
        (ccxt.RequestTimeout("slow"), None, TransientExchangeError),
        (ccxt.BadResponse("truncated body"), None, TransientExchangeError),
        (ccxt.NullResponse("empty body"), None, TransientExchangeError),
        (ccxt.OnMaintenance("maintenance"), None, TransientExchangeError),
        (ConnectionResetError("reset by peer"), None, TransientExchangeError),
        (aiohttp.ClientPayloadError("response payload is not completed"), None, TransientExchangeError),
        (TypeError("string indices must be integers"), None, TransientExchangeError),  # HTML at 200
        (TypeError("unsupported operand"), {"result": []}, PayloadError),
        (ccxt.BadSymbol("no such market"), None, PermanentExchangeError),
        (ccxt.NotSupported("fetchTickers"), None, PermanentExchangeError),
        (ccxt.AuthenticationError("bad key"), None, PermanentExchangeError),
    ],
)
async def test_error_classes(exc, json_body, expected):
    client = FakeClient(exc, json_body)
    with pytest.raises(expected) as raised:
        await call("v", "fetch_tickers", client.fetch_tickers)
    assert raised.value.error_class == type(exc).__name__
    assert raised.value.transient is (expected is TransientExchangeError)


async def test_rate_limit_error_carries_retry_after():
    client = FakeClient(ccxt.RateLimitExceeded("429"), headers={"Retry-After": "6"})
    with pytest.raises(TransientExchangeError) as raised:
        await call("v", "fetch_tickers", client.fetch_tickers)
    assert raised.value.retry_after == 6.0


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds(None) is None
