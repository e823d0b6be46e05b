"""Family A's management operations through the client generated from the nextAuth spec: accounts
(getAllAccounts with filter, sort, limit and marker; getAccount; updateAccount; deleteAccount),
users (getUsers with search and filter; getUser; deleteUserAccounts; deleteUser) and attributes at
user, server, privileged and global scope (set replaces, update merges, reads are text/plain JSON),
with the permission refusals and the 404s the spec names; transactions confirmed and declined in
the real companion app binary. Accounts are made by that app, enrolled from the enrol QR code.
"""

from __future__ import annotations

import json

import nextauth_client
import pytest
import requests
from nextauth_client.exceptions import (BadRequestException, ForbiddenException, NotFoundException,
                                        UnauthorizedException)

from support import ALICE, BOB, CAROL, DAVE, Phone, nextauth_client_for
from test_nextauth import Site, enrolled, new_nonce


class Manager:
    """The generated API classes a site's back office uses."""

    def __init__(self, server, apikey: str | None = None):
        client = nextauth_client_for(server, apikey)
        self.sid = server.serverid
        self.accounts = nextauth_client.AccountsApi(client)
        self.users = nextauth_client.UsersApi(client)
        self.servers = nextauth_client.ServersApi(client)
        self.glob = nextauth_client.GlobalApi(client)


def key_with(server, role: str, permissions: list[str]) -> str:
    """An API key of `role` holding `permissions` on the default server (latchkey's admin API)."""
    made = requests.post(f"{server.base_url}/admin/apikeys", json={"role": role},
                         headers={"X-apikey": server.apikey}, timeout=10)
    assert made.status_code == 201, made.text
    granted = requests.put(f"{server.base_url}/admin/servers/{server.serverid}/permissions/{role}",
                           json={p: p in permissions
                                 for p in ("sessions", "accounts", "users", "servers")},
                           headers={"X-apikey": server.apikey}, timeout=10)
    assert granted.status_code in (200, 204), granted.text
    return made.json()["apikey"]


def read(text: str) -> dict:
    """An attribute read: text/plain holding one JSON object."""
    value = json.loads(text)
    assert isinstance(value, dict), text
    return value


@pytest.fixture
def three_accounts(server, tmp_path):
    """alice with two phones, bob with one, one phone linked to nobody."""
    site = Site(server)
    ids = {}
    for name, userid in [("a1", ALICE), ("a2", ALICE), ("b1", BOB), ("free", None)]:
        phone = Phone(tmp_path / name)
        ids[name] = enrolled(site, phone, new_nonce(), userid=userid)
    return ids


def test_accounts_are_listed_read_blocked_and_deleted(server, three_accounts):
    m = Manager(server)
    listed = m.accounts.get_all_accounts(m.sid)
    assert listed.totalnumber == 4
    assert [a.id for a in listed.accounts] == sorted(three_accounts.values())
    by_user = m.accounts.get_all_accounts(m.sid, sort="userid:desc,id:asc")
    assert [a.userid for a in by_user.accounts][:3] == [BOB, ALICE, ALICE]
    page = m.accounts.get_all_accounts(m.sid, limit=2, marker=1)
    assert [a.id for a in page.accounts] == sorted(three_accounts.values())[1:3]
    assert page.totalnumber == 4
    with pytest.raises(BadRequestException):
        m.accounts.get_all_accounts(m.sid, sort="password")

    one = m.accounts.get_account(m.sid, three_accounts["b1"])
    assert one.userid == BOB and one.blocked is False
    blocked = m.accounts.update_account(m.sid, three_accounts["b1"], True)
    assert blocked.blocked is True
    assert m.accounts.get_account(m.sid, three_accounts["b1"]).blocked is True
    assert m.accounts.update_account(m.sid, three_accounts["b1"], False).blocked is False

    m.accounts.delete_account(m.sid, three_accounts["free"])
    with pytest.raises(NotFoundException):
        m.accounts.get_account(m.sid, three_accounts["free"])
    with pytest.raises(NotFoundException):
        m.accounts.delete_account(m.sid, three_accounts["free"])
    assert m.accounts.get_all_accounts(m.sid).totalnumber == 3


def test_users_are_listed_searched_and_their_accounts_managed(server, three_accounts):
    m = Manager(server)
    users = m.users.get_users(m.sid)
    assert users.totalnumber == 4
    by_name = {u.userid: u for u in users.users}
    assert by_name[ALICE].numberaccounts == 2 and by_name[CAROL].numberaccounts == 0
    assert [u.userid for u in m.users.get_users(m.sid, search="CAROL").users] == [CAROL]
    most = m.users.get_users(m.sid, sort="numberaccounts:desc", limit=1)
    assert [u.userid for u in most.users] == [ALICE] and most.totalnumber == 4

    accounts = m.users.get_user(m.sid, ALICE)
    assert sorted(a.id for a in accounts.accounts) == [three_accounts["a1"], three_accounts["a2"]]
    with pytest.raises(NotFoundException):
        m.users.get_user(m.sid, "nobody@example.com")
    m.users.delete_user_accounts(m.sid, ALICE)
    assert m.users.get_user(m.sid, ALICE).accounts == []
    # The user stays; deleting it then removes it.
    assert ALICE in [u.userid for u in m.users.get_users(m.sid).users]
    m.users.delete_user(m.sid, DAVE)
    assert DAVE not in [u.userid for u in m.users.get_users(m.sid).users]
    with pytest.raises(NotFoundException):
        m.users.delete_user(m.sid, DAVE)


def test_user_attributes_set_replace_update_merge_and_filter_listings(server, three_accounts):
    m = Manager(server)
    m.users.set_user_attributes(m.sid, ALICE, {"group": "red", "level": 3, "tags": ["a"]})
    assert read(m.users.get_user_attributes(m.sid, ALICE)) == {"group": "red", "level": 3,
                                                             "tags": ["a"]}
    # POST replaces the whole set.
    m.users.set_user_attributes(m.sid, ALICE, {"group": "red"})
    assert read(m.users.get_user_attributes(m.sid, ALICE)) == {"group": "red"}
    # PUT merges.
    m.users.update_user_attributes(m.sid, ALICE, {"level": 4})
    assert read(m.users.get_user_attributes(m.sid, ALICE)) == {"group": "red", "level": 4}
    m.users.set_user_attributes(m.sid, BOB, {"group": "blue"})

    red = m.accounts.get_all_accounts(m.sid, filter="group=red")
    assert sorted(a.id for a in red.accounts) == [three_accounts["a1"], three_accounts["a2"]]
    either = m.users.get_users(m.sid, filter="group=in:red,blue")
    assert sorted(u.userid for u in either.users) == [ALICE, BOB]
    assert [u.userid for u in m.users.get_users(m.sid, filter="level=4").users] == [ALICE]

    m.users.delete_user_attribute(m.sid, ALICE, "level")
    assert read(m.users.get_user_attributes(m.sid, ALICE)) == {"group": "red"}
    with pytest.raises(NotFoundException):
        m.users.delete_user_attribute(m.sid, ALICE, "level")
    m.users.delete_user_attributes(m.sid, ALICE)
    assert read(m.users.get_user_attributes(m.sid, ALICE)) == {}

    # Setting attributes makes a missing user; updating one does not.
    m.users.set_user_attributes(m.sid, "erin@example.com", {"new": True})
    assert "erin@example.com" in [u.userid for u in m.users.get_users(m.sid).users]
    with pytest.raises(NotFoundException):
        m.users.update_user_attributes(m.sid, "frank@example.com", {"x": 1})
    with pytest.raises(NotFoundException):
        m.users.get_user_attributes(m.sid, "frank@example.com")
    # The generated client refuses to send anything but an object; a raw request gets 400.
    sent = requests.post(f"{server.base_url}/servers/{m.sid}/users/{ALICE}/attributes/",
                         json=["not", "an", "object"], headers={"X-apikey": server.apikey},
                         timeout=10)
    assert sent.status_code == 400 and sent.json()["error"], sent.text
    assert read(m.users.get_user_attributes(m.sid, ALICE)) == {}
    # ...and a user it names is not made by it.
    sent = requests.post(f"{server.base_url}/servers/{m.sid}/users/grace@example.com/attributes/",
                         data="{not json", headers={"X-apikey": server.apikey}, timeout=10)
    assert sent.status_code == 400, sent.text
    assert "grace@example.com" not in [u.userid for u in m.users.get_users(m.sid).users]


def test_server_privileged_and_global_attributes(server):
    m = Manager(server)
    m.servers.set_server_attributes(m.sid, {"theme": "dark", "max": 5})
    m.servers.update_server_attributes(m.sid, {"max": 6})
    assert read(m.servers.get_server_attributes(m.sid)) == {"theme": "dark", "max": 6}
    m.servers.delete_server_attribute(m.sid, "theme")
    assert read(m.servers.get_server_attributes(m.sid)) == {"max": 6}
    m.servers.delete_server_attributes(m.sid)
    assert read(m.servers.get_server_attributes(m.sid)) == {}
    with pytest.raises(NotFoundException):
        m.servers.get_server_attributes("AAAAAAAAAAAAAAAAAAAAAA")

    m.glob.set_server_privileged_attributes(m.sid, {"plan": "gold"})
    m.glob.update_server_privileged_attributes(m.sid, {"seats": 10})
    assert read(m.glob.get_server_privileged_attributes(m.sid)) == {"plan": "gold", "seats": 10}
    # Privileged attributes are not the server's own.
    assert read(m.servers.get_server_attributes(m.sid)) == {}
    m.glob.delete_server_privileged_attribute(m.sid, "plan")
    m.glob.delete_server_privileged_attributes(m.sid)
    assert read(m.glob.get_server_privileged_attributes(m.sid)) == {}

    m.glob.set_global_attributes({"region": "eu"})
    m.glob.update_global_attributes({"tier": 1})
    assert read(m.glob.get_global_attributes()) == {"region": "eu", "tier": 1}
    m.glob.delete_global_attribute("region")
    with pytest.raises(NotFoundException):
        m.glob.delete_global_attribute("region")
    m.glob.delete_global_attributes()
    assert read(m.glob.get_global_attributes()) == {}


def test_permissions_are_those_the_spec_lists(server, three_accounts):
    sessions_only = Manager(server, key_with(server, "front-desk", ["sessions"]))
    users_only = Manager(server, key_with(server, "user-admin", ["users"]))
    servers_only = Manager(server, key_with(server, "site-admin", ["servers"]))
    sid = server.serverid

    # 'accounts' lists and deletes accounts; 'sessions' or 'accounts' reads one.
    with pytest.raises(ForbiddenException):
        sessions_only.accounts.get_all_accounts(sid)
    assert sessions_only.accounts.get_account(sid, three_accounts["a1"]).userid == ALICE
    with pytest.raises(ForbiddenException):
        sessions_only.accounts.delete_account(sid, three_accounts["a1"])
    with pytest.raises(ForbiddenException):
        users_only.accounts.update_account(sid, three_accounts["a1"], True)
    # 'users' lists users; 'sessions' or 'users' reads a user's accounts and attributes.
    with pytest.raises(ForbiddenException):
        sessions_only.users.get_users(sid)
    assert users_only.users.get_users(sid).totalnumber == 4
    assert len(sessions_only.users.get_user(sid, ALICE).accounts) == 2
    users_only.users.set_user_attributes(sid, ALICE, {"k": 1})
    assert read(sessions_only.users.get_user_attributes(sid, ALICE)) == {"k": 1}
    with pytest.raises(ForbiddenException):
        sessions_only.users.set_user_attributes(sid, ALICE, {"k": 2})
    with pytest.raises(ForbiddenException):
        sessions_only.users.delete_user(sid, CAROL)
    # 'servers' for the server's attributes; global 'servers' (root) for the rest.
    servers_only.servers.set_server_attributes(sid, {"a": 1})
    with pytest.raises(ForbiddenException):
        users_only.servers.get_server_attributes(sid)
    with pytest.raises(ForbiddenException):
        servers_only.glob.get_server_privileged_attributes(sid)
    with pytest.raises(ForbiddenException):
        servers_only.glob.set_global_attributes({"x": 1})
    with pytest.raises(UnauthorizedException):
        Manager(server, "not-a-key").glob.get_global_attributes()


def test_api_keys_come_with_a_role_of_their_own_and_are_listed_without_the_key(server):
    root = nextauth_client_for(server)
    management = nextauth_client.ManagementApi(root)
    made = management.create_api_key("billing back office")
    assert made.apikey and made.role and made.description == "billing back office"
    listed = management.get_api_keys().apikeys
    assert [(k.role, k.description) for k in listed] == [(made.role, "billing back office")]
    # The list never shows a key: its id instead.
    assert all(k.apikey != made.apikey for k in listed)

    # The new role holds nothing until granted; granting replaces, revoking takes all.
    sid = server.serverid
    fresh = Manager(server, made.apikey)
    with pytest.raises(ForbiddenException):
        fresh.accounts.get_all_accounts(sid)
    management.grant_permissions(sid, made.role, ["accounts", "users"])
    assert fresh.accounts.get_all_accounts(sid).totalnumber == 0
    one = management.get_permissions(sid, made.role).permissions
    assert [(p.role, p.acl, p.server) for p in one] == [(made.role, "accounts,users", sid)]
    everyone = management.get_all_permissions(sid).permissions
    assert (made.role, "accounts,users") in [(p.role, p.acl) for p in everyone]
    management.grant_permissions(sid, made.role, ["sessions"])
    assert management.get_permissions(sid, made.role).permissions[0].acl == "sessions"
    management.revoke_permissions(sid, made.role)
    assert management.get_permissions(sid, made.role).permissions[0].acl == ""
    with pytest.raises(ForbiddenException):
        fresh.accounts.get_all_accounts(sid)

    with pytest.raises(NotFoundException):
        management.get_permissions(sid, "no-such-role")
    with pytest.raises(NotFoundException):
        management.grant_permissions("AAAAAAAAAAAAAAAAAAAAAA", made.role, ["sessions"])
    with pytest.raises(BadRequestException):
        management.grant_permissions(sid, made.role, ["superuser"])
    # Only root grants and revokes ('root'), and makes keys (global 'servers').
    management.grant_permissions(sid, made.role, ["servers"])
    as_made = nextauth_client.ManagementApi(nextauth_client_for(server, made.apikey))
    assert as_made.get_all_permissions(sid).permissions
    with pytest.raises(ForbiddenException):
        as_made.grant_permissions(sid, made.role, ["sessions", "accounts", "users", "servers"])
    with pytest.raises(ForbiddenException):
        as_made.create_api_key("escalate")


def test_servers_are_created_read_updated_and_listed_for_the_roles_that_may(server):
    api = nextauth_client.ServersApi(nextauth_client_for(server))
    default = api.get_server(server.serverid)
    assert default.serverid == server.serverid and default.serverpk
    created = api.create_server(nextauth_client.Server(
        server_name="shop", serverid="ignored", serverpk="ignored", logo="", pin_timeout=5,
        pin_trans_timeout=0, ping_time=30, server_flags=["beta"], siteurl="https://shop.example"))
    assert created.serverid not in ("ignored", server.serverid)
    assert created.server_name == "shop" and created.pin_timeout == 5
    assert created.server_flags == ["beta"] and created.account_count == 0
    updated = api.update_server(created.serverid, nextauth_client.Server(
        server_name="shop (eu)", serverid=created.serverid, serverpk=created.serverpk, logo="",
        pin_timeout=-1, pin_trans_timeout=10, ping_time=0, server_flags=[]))
    assert updated.server_name == "shop (eu)" and updated.pin_timeout == -1
    assert updated.serverpk == created.serverpk and updated.siteurl is None
    assert api.get_server(created.serverid).pin_trans_timeout == 10
    listed = api.get_servers()
    assert listed.totalnumber == 2
    assert {s.serverid for s in listed.servers} == {server.serverid, created.serverid}
    # Pages follow the listing's order (oldest first; made in the same second, by id).
    second = api.get_servers(limit=1, marker=1)
    assert [s.serverid for s in second.servers] == [listed.servers[1].serverid]
    assert second.totalnumber == 2
    with pytest.raises(NotFoundException):
        api.get_server("AAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(BadRequestException):
        api.update_server(created.serverid, nextauth_client.Server(
            server_name="x", serverid="x", serverpk="x", logo="not base64!", pin_timeout=0,
            pin_trans_timeout=0, ping_time=0, server_flags=[]))

    # A role with 'servers' on the new server sees that one only, and may not create one.
    key = key_with(server, "shop-admin", [])
    granted = requests.put(f"{server.base_url}/admin/servers/{created.serverid}/permissions/shop-admin",
                           json={"sessions": False, "accounts": False, "users": False,
                                 "servers": True},
                           headers={"X-apikey": server.apikey}, timeout=10)
    assert granted.status_code in (200, 204), granted.text
    theirs = nextauth_client.ServersApi(nextauth_client_for(server, key))
    assert [s.serverid for s in theirs.get_servers().servers] == [created.serverid]
    with pytest.raises(ForbiddenException):
        theirs.get_server(server.serverid)
    with pytest.raises(ForbiddenException):
        theirs.create_server(nextauth_client.Server(
            server_name="mine", serverid="", serverpk="", logo="", pin_timeout=0,
            pin_trans_timeout=0, ping_time=0, server_flags=[]))


def test_a_user_gets_one_role(server):
    management = nextauth_client.ManagementApi(nextauth_client_for(server))
    sid = server.serverid
    with pytest.raises(NotFoundException):
        management.get_user_role(sid, ALICE)
    made = management.get_or_create_user_role(sid, ALICE)
    assert made.role
    assert management.get_or_create_user_role(sid, ALICE).role == made.role
    assert management.get_user_role(sid, ALICE).role == made.role
    with pytest.raises(NotFoundException):
        management.get_or_create_user_role(sid, "nobody@example.com")
    users_only = nextauth_client.ManagementApi(
        nextauth_client_for(server, key_with(server, "no-users", ["sessions"])))
    with pytest.raises(ForbiddenException):
        users_only.get_user_role(sid, ALICE)


def embedded_pngs(html: str) -> list[bytes]:
    """The PNG data: images of an HTML block, in order."""
    import base64
    import re
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_html_blocks_enrol_and_log_in_with_the_real_app_and_the_footer_watches(server, tmp_path):
    html_api = nextauth_client.HTMLApi(nextauth_client_for(server))
    site = Site(server)
    sid = server.serverid
    nonce = new_nonce()

    # The enrol block's QR code (an inline PNG) enrols the real app for alice.
    enrol_html = html_api.get_html_enrol(sid, nonce, name="laptop", userid=ALICE)
    pngs = embedded_pngs(enrol_html)
    assert len(pngs) == 2 and "laptop" in enrol_html  # the code, and the visual hash
    (tmp_path / "enrol.png").write_bytes(pngs[0])
    phone = Phone(tmp_path / "phone")
    enrolled_account = phone.ok("enrol", "--png", str(tmp_path / "enrol.png"))
    assert enrolled_account["userid"] == ALICE

    # The login block's QR code logs this browser session in.
    login_html = html_api.get_html_login(sid, nonce)
    status = site.status(nonce)
    assert f'data-latchkey-hsid="{status.hsid}"' in login_html
    (tmp_path / "login.png").write_bytes(embedded_pngs(login_html)[0])
    phone.ok("login", "--png", str(tmp_path / "login.png"))
    assert site.status(nonce).loggedin is True

    # The footer: latchkey's script, watching this session.
    import re
    footer = html_api.get_html_footer(sid, nonce)
    script = re.search(r'<script src="([^"]+)" data-latchkey-events="([^"]+)"', footer)
    assert script, footer
    assert script.group(1) == f"{server.base_url}/assets/nextauth-footer.js"
    js = requests.get(script.group(1), timeout=10)
    assert js.status_code == 200 and "EventSource" in js.text
    urls = script.group(2).split(" ")
    assert len(urls) == 1 and urls[0].endswith(f"hsid={status.hsid}")
    # With an HtmlFooterBody (a GET body, which the generated Python client does not send),
    # the sessions it lists too.
    other = new_nonce()
    more = requests.get(f"{server.base_url}/servers/{sid}/sessions/html/footer",
                        headers={"X-apikey": server.apikey, "X-nonce": nonce},
                        json={"sessions": [{"serverid": sid, "sessionid": other}]}, timeout=10)
    assert more.status_code == 200 and more.headers["Content-Type"].startswith("text/html")
    listed = re.search(r'data-latchkey-events="([^"]+)"', more.text).group(1).split(" ")
    assert listed[0] == urls[0] and len(listed) == 2 and listed[1] != urls[0]
    # The stream a page opens from the site's origin answers at once, with CORS allowed.
    with requests.get(urls[0], stream=True, timeout=10,
                      headers={"Origin": "https://shop.example"}) as events:
        assert events.status_code == 200
        assert events.headers["Access-Control-Allow-Origin"] == "*"
        for line in events.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                assert json.loads(line[5:])["loggedin"] is True
                break

    # Refusals: no sessions permission, unknown server, bad nonce.
    outsider = nextauth_client.HTMLApi(nextauth_client_for(server, key_with(server, "users-only", ["users"])))
    with pytest.raises(ForbiddenException):
        outsider.get_html_login(sid, nonce)
    with pytest.raises(NotFoundException):
        html_api.get_html_login("AAAAAAAAAAAAAAAAAAAAAA", nonce)
    with pytest.raises(BadRequestException):
        html_api.get_html_enrol(sid, "short")


def test_transactions_are_confirmed_in_the_real_app(server, tmp_path):
    site = Site(server)
    sid = server.serverid
    transactions = nextauth_client.TransactionsApi(nextauth_client_for(server))
    order = nextauth_client.Transaction(amount="12.50 EUR", benificiary="ACME Ltd",
                                        description="order 7")
    nonce = new_nonce()
    # No account logged in on this session: the spec's 403.
    with pytest.raises(ForbiddenException):
        transactions.create_transaction(sid, nonce, order)

    phone = Phone(tmp_path / "phone")
    enrolled(site, phone, nonce, userid=ALICE)
    phone.ok("login", site.login_payload(nonce))

    # Approved in the app as it arrives.
    listener = phone.listen("--approve-all", "--once")
    try:
        made = transactions.create_transaction(sid, nonce, order)
        assert isinstance(made, nextauth_client.TransactionId) and made.tid
        handled = listener.next()
        assert handled["tid"] == made.tid and handled["approved"] is True
        assert (handled["amount"], handled["beneficiary"], handled["description"]) == (
            "12.50 EUR", "ACME Ltd", "order 7")
        listener.exits_ok()
    finally:
        listener.stop()
    result = transactions.get_transaction_result(sid, made.tid)
    assert isinstance(result, nextauth_client.TransactionResult) and result.tstatus == "1"

    # Declined by its id.
    made = transactions.create_transaction(sid, nonce, order)
    assert transactions.get_transaction_result(sid, made.tid).tstatus == "0"
    assert phone.ok("decline", made.tid)["approved"] is False
    assert transactions.get_transaction_result(sid, made.tid).tstatus == "2"

    # Refusals the spec names: no such transaction; and the sessions permission.
    with pytest.raises(NotFoundException):
        transactions.get_transaction_result(sid, "AAAAAAAAAAAAAAAAAAAAAA")
    outsider = nextauth_client.TransactionsApi(
        nextauth_client_for(server, key_with(server, "users-only-tx", ["users"])))
    with pytest.raises(ForbiddenException):
        outsider.create_transaction(sid, nonce, order)
    with pytest.raises(ForbiddenException):
        outsider.get_transaction_result(sid, made.tid)
    with pytest.raises(BadRequestException):
        transactions.create_transaction(sid, nonce, nextauth_client.Transaction(amount="x" * 65))
