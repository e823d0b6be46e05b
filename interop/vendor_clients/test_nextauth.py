"""Family A through the client generated from the nextAuth spec (interop/specs/nextauth/swagger.yaml).

Seed operations (docs/contract.md, family A): getSession, getQrLogin, logout, provokeLogin,
provokeLoginOnAccount, provokeLoginOnUser, getQrEnrol, getServerVash, registerUser (Users and
Registration classes), updateAccountUser (Accounts and Registration classes). Every login is made
by the real companion app binary (latchkey-app), fed the QR payloads or PNGs the generated client
fetched. X-apikey is set only through the generated Configuration (security scheme `api_key`).
"""

from __future__ import annotations

import base64
import secrets

import nextauth_client
import pytest
import requests
from nextauth_client.exceptions import (BadRequestException, ConflictException, ForbiddenException,
                                        NotFoundException, UnauthorizedException)

from support import (ALICE, body_json, generated_call, nestjs_sessions, nextauth_client_for, png_size,
                     quatrix_login)


def new_nonce() -> str:
    """A browser session name as a web site makes one: 16..128 base64url characters."""
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")


class Site:
    """The relying web site: the generated nextAuth API classes with its root X-apikey."""

    def __init__(self, server, apikey: str | None = None):
        self.server = server
        self.client = nextauth_client_for(server, apikey)
        self.sessions = nextauth_client.SessionsApi(self.client)
        self.registration = nextauth_client.RegistrationApi(self.client)
        self.users = nextauth_client.UsersApi(self.client)
        self.accounts = nextauth_client.AccountsApi(self.client)
        self.sid = server.serverid

    def status(self, nonce: str) -> nextauth_client.LoginStatus:
        status = self.sessions.get_session(self.sid, nonce)
        assert isinstance(status, nextauth_client.LoginStatus)
        return status

    def enrol_payload(self, nonce: str, name: str = "phone", userid: str | None = None) -> str:
        raw = self.registration.get_qr_enrol(self.sid, nonce, name, userid=userid)
        text = bytes(raw).decode()
        assert text.startswith("latchkey://enrol?"), text
        return text

    def login_payload(self, nonce: str) -> str:
        text = bytes(self.sessions.get_qr_login(self.sid, nonce)).decode()
        assert text.startswith("latchkey://login?"), text
        return text


def enrolled(site: Site, phone, nonce: str, userid: str | None = "alice") -> int:
    account = phone.ok("enrol", site.enrol_payload(nonce, userid=userid))
    assert account["serverid"] == site.sid
    assert account.get("userid") == userid
    return int(account["accountid"])


def app_login(site: Site, phone, nonce: str) -> dict:
    return phone.ok("login", site.login_payload(nonce))


def test_login_status_and_login_qr_code(server, tmp_path):
    site = Site(server)
    nonce = new_nonce()
    status = site.status(nonce)
    assert status.loggedin is False and status.canprovoke is False
    assert status.hsid and status.userid is None and status.accountid is None
    # loginqrdata and the raw qr/login bytes agree within the payload's lifetime.
    payload = site.login_payload(nonce)
    assert base64.b64decode(status.loginqrdata).decode() == payload
    png = bytes(site.sessions.get_qr_login(site.sid, nonce, img="png", s=200))
    assert png_size(png) == (200, 200)
    assert png_size(bytes(site.sessions.get_qr_login(site.sid, nonce, img="png"))) == (500, 500)
    with pytest.raises(BadRequestException) as refused:
        site.sessions.get_qr_login(site.sid, nonce, img="png", s=10)
    assert body_json(refused.value)["error"]


def test_enrol_login_by_png_and_logout(server, phone, tmp_path):
    site = Site(server)
    nonce = new_nonce()
    image = tmp_path / "enrol.png"
    enrol_png = bytes(site.registration.get_qr_enrol(site.sid, nonce, "Alice's phone", userid="alice", img="png", s=400))
    assert png_size(enrol_png) == (400, 400)
    image.write_bytes(enrol_png)
    account = phone.ok("enrol", "--png", str(image))
    assert account["userid"] == "alice"

    login_png = tmp_path / "login.png"
    login_png.write_bytes(bytes(site.sessions.get_qr_login(site.sid, nonce, img="png", s=300)))
    logged = phone.ok("login", "--png", str(login_png))
    assert logged["accountid"] == account["accountid"]

    status = site.status(nonce)
    assert status.loggedin is True and status.userid == "alice"
    assert status.accountid == account["accountid"] and status.pk
    assert status.canprovoke is True

    assert site.sessions.logout_with_http_info(site.sid, nonce).status_code == 200
    assert site.status(nonce).loggedin is False
    # Idempotent.
    assert site.sessions.logout_with_http_info(site.sid, nonce).status_code == 200

    # The base64 loginqrdata works as a payload too.
    phone.ok("login", site.status(nonce).loginqrdata)
    assert site.status(nonce).loggedin is True


def test_provoke_login_on_the_last_account_of_the_session(server, phone):
    site = Site(server)
    nonce = new_nonce()
    with pytest.raises(ConflictException) as nobody:
        site.sessions.provoke_login(site.sid, nonce)
    assert body_json(nobody.value)["error"]

    enrolled(site, phone, nonce)
    app_login(site, phone, nonce)
    site.sessions.logout(site.sid, nonce)
    assert site.status(nonce).canprovoke is True

    context = nextauth_client.UserContext(sessioninfo=nextauth_client.SessionInfo(
        ip="192.0.2.1", useragent="Firefox", info={"shop": "demo"}))
    listener = phone.listen("--approve-all", "--once")
    try:
        assert site.sessions.provoke_login_with_http_info(site.sid, nonce, user_context=context).status_code == 200
        handled = listener.next()
        assert handled["approved"] is True and handled["loggedin"] is True
        assert handled["usercontext"] == context.to_dict()
        listener.exits_ok()
    finally:
        listener.stop()
    assert site.status(nonce).loggedin is True

    # Denied: nobody is logged in.
    site.sessions.logout(site.sid, nonce)
    listener = phone.listen("--deny-all", "--once")
    try:
        site.sessions.provoke_login(site.sid, nonce)
        assert listener.next()["approved"] is False
        listener.exits_ok()
    finally:
        listener.stop()
    assert site.status(nonce).loggedin is False


def block(site: Site, account: int, blocked: bool) -> None:
    """PUT .../accounts/{id}/blocked: latchkey's extension (the vendor's updateAccount is another
    path), made with the generated ApiClient and its api_key setting."""
    resp = generated_call(site.client, "PUT", f"/servers/{site.sid}/accounts/{account}/blocked",
                          ["api_key"], query=[("blocked", "true" if blocked else "false")])
    assert resp.status == 200, resp.data


def test_provoke_login_on_an_account(server, phone):
    site = Site(server)
    nonce = new_nonce()
    account = enrolled(site, phone, nonce)
    listener = phone.listen("--approve-all", "--once")
    try:
        resp = site.sessions.provoke_login_on_account_with_http_info(
            site.sid, nonce, account,
            user_context=nextauth_client.UserContext(announceinfo=nextauth_client.SessionInfo(useragent="Safari")),
        )
        assert resp.status_code == 200
        assert listener.next()["loggedin"] is True
        listener.exits_ok()
    finally:
        listener.stop()
    status = site.status(nonce)
    assert status.loggedin is True and status.accountid == account

    with pytest.raises(NotFoundException):
        site.sessions.provoke_login_on_account(site.sid, new_nonce(), account + 1000)
    block(site, account, True)
    with pytest.raises(ForbiddenException):
        site.sessions.provoke_login_on_account(site.sid, new_nonce(), account)


def test_provoke_login_on_a_user(server, phone):
    site = Site(server)
    nonce = new_nonce()
    enrolled(site, phone, new_nonce(), userid="erin")
    listener = phone.listen("--approve-all", "--once")
    try:
        assert site.sessions.provoke_login_on_user_with_http_info(site.sid, nonce, "erin").status_code == 200
        assert listener.next()["loggedin"] is True
        listener.exits_ok()
    finally:
        listener.stop()
    status = site.status(nonce)
    assert status.loggedin is True and status.userid == "erin"
    with pytest.raises(NotFoundException):
        site.sessions.provoke_login_on_user(site.sid, new_nonce(), "nobody-with-an-app")


def test_register_user_and_move_account(server, phone):
    site = Site(server)
    nonce = new_nonce()
    account = enrolled(site, phone, nonce, userid=None)
    with pytest.raises(ConflictException):
        site.registration.register_user(site.sid, nonce, "bob")  # nobody logged in on this nonce yet
    logged = app_login(site, phone, nonce)
    assert logged["accountid"] == account
    status = site.status(nonce)
    assert status.loggedin is True and status.userid is None

    # registerUser is tagged Users and Registration: both generated classes drive it.
    assert site.registration.register_user_with_http_info(site.sid, nonce, "bob").status_code == 200
    assert site.status(nonce).userid == "bob"
    assert site.users.register_user_with_http_info(site.sid, nonce, "bob2").status_code == 200
    assert site.status(nonce).userid == "bob2"
    with pytest.raises(ForbiddenException):
        site.users.register_user(site.sid, nonce, " bad:name ")

    # updateAccountUser, tagged Accounts and Registration.
    moved = site.accounts.update_account_user(site.sid, account, "carol")
    assert isinstance(moved, nextauth_client.Account)
    assert moved.id == account and moved.userid == "carol" and moved.blocked is False
    assert moved.description == "phone" and moved.created > 0
    moved = site.registration.update_account_user(site.sid, account, "dan")
    assert moved.userid == "dan"
    assert app_login(site, phone, new_nonce())["userid"] == "dan"
    with pytest.raises(NotFoundException):
        site.accounts.update_account_user(site.sid, account + 1000, "carol")
    with pytest.raises(ForbiddenException):
        site.registration.update_account_user(site.sid, account, " bad:name ")


def test_server_visual_hash(server):
    site = Site(server)
    vash = bytes(site.registration.get_server_vash(site.sid))
    assert png_size(vash)[0] > 0
    with pytest.raises(NotFoundException):
        site.registration.get_server_vash("AAAAAAAAAAAAAAAAAAAAAA")


def test_api_key_server_and_nonce_are_checked(server):
    nonce = new_nonce()
    with pytest.raises(UnauthorizedException) as no_key:
        Site(server, apikey="not-a-key").status(nonce)
    assert body_json(no_key.value)["error"]
    with pytest.raises(BadRequestException):
        Site(server).status("short")
    with pytest.raises(NotFoundException):
        Site(server).sessions.get_session("AAAAAAAAAAAAAAAAAAAAAA", nonce)

    # A key of a role without permissions on the server: 403. (Made with latchkey's own admin
    # API, which no vendor client covers.)
    made = requests.post(f"{server.base_url}/admin/apikeys", json={"role": "no-permissions"},
                         headers={"X-apikey": server.apikey}, timeout=10)
    assert made.status_code == 201, made.text
    with pytest.raises(ForbiddenException):
        Site(server, apikey=made.json()["apikey"]).status(nonce)


def test_a_qr_login_is_an_ordinary_session_of_family_c(server, phone):
    site = Site(server)
    nonce = new_nonce()
    enrolled(site, phone, nonce, userid=ALICE)
    listener = phone.listen("--approve-all", "--once")
    try:
        context = nextauth_client.UserContext(sessioninfo=nextauth_client.SessionInfo(
            ip="198.51.100.7", useragent="Firefox 140"))
        site.sessions.provoke_login_on_user(site.sid, nonce, ALICE, user_context=context)
        assert listener.next()["loggedin"] is True
    finally:
        listener.stop()
    _, token = quatrix_login(server, ALICE)
    listed = nestjs_sessions(server, token).session_controller_get_active_sessions_with_http_info(
        current_session_id="", page="1", limit="10")
    sessions = body_json(listed)["sessions"]
    hwk = [s for s in sessions if s["ipAddress"] == "198.51.100.7"]
    assert len(hwk) == 1, sessions
    assert "Firefox 140" in (hwk[0]["deviceInfo"] or "")
