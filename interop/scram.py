"""The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as family B (Polario) carries it in JSON.

No channel binding: gs2 header `n,,`, so the final message's channel binding is `c=biws`.
Only the arithmetic lives here; the messages travel through the generated Polario client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) for stored strings: map, NFKC, refuse prohibited and bidi-mixed text."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in text
        if not stringprep.in_table_b1(ch)
    )
    out = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
        stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
        stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9, stringprep.in_table_a1,
    )
    for ch in out:
        if any(test(ch) for test in prohibited):
            raise ValueError(f"SASLprep: prohibited character {ch!r}")
    if any(stringprep.in_table_d1(ch) for ch in out):
        if any(stringprep.in_table_d2(ch) for ch in out):
            raise ValueError("SASLprep: mixed bidirectional text")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise ValueError("SASLprep: RandALCat text must start and end with RandALCat")
    return out


def escape_name(name: str) -> str:
    """The saslname of RFC 5802: `=` as `=3D`, `,` as `=2C` (after SASLprep)."""
    return saslprep(name).replace("=", "=3D").replace(",", "=2C")


def new_client_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass
class Final:
    """What the client sends in its final message, and what it expects the server to sign."""

    proof: str  # base64 ClientProof
    server_signature: str  # base64 ServerSignature the server must answer
    auth_message: str


def client_final(
    email: str, password: str, client_nonce: str, nonce: str, salt: str, iterations: int
) -> Final:
    """Computes ClientProof and the expected ServerSignature for the combined `nonce`."""
    if not nonce.startswith(client_nonce) or len(nonce) <= len(client_nonce):
        raise ValueError("the server nonce does not extend the client nonce")
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), base64.b64decode(salt), iterations)
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    client_first_bare = f"n={escape_name(email)},r={client_nonce}"
    server_first = f"r={nonce},s={salt},i={iterations}"
    client_final_without_proof = f"c=biws,r={nonce}"
    auth_message = f"{client_first_bare},{server_first},{client_final_without_proof}"
    client_signature = _hmac(stored_key, auth_message.encode())
    proof = bytes(a ^ b for a, b in zip(client_key, client_signature))
    server_key = _hmac(salted, b"Server Key")
    server_signature = _hmac(server_key, auth_message.encode())
    return Final(
        proof=base64.b64encode(proof).decode(),
        server_signature=base64.b64encode(server_signature).decode(),
        auth_message=auth_message,
    )


def _self_test() -> None:
    # RFC 7677 section 3 test vector (user "user", password "pencil").
    got = client_final(
        "user", "pencil", "rOprNGfwEbeRWgbNEkqO",
        "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "W22ZaJ0SNY7soEsUEjb6gQ==", 4096,
    )
    assert got.proof == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", got.proof
    assert got.server_signature == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", got.server_signature


_self_test()
