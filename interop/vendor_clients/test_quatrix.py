"""Family D through the client generated from the Quatrix spec (interop/specs/quatrix/swagger.yaml).

Seed operations: GET /session/login (Basic), POST /session/login (MFA: TOTP and PIN), GET
/session/keepalive, GET /session/logout, POST /session/unblock-captcha. The 403 CAPTCHA answer and
GET /session/captcha are latchkey's additions the spec lacks: read from the raw answer the generated
client exposes, and called through the generated ApiClient.
"""

from __future__ import annotations

import json

import pyotp
import pytest
import quatrix_client
from quatrix_client.exceptions import ApiException, BadRequestException, ForbiddenException, UnauthorizedException

import serve
from support import (ALICE, BOB, CAROL, DAVE, PASSWORD, PIN, generated_call, header, png_size,
                     quatrix_auth, quatrix_login, quatrix_mfa)


def error_model(exc: ApiException, code: int) -> quatrix_client.ErrorModel:
    """The ErrorModel of an error answer, parsed by the generated model (so its shape is checked)."""
    model = quatrix_client.ErrorModel.from_json(exc.body)
    assert model.code == code, exc.body
    assert isinstance(model.details, dict), exc.body
    return model


def test_basic_login_keepalive_and_logout(server):
    resp, token = quatrix_login(server, ALICE)
    assert resp.status_code == 200
    assert isinstance(resp.data, quatrix_client.SessionLoginResp)
    assert resp.data.session_id is not None
    assert header(resp.headers, "Mfa-Code") is None

    api = quatrix_auth(server, token=token)
    kept = api.session_keepalive_get_with_http_info()
    assert kept.status_code == 200
    out = api.session_logout_get_with_http_info()
    assert out.status_code == 200

    with pytest.raises(UnauthorizedException) as refused:
        api.session_keepalive_get()
    assert isinstance(refused.value.data, quatrix_client.ErrorModel)
    error_model(refused.value, 3)


def test_wrong_password_and_unknown_user_are_told_apart_by_nothing(server):
    answers = []
    for user, password in ((ALICE, "wrong password"), ("nobody@example.com", "wrong password")):
        with pytest.raises(UnauthorizedException) as refused:
            quatrix_auth(server, user=user, password=password).session_login_get()
        # 401 is in the spec with ErrorModel: the generated client parsed it.
        assert isinstance(refused.value.data, quatrix_client.ErrorModel)
        assert refused.value.data.code == 2
        assert (header(refused.value.headers, "WWW-Authenticate") or "").startswith("Basic")
        answers.append(json.loads(refused.value.body))
    assert answers[0] == answers[1]


def test_keepalive_without_a_valid_token_is_401(server):
    with pytest.raises(UnauthorizedException) as refused:
        quatrix_auth(server, token="not-a-token").session_keepalive_get()
    error_model(refused.value, 3)


def test_totp_second_factor(server):
    resp, token = quatrix_login(server, BOB)
    assert resp.status_code == 207
    assert isinstance(resp.data, quatrix_client.SessionLoginResp)
    assert header(resp.headers, "Mfa-Code") == "1"
    pending_id = resp.data.session_id

    totp = pyotp.TOTP(server.totp_secret[BOB])
    api = quatrix_auth(server, token=token)
    # A wrong code: 401 with ErrorModel (in the spec).
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    with pytest.raises(UnauthorizedException) as refused:
        api.session_login_post(quatrix_client.SessionLoginPostResp(auth_type="2FA", code=wrong))
    assert isinstance(refused.value.data, quatrix_client.ErrorModel)
    assert refused.value.data.code == 2

    code = totp.now()
    done = api.session_login_post_with_http_info(quatrix_client.SessionLoginPostResp(auth_type="2FA", code=code))
    assert done.status_code == 200
    assert done.data.session_id == pending_id
    assert api.session_keepalive_get_with_http_info().status_code == 200

    # The same code is accepted once: a second login cannot reuse it.
    again, token2 = quatrix_login(server, BOB)
    assert again.status_code == 207
    with pytest.raises(UnauthorizedException):
        quatrix_auth(server, token=token2).session_login_post(
            quatrix_client.SessionLoginPostResp(auth_type="2FA", code=code)
        )


def test_pin_second_factor_through_the_mfa_api_class(server):
    resp, token = quatrix_login(server, CAROL)
    assert resp.status_code == 207
    assert header(resp.headers, "Mfa-Code") == "2"
    mfa = quatrix_mfa(server, token)
    with pytest.raises(UnauthorizedException) as refused:
        mfa.session_login_post(quatrix_client.SessionLoginPostResp(auth_type="PIN", code="0000"))
    assert refused.value.data.code == 2
    done = mfa.session_login_post_with_http_info(quatrix_client.SessionLoginPostResp(auth_type="PIN", code=PIN))
    assert done.status_code == 200
    assert done.data.session_id == resp.data.session_id
    assert quatrix_auth(server, token=token).session_keepalive_get_with_http_info().status_code == 200


def test_second_factor_must_be_the_one_asked_for(server):
    _, token = quatrix_login(server, BOB)  # asked: 2FA
    with pytest.raises(BadRequestException) as refused:
        quatrix_auth(server, token=token).session_login_post(
            quatrix_client.SessionLoginPostResp(auth_type="PIN", code=PIN)
        )
    error_model(refused.value, 1)


def test_five_wrong_codes_end_the_pending_session(server):
    _, token = quatrix_login(server, CAROL)
    mfa = quatrix_mfa(server, token)
    for _ in range(5):
        with pytest.raises(UnauthorizedException):
            mfa.session_login_post(quatrix_client.SessionLoginPostResp(auth_type="PIN", code="1111"))
    with pytest.raises(UnauthorizedException):
        mfa.session_login_post(quatrix_client.SessionLoginPostResp(auth_type="PIN", code=PIN))


def fail_five_times(server, user: str) -> None:
    for _ in range(5):
        with pytest.raises(UnauthorizedException):
            quatrix_auth(server, user=user, password="not the password").session_login_get()


def captcha_required(server, user: str, password: str) -> tuple[str, dict]:
    """A login that must be stopped by the CAPTCHA: 403 is not in the vendor's spec, so the
    generated client raises ApiException, whose raw headers and body are read."""
    with pytest.raises(ForbiddenException) as blocked:
        quatrix_auth(server, user=user, password=password).session_login_get()
    model = error_model(blocked.value, 11)
    token = header(blocked.value.headers, "X-Auth-Token")
    assert token, blocked.value.headers
    assert model.details.get("session_id"), blocked.value.body
    return token, model.details


def fetch_captcha(server, token: str) -> bytes:
    """GET /session/captcha (latchkey extension, absent from the spec) with the generated ApiClient
    and its api_key (X-Auth-Token) setting."""
    api = quatrix_auth(server, token=token)
    resp = generated_call(api.api_client, "GET", "/session/captcha", ["api_key"], accept="image/png")
    assert resp.status == 200, resp.data
    assert (resp.getheader("content-type") or "").startswith("image/png")
    assert png_size(resp.data) == (240, 90)
    return resp.data


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_captcha_after_five_failures_then_unblock(server):
    fail_five_times(server, DAVE)
    # Now even the right password is held back until the CAPTCHA is solved.
    token, _ = captcha_required(server, DAVE, PASSWORD)
    api = quatrix_auth(server, token=token)

    # A wrong answer: 401 {valid: false} (in the spec, parsed by the generated client).
    fetch_captcha(server, token)
    with pytest.raises(UnauthorizedException) as wrong:
        api.session_unblock_captcha_post(quatrix_client.UnblockCaptchaReq(token="WRONG1"))
    assert isinstance(wrong.value.data, quatrix_client.SessionUnblockCaptchaResp)
    assert wrong.value.data.valid is False

    # A malformed body (token not a string): 400 ErrorModel, as the spec says.
    fetch_captcha(server, token)
    with pytest.raises(BadRequestException) as malformed:
        api.session_unblock_captcha_post(quatrix_client.UnblockCaptchaReq.model_construct(token=12345))
    assert isinstance(malformed.value.data, quatrix_client.ErrorModel)

    fetch_captcha(server, token)
    ok = api.session_unblock_captcha_post_with_http_info(quatrix_client.UnblockCaptchaReq(token=serve.CAPTCHA_ANSWER))
    assert ok.status_code == 200
    assert ok.data.valid is True
    # The session goes on (active: dave has no second factor).
    assert api.session_keepalive_get_with_http_info().status_code == 200
    # And the name's CAPTCHA requirement is cleared.
    again, _ = quatrix_login(server, DAVE)
    assert again.status_code == 200


def test_captcha_with_the_wrong_password_answers_valid_false(server):
    fail_five_times(server, DAVE)
    token, _ = captcha_required(server, DAVE, "still not the password")
    fetch_captcha(server, token)
    with pytest.raises(UnauthorizedException) as refused:
        quatrix_auth(server, token=token).session_unblock_captcha_post(
            quatrix_client.UnblockCaptchaReq(token=serve.CAPTCHA_ANSWER)
        )
    assert refused.value.data.valid is False


def test_captcha_then_second_factor(server):
    fail_five_times(server, BOB)
    token, _ = captcha_required(server, BOB, PASSWORD)
    fetch_captcha(server, token)
    api = quatrix_auth(server, token=token)
    ok = api.session_unblock_captcha_post_with_http_info(quatrix_client.UnblockCaptchaReq(token=serve.CAPTCHA_ANSWER))
    assert ok.status_code == 200 and ok.data.valid is True
    assert header(ok.headers, "Mfa-Code") == "1"
    done = api.session_login_post_with_http_info(
        quatrix_client.SessionLoginPostResp(auth_type="2FA", code=pyotp.TOTP(server.totp_secret[BOB]).now())
    )
    assert done.status_code == 200
