"""Webhook signatures: what the sender signs, the reference verifier accepts, and nothing else;
interoperable with the Standard Webhooks reference library."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from services.webhooks import (
    WebhookVerificationError,
    new_secret,
    secret_key,
    signature_headers,
    verify,
)

SECRET = new_secret()
NOW = 1_800_000_000


def test_a_signed_delivery_verifies_and_yields_its_idempotency_key() -> None:
    body = b'{"booking_id": "b-1", "event": "booking.created"}'
    headers = signature_headers([SECRET], "bk_1_created", body, timestamp=NOW)
    assert verify([SECRET], headers, body, now=NOW + 10) == "bk_1_created"
    upper = {name.upper(): value for name, value in headers.items()}
    assert verify([SECRET], upper, body, now=NOW) == "bk_1_created"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b + b" "), "bad_signature"),
        (lambda h, b: ({**h, "webhook-id": "other"}, b), "bad_signature"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b), "bad_signature"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW - 301)}, b), "stale"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 301)}, b), "future"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "bad_timestamp"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
         "missing_header"),
    ],
)
def test_tampering_replays_and_missing_headers_are_refused(change: object, reason: str) -> None:
    body = b'{"n": 1}'
    headers = signature_headers([SECRET], "msg_1", body, timestamp=NOW)
    changed_headers, changed_body = change(headers, body)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError) as error:
        verify([SECRET], changed_headers, changed_body, now=NOW)
    assert error.value.reason == reason


def test_a_stale_delivery_is_refused_even_when_correctly_signed() -> None:
    body = b"{}"
    headers = signature_headers([SECRET], "msg_2", body, timestamp=NOW - 3600)
    with pytest.raises(WebhookVerificationError, match="older than 300 s"):
        verify([SECRET], headers, body, now=NOW)


def test_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    old, new = SECRET, new_secret()
    body = b'{"rotating": true}'
    headers = signature_headers([new, old], "msg_3", body, timestamp=NOW)
    assert verify([old], headers, body, now=NOW) == "msg_3"  # a receiver not yet updated
    assert verify([new], headers, body, now=NOW) == "msg_3"  # a receiver already updated
    after = signature_headers([new], "msg_4", body, timestamp=NOW)
    with pytest.raises(WebhookVerificationError):
        verify([old], after, body, now=NOW)  # the old secret is retired


@pytest.mark.parametrize("secret", ["abc", "whsec_not base64!", "whsec_" + "QUJD"])
def test_bad_secrets_are_named(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        secret_key(secret)


@given(body=st.binary(max_size=2000), position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_any_body_round_trips_and_any_changed_byte_fails(
    body: bytes, position: int, flip: int
) -> None:
    headers = signature_headers([SECRET], "msg_h", body, timestamp=NOW)
    assert verify([SECRET], headers, body, now=NOW) == "msg_h"
    if body:
        i = position % len(body)
        changed = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
        with pytest.raises(WebhookVerificationError):
            verify([SECRET], headers, changed, now=NOW)


def test_the_standard_webhooks_reference_library_agrees() -> None:
    """Receivers may use the Standard Webhooks libraries instead of ours."""
    body = b'{"booking_id": "b-9"}'
    headers = signature_headers([SECRET], "msg_ref", body, timestamp=NOW)
    reference = Webhook(SECRET)
    assert reference.sign("msg_ref", _datetime(NOW), body.decode()) == headers["webhook-signature"]
    theirs = reference.sign("msg_theirs", _datetime(NOW), body.decode())
    ours = verify([SECRET], {"webhook-id": "msg_theirs", "webhook-timestamp": str(NOW),
                             "webhook-signature": theirs}, body, now=NOW)
    assert ours == "msg_theirs"
    assert base64.b64decode(SECRET.removeprefix("whsec_"))  # the same secret format


def _datetime(seconds: int):  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC)
