"""Family B through the client generated from the Polario spec (interop/specs/polario/openapi.yaml).

Seed operations: POST /auth/auth (SCRAM client-first), POST /auth/login (client-final), GET
/auth/logout, POST /auth/session (refresh). The SCRAM arithmetic is interop/scram.py; every message
goes through the generated AuthApi/SessionApi. The access JWT travels in the `Session` response
header and the successor refresh token in an extra `refreshToken` field, neither of which the
vendor's spec documents: they are read from the raw answer the generated client exposes.
"""

from __future__ import annotations

import base64
import time

import nestjs_client.exceptions
import polario_client
import pytest
from polario_client.exceptions import ApiException, BadRequestException, ForbiddenException, UnauthorizedException

import scram
from support import (ALICE, BOB, DAVE, PASSWORD, body_json, header, jwt_parts, nestjs_sessions,
                     polario_client_for, polario_first, polario_login)


def session_api(server) -> polario_client.SessionApi:
    return polario_client.SessionApi(polario_client_for(server))


def refresh(server, token: str):
    """POST /auth/session through the generated SessionApi (with its raw answer)."""
    return session_api(server).auth_session_post_with_http_info(
        polario_client.AuthRefreshRequest(refresh_token=token)
    )


def assert_416(server, token: str) -> None:
    with pytest.raises(ApiException) as refused:
        session_api(server).auth_session_post(polario_client.AuthRefreshRequest(refresh_token=token))
    assert refused.value.status == 416, refused.value
    # The spec's ModelSwagErrorRangeNotSatisfiable.
    assert isinstance(refused.value.data, polario_client.ModelSwagErrorRangeNotSatisfiable)
    assert refused.value.data.error


def jwt_is_accepted(server, jwt: str) -> bool:
    """Asks latchkey itself (family C, generated NestJS client) whether it takes this JWT."""
    try:
        nestjs_sessions(server, jwt).session_controller_get_session_count_with_http_info()
        return True
    except nestjs_client.exceptions.ApiException as exc:
        assert exc.status == 401, exc
        return False


def test_scram_first_message(server):
    client_nonce, first = polario_first(server, ALICE, platform="ios")
    assert isinstance(first, polario_client.AuthAuthenticationResponse)
    assert first.nonce.startswith(client_nonce) and len(first.nonce) > len(client_nonce)
    assert len(base64.b64decode(first.salt)) >= 16
    assert first.iteration_count == 4096
    assert first.expires > time.time()


def test_unknown_email_gets_a_well_formed_first_message_and_401(server):
    client_nonce, first = polario_first(server, "nobody@example.com")
    assert first.nonce.startswith(client_nonce)
    assert base64.b64decode(first.salt)
    assert first.iteration_count == 4096
    final = scram.client_final("nobody@example.com", PASSWORD, client_nonce, first.nonce, first.salt,
                               first.iteration_count)
    with pytest.raises(UnauthorizedException) as refused:
        session_api(server).auth_login_post(polario_client.AuthLoginRequest(
            email="nobody@example.com", nonce=first.nonce, proof=final.proof))
    assert isinstance(refused.value.data, polario_client.ModelSwagErrorUnauthorized)


def test_malformed_first_message_is_400(server):
    api = polario_client.AuthApi(polario_client_for(server))
    with pytest.raises(BadRequestException) as refused:
        api.auth_auth_post(polario_client.AuthAuthenticationRequest(email=ALICE, nonce="has,comma"))
    assert isinstance(refused.value.data, polario_client.ModelSwagErrorBadRequest)
    assert refused.value.data.error


def test_login_answers_signature_refresh_token_and_jwt(server):
    login = polario_login(server, ALICE, platform="android", browser="App", deviceName="Pixel 9",
                          os="Android", osVersion="16")
    data = login.response.data
    assert isinstance(data, polario_client.AuthLoginResponse)
    assert data.redirect_project_id is None and data.sendbird_session_token is None
    assert data.refresh_token
    head, claims = jwt_parts(login.jwt)
    assert head["alg"] == "EdDSA" and head.get("kid")
    assert claims["sub"] == ALICE
    assert claims["sid"] == login.device_id
    assert "pwd" in claims["amr"]
    assert claims["exp"] > claims["iat"]
    assert jwt_is_accepted(server, login.jwt)


def test_wrong_proof_is_401(server):
    client_nonce, first = polario_first(server, ALICE)
    final = scram.client_final(ALICE, "not the password", client_nonce, first.nonce, first.salt,
                               first.iteration_count)
    with pytest.raises(UnauthorizedException) as refused:
        session_api(server).auth_login_post(
            polario_client.AuthLoginRequest(email=ALICE, nonce=first.nonce, proof=final.proof))
    assert isinstance(refused.value.data, polario_client.ModelSwagErrorUnauthorized)


def test_replayed_handshake_is_400(server):
    client_nonce, first = polario_first(server, ALICE)
    final = scram.client_final(ALICE, PASSWORD, client_nonce, first.nonce, first.salt, first.iteration_count)
    request = polario_client.AuthLoginRequest(email=ALICE, nonce=first.nonce, proof=final.proof)
    assert session_api(server).auth_login_post_with_http_info(request).status_code == 200
    with pytest.raises(BadRequestException) as refused:
        session_api(server).auth_login_post(request)
    assert isinstance(refused.value.data, polario_client.ModelSwagErrorBadRequest)


def test_platform_must_match_the_first_message(server):
    client_nonce, first = polario_first(server, ALICE, platform="ios")
    final = scram.client_final(ALICE, PASSWORD, client_nonce, first.nonce, first.salt, first.iteration_count)
    with pytest.raises(BadRequestException):
        session_api(server).auth_login_post(
            polario_client.AuthLoginRequest(email=ALICE, nonce=first.nonce, proof=final.proof),
            platform="android",
        )


def test_user_with_a_second_factor_gets_403(server):
    with pytest.raises(ForbiddenException) as refused:
        polario_login(server, BOB)
    assert isinstance(refused.value.data, polario_client.ModelSwagErrorForbidden)
    assert "second factor" in refused.value.data.error


def test_captcha_required_after_five_failures_is_403(server):
    for _ in range(5):
        with pytest.raises(UnauthorizedException):
            polario_login(server, DAVE, "not the password")
    with pytest.raises(ForbiddenException) as refused:
        polario_login(server, DAVE)
    assert "CAPTCHA" in refused.value.data.error


def test_logout_revokes_the_session_and_its_refresh_token(server):
    login = polario_login(server, ALICE)
    out = session_api(server).auth_logout_get(session=login.jwt)
    assert isinstance(out, polario_client.ModelSwagStatusOk)
    assert out.status == "ok"
    assert not jwt_is_accepted(server, login.jwt)
    with pytest.raises(UnauthorizedException) as again:
        session_api(server).auth_logout_get(session=login.jwt)
    assert isinstance(again.value.data, polario_client.ModelSwagErrorUnauthorized)
    assert_416(server, login.refresh_token)


def test_logout_with_an_invalid_jwt_is_401(server):
    with pytest.raises(UnauthorizedException):
        session_api(server).auth_logout_get(session="not.a.jwt")


def test_refresh_answers_a_new_jwt_in_the_session_header(server):
    login = polario_login(server, ALICE)
    resp = refresh(server, login.refresh_token)
    assert resp.status_code == 200
    assert isinstance(resp.data, polario_client.AuthRefreshResponse)
    assert resp.data.device_id == login.device_id
    assert resp.data.sendbird_session_token is None
    jwt = header(resp.headers, "Session")
    assert jwt and jwt != login.jwt
    assert jwt_parts(jwt)[1]["sid"] == login.device_id
    assert jwt_is_accepted(server, jwt)


def test_refresh_chain_of_a_client_that_never_reads_the_successor(server):
    """docs/contract.md, family B, "rotation when the client takes part": a client generated from the vendor's
    spec never sees the successor refresh token and presents its login refresh token forever; that
    must keep working. This test never reads the `refreshToken` of a refresh answer."""
    login = polario_login(server, ALICE)
    jwts = []
    for attempt in range(1, 6):
        try:
            resp = refresh(server, login.refresh_token)
        except ApiException as exc:
            pytest.fail(f"refresh {attempt} of 5 with the login refresh token: {exc.status} {exc.body}")
        assert resp.status_code == 200
        assert resp.data.device_id == login.device_id
        jwt = header(resp.headers, "Session")
        assert jwt
        jwts.append(jwt)
    assert len(set(jwts)) == 5
    assert jwt_is_accepted(server, jwts[-1])


def test_adopting_the_successor_rotates_and_reuse_revokes_the_session(server):
    login = polario_login(server, ALICE)
    first = refresh(server, login.refresh_token)
    # The successor is an extra field the vendor's model lacks: read from the raw answer.
    successor = body_json(first)["refreshToken"]
    assert successor and successor != login.refresh_token
    second = refresh(server, successor)
    assert second.status_code == 200
    newest_jwt = header(second.headers, "Session")
    newest = body_json(second)["refreshToken"]
    assert jwt_is_accepted(server, newest_jwt)

    # The successor has been used: presenting its predecessor is theft, the session ends.
    assert_416(server, login.refresh_token)
    assert_416(server, newest)
    assert not jwt_is_accepted(server, newest_jwt)


def test_invalid_refresh_token_is_416(server):
    assert_416(server, "not-a-refresh-token")
