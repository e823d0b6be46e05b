//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift from
//! the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::families::{admin, app, nestjs, nextauth, polario, quatrix};
use crate::ops;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey",
        description = "Self-hosted authentication and session server. Four session API families \
            (nextAuth, Polario SCRAM, NestJS session management, Quatrix) over one model."
    ),
    paths(
        quatrix::login,
        quatrix::login_mfa,
        quatrix::keepalive,
        quatrix::logout,
        quatrix::captcha,
        quatrix::unblock_captcha,
        polario::scram_first,
        polario::scram_final,
        polario::logout,
        polario::refresh,
        nestjs::list,
        nestjs::count,
        nestjs::revoke_all,
        nestjs::revoke,
        nestjs::validate,
        nextauth::login_status,
        nextauth::qr_login,
        nextauth::logout,
        nextauth::provoke,
        nextauth::provoke_account,
        nextauth::provoke_user,
        nextauth::qr_enrol,
        nextauth::vash,
        nextauth::register_user,
        nextauth::account_user,
        nextauth::account_blocked,
        nextauth::events,
        app::enrol,
        app::login,
        app::challenge,
        app::events,
        app::answer,
        admin::list_servers,
        admin::create_server,
        admin::create_api_key,
        admin::set_permissions,
        admin::create_user,
        admin::delete_user,
        admin::set_password,
        admin::enable_totp,
        admin::set_pin,
        admin::rotate_keys,
        ops::jwks,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(
        quatrix::SessionLoginResp,
        quatrix::MfaLoginReq,
        quatrix::UnblockCaptchaReq,
        quatrix::UnblockCaptchaResp,
        quatrix::ErrorModel,
        polario::AuthRequest,
        polario::AuthResponse,
        polario::AuthLoginRequest,
        polario::AuthLoginResponse,
        polario::AuthRefreshRequest,
        polario::AuthRefreshResponse,
        polario::StatusOk,
        polario::PolarioError,
        nestjs::SessionView,
        nestjs::SessionList,
        nestjs::SessionCount,
        nestjs::RevokeAllResult,
        nestjs::RevokeResult,
        nestjs::Validation,
        nestjs::NestError,
        nextauth::LoginStatusView,
        nextauth::AccountView,
        nextauth::NextAuthError,
        nextauth::UserContext,
        latchkey_wire::EnrolRequest,
        latchkey_wire::Enrolled,
        latchkey_wire::AppLoginRequest,
        latchkey_wire::AppLoggedIn,
        latchkey_wire::ChallengeRequest,
        latchkey_wire::Challenge,
        latchkey_wire::AnswerRequest,
        latchkey_wire::Answered,
        latchkey_wire::Push,
        latchkey_wire::ErrorBody,
        admin::NewServer,
        admin::ServerView,
        admin::NewApiKey,
        admin::ApiKeyView,
        admin::PermissionSet,
        admin::NewUser,
        admin::UserView,
        admin::NewPassword,
        admin::NewPin,
        admin::TotpView,
        admin::RotatedKey,
        ops::JwkSet,
        ops::Health,
        ops::Readiness,
        ops::OwnError,
    )),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or session token")
                    .build(),
            ),
        );
    }
}
