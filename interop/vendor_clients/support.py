"""Helpers shared by the vendor-client tests: the generated clients, configured for one latchkey,
the companion app, and small readers for what the vendors' specs leave out."""

from __future__ import annotations

import base64
import json
import queue
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

INTEROP = Path(__file__).resolve().parent.parent
if str(INTEROP) not in sys.path:
    sys.path.insert(0, str(INTEROP))

import nestjs_client  # noqa: E402  (generated from interop/specs/nestjs-sessions/openapi.json)
import nextauth_client  # noqa: E402  (generated from interop/specs/nextauth/swagger.yaml)
import polario_client  # noqa: E402  (generated from interop/specs/polario/openapi.yaml)
import quatrix_client  # noqa: E402  (generated from interop/specs/quatrix/swagger.yaml)

import scram  # noqa: E402
import serve  # noqa: E402

PASSWORD = "correct horse battery staple"
PIN = "2468"

# The users every test server starts with (made with the real `latchkey user ...` commands).
ALICE = "alice@example.com"  # password only
BOB = "bob@example.com"  # password + TOTP
CAROL = "carol@example.com"  # password + PIN
DAVE = "dave@example.com"  # password only (for CAPTCHA and other-user checks)


@dataclass
class Server:
    """A running latchkey with its root API key, default server id and users."""

    lk: serve.Latchkey
    totp_secret: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.lk.base_url

    @property
    def serverid(self) -> str:
        return self.lk.serverid

    @property
    def apikey(self) -> str:
        return self.lk.apikey


def start_server(extra_env: dict[str, str] | None = None) -> Server:
    lk = serve.Latchkey(extra_env=extra_env)
    lk.init()
    server = Server(lk)
    lk.add_user(ALICE, PASSWORD)
    server.totp_secret[BOB] = lk.add_user(BOB, PASSWORD, totp=True)["totp_secret"]
    lk.add_user(CAROL, PASSWORD, pin=PIN)
    lk.add_user(DAVE, PASSWORD)
    lk.start()
    return server


# -- reading what the generated clients hand back ------------------------------------------------


def header(headers, name: str) -> str | None:
    """A response header by name, whatever the case (the generated clients keep a plain mapping)."""
    if headers is None:
        return None
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return value
    return None


def body_json(exc_or_response) -> object:
    """The JSON body of an ApiException or of an ApiResponse (its raw_data)."""
    raw = getattr(exc_or_response, "raw_data", None)
    if raw is None:
        raw = exc_or_response.body
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode()
    return json.loads(raw)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def jwt_parts(token: str) -> tuple[dict, dict]:
    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    head, payload, signature = token.split(".")
    assert signature
    return part(head), part(payload)


# -- the generated clients, configured only through their Configuration ------------------------


def quatrix_auth(server: Server, *, user: str | None = None, password: str | None = None,
                 token: str | None = None) -> quatrix_client.AuthApi:
    cfg = quatrix_client.Configuration(host=server.base_url, username=user, password=password)
    if token is not None:
        cfg.api_key["api_key"] = token
    return quatrix_client.AuthApi(quatrix_client.ApiClient(cfg))


def quatrix_mfa(server: Server, token: str) -> quatrix_client.MFAApi:
    cfg = quatrix_client.Configuration(host=server.base_url)
    cfg.api_key["api_key"] = token
    return quatrix_client.MFAApi(quatrix_client.ApiClient(cfg))


def quatrix_login(server: Server, user: str, password: str = PASSWORD):
    """GET /session/login with Basic; answers (ApiResponse, X-Auth-Token)."""
    resp = quatrix_auth(server, user=user, password=password).session_login_get_with_http_info()
    token = header(resp.headers, "X-Auth-Token")
    assert token, f"no X-Auth-Token on {resp.status_code}: {resp.headers}"
    return resp, token


def nextauth_client_for(server: Server, apikey: str | None = None) -> nextauth_client.ApiClient:
    cfg = nextauth_client.Configuration(host=server.base_url)
    cfg.api_key["api_key"] = apikey if apikey is not None else server.apikey
    return nextauth_client.ApiClient(cfg)


def polario_client_for(server: Server) -> polario_client.ApiClient:
    return polario_client.ApiClient(polario_client.Configuration(host=server.base_url))


def nestjs_sessions(server: Server, bearer: str) -> nestjs_client.SessionsApi:
    cfg = nestjs_client.Configuration(host=server.base_url, access_token=bearer)
    return nestjs_client.SessionsApi(nestjs_client.ApiClient(cfg))


@dataclass
class PolarioLogin:
    device_id: str
    refresh_token: str
    jwt: str
    response: object  # the ApiResponse of /auth/login


def polario_first(server: Server, email: str, platform: str | None = None):
    """POST /auth/auth through the generated AuthApi; answers (client nonce, the answer)."""
    api = polario_client.AuthApi(polario_client_for(server))
    client_nonce = scram.new_client_nonce()
    first = api.auth_auth_post(
        polario_client.AuthAuthenticationRequest(email=email, nonce=client_nonce), platform=platform
    )
    return client_nonce, first


def polario_login(server: Server, email: str, password: str = PASSWORD, *,
                  platform: str | None = None, **device) -> PolarioLogin:
    """The whole SCRAM login through the generated clients, checking the server's signature."""
    client_nonce, first = polario_first(server, email, platform)
    final = scram.client_final(email, password, client_nonce, first.nonce, first.salt, first.iteration_count)
    api = polario_client.SessionApi(polario_client_for(server))
    resp = api.auth_login_post_with_http_info(
        polario_client.AuthLoginRequest(email=email, nonce=first.nonce, proof=final.proof, **device),
        platform=platform,
    )
    assert resp.status_code == 200
    assert resp.data.signature == final.server_signature, "the server's SCRAM signature does not verify"
    jwt = header(resp.headers, "Session")
    assert jwt and jwt.count(".") == 2, f"no access JWT in header Session: {resp.headers}"
    return PolarioLogin(resp.data.device_id, resp.data.refresh_token, jwt, resp)


def generated_call(api_client, method: str, path: str, auth: list[str], *,
                   query: list | None = None, accept: str | None = None):
    """A call to a latchkey extension that the vendor's spec lacks (so no generated method exists),
    made with that vendor's generated ApiClient: its host, its configured credentials (auth
    settings), its transport. Answers the raw RESTResponse, read."""
    headers = {"Accept": accept} if accept else {}
    params = api_client.param_serialize(
        method=method, resource_path=path, query_params=query or [], header_params=headers,
        auth_settings=auth,
    )
    resp = api_client.call_api(*params)
    resp.read()
    return resp


# -- the companion app (latchkey-app), as a person runs it -----------------------------------


class Phone:
    """One key store of the real `latchkey-app` binary."""

    def __init__(self, directory: Path):
        self.store = directory / "keys.json"
        self.bin = serve.latchkey_app_bin()
        self.env = serve.clean_env()

    def _cmd(self, args: list[str]) -> list[str]:
        return [str(self.bin), "--store", str(self.store), "--json", *args]

    def run(self, *args: str) -> tuple[bool, dict]:
        out = serve._run_retrying(
            self._cmd(list(args)), capture_output=True, text=True, env=self.env,
            stdin=subprocess.DEVNULL, timeout=60,
        )
        try:
            value = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"latchkey-app {args} printed no JSON: {out.stdout!r} {out.stderr!r}")
        return out.returncode == 0, value

    def ok(self, *args: str) -> dict:
        ok, value = self.run(*args)
        assert ok, f"latchkey-app {args} failed: {value}"
        return value

    def listen(self, *args: str) -> "Listener":
        proc = subprocess.Popen(
            self._cmd(["listen", *args]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, text=True, env=self.env,
        )
        listener = Listener(proc)
        first = listener.next()
        assert first.get("listening") is True, f"listen said {first}"
        return listener


class Listener:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip():
                self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float = 20.0) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line from latchkey-app listen in time")
        assert line is not None, f"latchkey-app listen ended (exit {self.proc.poll()})"
        return json.loads(line)

    def exits_ok(self, timeout: float = 20.0) -> None:
        assert self.proc.wait(timeout=timeout) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
