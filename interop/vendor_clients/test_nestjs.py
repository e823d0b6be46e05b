"""Family C through the client generated from the NestJS spec (interop/specs/nestjs-sessions/openapi.json).

Seed operations: GET /sessions, GET /sessions/count, DELETE /sessions, DELETE /sessions/{sessionId},
GET /sessions/validate/{sessionId}. The vendor's spec declares no response schemas (its generated
methods return None), so the answers are read from the raw body of `*_with_http_info`. The bearer
token is set only through the generated Configuration (`access_token`).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from nestjs_client.exceptions import ApiException, BadRequestException, ForbiddenException, NotFoundException, UnauthorizedException

from support import ALICE, DAVE, body_json, nestjs_sessions, polario_login, quatrix_auth, quatrix_login

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def listing(api, current: str, page: str = "1", limit: str = "10") -> dict:
    resp = api.session_controller_get_active_sessions_with_http_info(
        current_session_id=current, page=page, limit=limit
    )
    assert resp.status_code == 200
    assert resp.data is None  # no response schema in the vendor's spec
    return body_json(resp)


def nest_error(exc: ApiException, status: int) -> dict:
    body = body_json(exc)
    assert exc.status == status
    assert body["statusCode"] == status and body["message"] and body["error"], body
    return body


def test_list_count_and_validate_sessions_of_every_family(server):
    older, older_token = quatrix_login(server, ALICE)  # family D session (opaque token)
    time.sleep(1.1)  # times are whole seconds: make the order of the two logins visible
    jwt_login = polario_login(server, ALICE, browser="App", deviceName="Pixel 9", os="Android", osVersion="16")
    other = polario_login(server, DAVE)  # another user's session: never shown to alice

    api = nestjs_sessions(server, jwt_login.jwt)
    body = listing(api, jwt_login.device_id)
    assert body["total"] == 2 and body["page"] == 1 and body["limit"] == 10 and body["totalPages"] == 1
    ids = [s["id"] for s in body["sessions"]]
    assert set(ids) == {jwt_login.device_id, str(older.data.session_id)}
    assert other.device_id not in ids
    # Newest lastActiveAt first: the Polario session was made (and used) last.
    assert ids[0] == jwt_login.device_id
    mine = body["sessions"][0]
    assert mine["isCurrent"] is True and body["sessions"][1]["isCurrent"] is False
    assert mine["deviceInfo"] == "Pixel 9 (App, Android 16)"
    assert mine["ipAddress"] == "127.0.0.1"
    assert mine["location"] is None
    for s in body["sessions"]:
        assert ISO.match(s["lastActiveAt"]) and ISO.match(s["createdAt"]), s

    # currentSessionId marks that session instead.
    marked = listing(api, str(older.data.session_id))
    assert [s["id"] for s in marked["sessions"] if s["isCurrent"]] == [str(older.data.session_id)]

    count = api.session_controller_get_session_count_with_http_info()
    assert count.status_code == 200 and body_json(count) == {"count": 2}

    valid = api.session_controller_validate_session_with_http_info(session_id=str(older.data.session_id))
    assert body_json(valid) == {"valid": True, "message": "Session is active"}
    # Another user's session reads as not existing.
    foreign = api.session_controller_validate_session_with_http_info(session_id=other.device_id)
    assert body_json(foreign) == {"valid": False, "message": "Session is expired, revoked, or does not exist"}

    # A family D session token is a bearer too; a keepalive makes its session the most recent.
    time.sleep(1.1)
    assert quatrix_auth(server, token=older_token).session_keepalive_get_with_http_info().status_code == 200
    via_token = listing(nestjs_sessions(server, older_token), str(older.data.session_id))
    assert via_token["total"] == 2
    assert [s["id"] for s in via_token["sessions"]] == [str(older.data.session_id), jwt_login.device_id]


def test_pages_and_limits(server):
    logins = [polario_login(server, ALICE) for _ in range(3)]
    api = nestjs_sessions(server, logins[-1].jwt)
    first = listing(api, logins[-1].device_id, page="1", limit="2")
    assert (first["total"], first["page"], first["limit"], first["totalPages"]) == (3, 1, 2, 2)
    assert len(first["sessions"]) == 2
    second = listing(api, logins[-1].device_id, page="2", limit="2")
    assert len(second["sessions"]) == 1
    past = listing(api, logins[-1].device_id, page="9", limit="2")
    assert past["sessions"] == [] and past["total"] == 3
    clamped = listing(api, logins[-1].device_id, page="1", limit="500")
    assert clamped["limit"] == 50
    for page, limit in (("abc", "10"), ("1", "ten")):
        with pytest.raises(BadRequestException) as refused:
            api.session_controller_get_active_sessions(current_session_id="", page=page, limit=limit)
        nest_error(refused.value, 400)


def test_revoke_one_session(server):
    mine = polario_login(server, ALICE)
    second = polario_login(server, ALICE)
    foreign = polario_login(server, DAVE)
    api = nestjs_sessions(server, mine.jwt)

    done = api.session_controller_revoke_session_with_http_info(session_id=second.device_id)
    assert done.status_code == 200
    assert body_json(done) == {"success": True, "message": "Session revoked successfully"}
    gone = api.session_controller_validate_session_with_http_info(session_id=second.device_id)
    assert body_json(gone)["valid"] is False

    with pytest.raises(NotFoundException) as again:
        api.session_controller_revoke_session(session_id=second.device_id)
    nest_error(again.value, 404)
    with pytest.raises(NotFoundException) as unknown:
        api.session_controller_revoke_session(session_id=str(uuid.uuid4()))
    nest_error(unknown.value, 404)
    with pytest.raises(ForbiddenException) as not_mine:
        api.session_controller_revoke_session(session_id=foreign.device_id)
    nest_error(not_mine.value, 403)
    # The other user's session is untouched.
    assert listing(nestjs_sessions(server, foreign.jwt), foreign.device_id)["total"] == 1


def test_revoke_all_sessions(server):
    quatrix_login(server, ALICE)
    polario_login(server, ALICE)
    mine = polario_login(server, ALICE)
    api = nestjs_sessions(server, mine.jwt)
    done = api.session_controller_revoke_all_sessions_with_http_info()
    assert done.status_code == 200
    assert body_json(done) == {"success": True, "message": "Logged out from 3 device(s)", "revokedCount": 3}
    # The caller's own session is revoked too.
    with pytest.raises(UnauthorizedException) as refused:
        api.session_controller_get_session_count()
    nest_error(refused.value, 401)


def test_no_valid_bearer_is_401(server):
    api = nestjs_sessions(server, "not-a-session-token")
    calls = (
        lambda: api.session_controller_get_active_sessions(current_session_id="", page="1", limit="10"),
        api.session_controller_get_session_count,
        api.session_controller_revoke_all_sessions,
        lambda: api.session_controller_revoke_session(session_id=str(uuid.uuid4())),
        lambda: api.session_controller_validate_session(session_id=str(uuid.uuid4())),
    )
    for call in calls:
        with pytest.raises(UnauthorizedException) as refused:
            call()
        assert body_json(refused.value) == {"statusCode": 401, "message": "Unauthorized", "error": "Unauthorized"}
