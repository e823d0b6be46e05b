"""A client generated from latchkey's OWN document (GET /openapi.json of the running server).

openapi-generator (generator `python`, validation on) must accept the document, and the generated
API classes must drive a Quatrix Basic login, its TOTP step and a NestJS session listing with every
credential set only through the generated Configuration (username/password for HTTP basic, the
apiKey scheme whose header is X-Auth-Token, the bearer token): no header is written by hand.

The generated method names follow the document's operationIds, which this test does not assume:
it finds each operation by method and path in the generated code.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import urllib.request
from pathlib import Path

import pydantic
import pyotp
import pytest

from support import BOB, PASSWORD, header  # also puts interop/ on sys.path

import generate  # noqa: E402  (interop/generate.py)

PACKAGE = "latchkey_own_client"


def fetch_document(server) -> dict:
    with urllib.request.urlopen(f"{server.base_url}/openapi.json", timeout=10) as resp:
        assert resp.status == 200
        return json.load(resp)


def load_generated(doc: dict, workdir: Path):
    spec = workdir / "openapi.json"
    spec.write_text(json.dumps(doc, indent=1))
    out = workdir / "client"
    refused = None
    try:
        generate.generate(spec, out, PACKAGE)
    except generate.GenerationFailed as exc:
        refused = exc.summary
    if refused is not None:
        pytest.fail(f"openapi-generator refused latchkey's /openapi.json:\n{refused}", pytrace=False)
    sys.path.insert(0, str(out))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    broken = None
    try:
        return importlib.import_module(PACKAGE)
    except Exception as exc:  # the generated code itself does not import
        broken = repr(exc)
    pytest.fail(f"the client generated from /openapi.json does not import: {broken}", pytrace=False)


class Operations:
    """The generated API methods, found by (METHOD, path) in their serializers."""

    def __init__(self, package):
        self.package = package
        self.found: dict[tuple[str, str], tuple[type, str, str | None]] = {}
        api_pkg = importlib.import_module(f"{package.__name__}.api")
        for path in sorted(Path(api_pkg.__file__).parent.glob("*_api.py")):
            module = importlib.import_module(f"{api_pkg.__name__}.{path.stem}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != module.__name__:
                    continue
                for attr in dir(cls):
                    m = re.fullmatch(r"_(\w+)_serialize", attr)
                    if not m:
                        continue
                    source = inspect.getsource(getattr(cls, attr))
                    method = re.search(r"method='(\w+)'", source)
                    route = re.search(r"resource_path='([^']+)'", source)
                    body = re.search(r"_body_params = (\w+)", source)
                    if method and route:
                        self.found.setdefault((method.group(1), route.group(1)),
                                              (cls, m.group(1), body.group(1) if body else None))

    def method(self, verb: str, path: str, configuration):
        if (verb, path) not in self.found:
            known = "\n".join(f"  {v} {p}" for v, p in sorted(self.found))
            pytest.fail(f"no generated method for {verb} {path}; generated:\n{known}", pytrace=False)
        cls, name, body = self.found[(verb, path)]
        api = cls(self.package.ApiClient(configuration))
        return getattr(api, f"{name}_with_http_info"), f"{cls.__name__}.{name}", body


def schemes(doc: dict) -> dict[str, str]:
    """Security scheme names by role: basic, X-Auth-Token, bearer."""
    found: dict[str, str] = {}
    for name, s in ((doc.get("components") or {}).get("securitySchemes") or {}).items():
        kind = s.get("type")
        if kind == "http" and str(s.get("scheme", "")).lower() == "basic":
            found.setdefault("basic", name)
        elif kind == "http" and str(s.get("scheme", "")).lower() == "bearer":
            found.setdefault("bearer", name)
        elif kind == "apiKey" and s.get("in") == "header" and str(s.get("name", "")).lower() == "x-auth-token":
            found.setdefault("x-auth-token", name)
    return found


def required_params(func, allowed: set[str]) -> list[str]:
    """Parameters a generated method requires besides `allowed` (e.g. a credential declared as a
    plain header parameter instead of a security scheme)."""
    sig = inspect.signature(func)
    return [
        name for name, p in sig.parameters.items()
        if not name.startswith("_") and p.default is inspect.Parameter.empty and name not in allowed
    ]


def security_names(doc: dict, verb: str, path: str) -> set[str]:
    op = doc["paths"][path][verb.lower()]
    reqs = op.get("security", doc.get("security")) or []
    return {name for req in reqs for name in req}


def test_generated_client_of_openapi_json_logs_in_with_totp_and_lists_sessions(server, tmp_path):
    doc = fetch_document(server)
    package = load_generated(doc, tmp_path)
    ops = Operations(package)
    names = schemes(doc)
    missing = [role for role in ("basic", "x-auth-token", "bearer") if role not in names]
    assert not missing, (
        f"/openapi.json components.securitySchemes lacks {missing} "
        f"(has {(doc.get('components') or {}).get('securitySchemes')})"
    )
    for verb, path, role in (("GET", "/session/login", "basic"), ("POST", "/session/login", "x-auth-token"),
                             ("GET", "/sessions", "bearer")):
        declared = security_names(doc, verb, path)
        assert names[role] in declared, (
            f"{verb} {path} does not require security scheme {names[role]!r} (declares {sorted(declared)})"
        )

    Configuration = package.Configuration
    # 1. Basic login: 207, X-Auth-Token and Mfa-Code.
    login, login_name, _ = ops.method("GET", "/session/login", Configuration(host=server.base_url,
                                                                           username=BOB, password=PASSWORD))
    assert not required_params(login, set()), f"{login_name} requires {required_params(login, set())}"
    resp = login()
    assert resp.status_code == 207, resp
    token = header(resp.headers, "X-Auth-Token")
    assert token and header(resp.headers, "Mfa-Code") == "1", resp.headers
    assert resp.data is not None and getattr(resp.data, "session_id", None), (
        f"{login_name} answered no typed model with session_id: {resp.data!r}"
    )
    session_id = str(resp.data.session_id)

    # 2. The TOTP step, with the token only in the apiKey scheme of the Configuration.
    cfg = Configuration(host=server.base_url)
    cfg.api_key[names["x-auth-token"]] = token
    mfa, mfa_name, body_name = ops.method("POST", "/session/login", cfg)
    assert body_name, f"{mfa_name} takes no request body"
    extra = required_params(mfa, {body_name})
    assert not extra, f"{mfa_name} requires {extra} besides its body: a credential declared as a parameter?"
    done = mfa(**{body_name: {"auth_type": "2FA", "code": pyotp.TOTP(server.totp_secret[BOB]).now()}})
    assert done.status_code == 200, done
    assert str(done.data.session_id) == session_id

    # 3. NestJS listing with the session token as bearer (Configuration.access_token).
    listing, list_name, _ = ops.method("GET", "/sessions", Configuration(host=server.base_url, access_token=token))
    args = {}
    for name, value in (("current_session_id", session_id), ("page", 1), ("limit", 10)):
        if name in inspect.signature(listing).parameters:
            args[name] = value
    extra = required_params(listing, set(args))
    assert not extra, f"{list_name} requires {extra}"
    assert set(args) >= {"page", "limit"}, (
        f"{list_name} has no page/limit parameters ({list(inspect.signature(listing).parameters)})"
    )
    refused = None
    try:
        listed = listing(**args)
    except pydantic.ValidationError as exc:  # e.g. page/limit declared as strings
        refused = str(exc)
    if refused is not None:
        pytest.fail(f"{list_name}({args}) refused by the generated types: {refused}", pytrace=False)
    assert listed.status_code == 200
    data = listed.data
    assert data is not None and hasattr(data, "sessions"), f"{list_name} answered no typed model: {data!r}"
    assert [str(s.id) for s in data.sessions] == [session_id]
    assert data.sessions[0].is_current is True
    assert (data.total, data.page, data.limit) == (1, 1, 10)
