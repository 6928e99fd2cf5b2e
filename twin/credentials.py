"""Secrets gridtwin issues (API tokens, gateway keys): stored only as a hash, one rule for all of them."""

import hashlib


def hash_secret(raw: str) -> str:
    """SHA-256 of an issued secret: they are long random strings, so a fast hash suffices and lookups stay indexed."""
    return hashlib.sha256(raw.encode()).hexdigest()
