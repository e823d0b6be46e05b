"""Schemathesis hooks for .ci/openapi-check: real credentials for every family of latchkey.

Loaded by schemathesis through SCHEMATHESIS_HOOKS=hooks (interop/openapi on PYTHONPATH). The
credentials are made fresh for each call (a login is cheap with the test hashing costs), because the
run itself logs out, revokes all sessions, and so on; a cached token would turn most of the run into
401s. What each route gets (docs/api.md):

- /admin/..., /servers/..., /apikeys/, /attributes/...: X-apikey = the root API key from
  `latchkey init`;
- GET /session/login: HTTP Basic of a user with TOTP (so the 207 answer is exercised);
- POST /session/login: X-Auth-Token of a session pending its TOTP step;
- /session/captcha, /session/unblock-captcha: X-Auth-Token of a session blocked on CAPTCHA;
- other /session/...: X-Auth-Token of an active Quatrix session;
- /sessions...: Authorization: Bearer <access JWT of a fresh Polario (SCRAM) login>;
- GET /auth/logout: header Session = such a JWT.

Environment (set by interop/openapi/check.py): INTEROP_BASE_URL, INTEROP_APIKEY, INTEROP_PASSWORD,
INTEROP_USER (password only), INTEROP_MFA_USER (with TOTP), INTEROP_CAPTCHA_USER (needs a CAPTCHA).
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import requests
import schemathesis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scram  # noqa: E402

BASE = os.environ["INTEROP_BASE_URL"]
APIKEY = os.environ["INTEROP_APIKEY"]
PASSWORD = os.environ["INTEROP_PASSWORD"]
USER = os.environ["INTEROP_USER"]
MFA_USER = os.environ["INTEROP_MFA_USER"]
CAPTCHA_USER = os.environ["INTEROP_CAPTCHA_USER"]

_http = requests.Session()


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()


def quatrix_token(user: str, expect: int) -> str:
    r = _http.get(f"{BASE}/session/login", headers={"Authorization": _basic(user)}, timeout=30)
    token = r.headers.get("X-Auth-Token")
    if r.status_code != expect or not token:
        raise RuntimeError(f"Quatrix login of {user}: expected {expect} with X-Auth-Token, got {r.status_code} {r.text}")
    return token


def polario_jwt() -> str:
    client_nonce = scram.new_client_nonce()
    first = _http.post(f"{BASE}/auth/auth", json={"email": USER, "nonce": client_nonce}, timeout=30)
    first.raise_for_status()
    f = first.json()
    final = scram.client_final(USER, PASSWORD, client_nonce, f["nonce"], f["salt"], f["iterationCount"])
    login = _http.post(f"{BASE}/auth/login", json={"email": USER, "nonce": f["nonce"], "proof": final.proof},
                       timeout=30)
    if login.status_code != 200 or not login.headers.get("Session"):
        raise RuntimeError(f"Polario login: {login.status_code} {login.text}")
    return login.headers["Session"]


def credentials(method: str, path: str) -> dict[str, str] | None:
    if path.startswith(("/admin/", "/servers/", "/apikeys/", "/attributes/")):
        return {"X-apikey": APIKEY}
    if path == "/session/login" and method == "GET":
        return {"Authorization": _basic(MFA_USER)}
    if path == "/session/login":
        return {"X-Auth-Token": quatrix_token(MFA_USER, 207)}
    if path in ("/session/captcha", "/session/unblock-captcha"):
        return {"X-Auth-Token": quatrix_token(CAPTCHA_USER, 403)}
    if path.startswith("/session/"):
        return {"X-Auth-Token": quatrix_token(USER, 200)}
    if path == "/sessions" or path.startswith("/sessions/"):
        return {"Authorization": f"Bearer {polario_jwt()}"}
    if path == "/forward-auth":
        return {"Cookie": f"latchkey_session={quatrix_token(USER, 200)}"}
    if path == "/auth/logout":
        return {"Session": polario_jwt()}
    return None


@schemathesis.auth(refresh_interval=None)
class LatchkeyCredentials:
    def get(self, case, ctx):
        got = credentials(case.operation.method.upper(), case.operation.path)
        if os.environ.get("INTEROP_DEBUG"):
            print(f"[auth] {case.operation.method.upper()} {case.operation.path} -> {sorted(got or {})}", file=sys.stderr)
        return got

    def set(self, case, data, ctx):
        headers = dict(case.headers or {})
        for name in list(headers):
            if any(name.lower() == key.lower() for key in data):
                del headers[name]
        headers.update(data)
        case.headers = headers
