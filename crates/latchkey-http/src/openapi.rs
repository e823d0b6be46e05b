//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift from
//! the code.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    servers((url = "/", description = "This latchkey (the address the document was fetched from)")),
    modifiers(&SecuritySchemes, &BinaryBodies),
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
        let header = |name: &str, what: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, what)))
        };
        components.add_security_scheme(
            "api_key",
            header(
                "X-apikey",
                "An API key (family A: a key with a role on the server; admin: a root key)",
            ),
        );
        components.add_security_scheme(
            "role_id",
            header("X-su", "The role to act as (the key's role must be root)"),
        );
        components.add_security_scheme(
            "auth_token",
            header("X-Auth-Token", "A family D session token"),
        );
        components.add_security_scheme("session_jwt", header("Session", "A family B access JWT"));
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

/// Bodies of raw bytes (QR payloads, PNG images) are binary strings, not arrays of integers.
struct BinaryBodies;

impl Modify for BinaryBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        use utoipa::openapi::{RefOr, Schema};
        const BINARY_TYPES: [&str; 2] = ["application/octet-stream", "image/png"];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    for (media_type, content) in response.content.iter_mut() {
                        if BINARY_TYPES.contains(&media_type.as_str()) {
                            content.schema = Some(RefOr::T(Schema::Object(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                                    .build(),
                            )));
                        }
                    }
                }
            }
        }
    }
}
