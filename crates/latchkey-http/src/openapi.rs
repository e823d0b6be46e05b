//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift from
//! the code.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::families::{
    admin, app, nestjs, nextauth, nextauth_directory, nextauth_html, nextauth_management,
    nextauth_transactions, polario, quatrix,
};
use crate::{ops, pages};

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
        nextauth_directory::list_accounts,
        nextauth_directory::get_account,
        nextauth_directory::update_account,
        nextauth_directory::delete_account,
        nextauth_directory::list_users,
        nextauth_directory::delete_user,
        nextauth_directory::user_accounts,
        nextauth_directory::delete_user_accounts,
        nextauth_directory::get_user_attributes,
        nextauth_directory::set_user_attributes,
        nextauth_directory::update_user_attributes,
        nextauth_directory::delete_user_attributes,
        nextauth_directory::delete_user_attribute,
        nextauth_directory::get_server_attributes,
        nextauth_directory::set_server_attributes,
        nextauth_directory::update_server_attributes,
        nextauth_directory::delete_server_attributes,
        nextauth_directory::delete_server_attribute,
        nextauth_directory::get_privileged_attributes,
        nextauth_directory::set_privileged_attributes,
        nextauth_directory::update_privileged_attributes,
        nextauth_directory::delete_privileged_attributes,
        nextauth_directory::delete_privileged_attribute,
        nextauth_directory::get_global_attributes,
        nextauth_directory::set_global_attributes,
        nextauth_directory::update_global_attributes,
        nextauth_directory::delete_global_attributes,
        nextauth_directory::delete_global_attribute,
        nextauth_management::api_keys,
        nextauth_management::create_api_key,
        nextauth_management::servers,
        nextauth_management::create_server,
        nextauth_management::get_server,
        nextauth_management::update_server,
        nextauth_management::all_permissions,
        nextauth_management::permissions,
        nextauth_management::grant_permissions,
        nextauth_management::revoke_permissions,
        nextauth_management::user_role,
        nextauth_management::user_role_made,
        nextauth_html::login,
        nextauth_html::enrol,
        nextauth_html::footer,
        app::enrol,
        app::login,
        app::challenge,
        app::events,
        app::answer,
        app::transactions,
        app::answer_transaction,
        nextauth_transactions::create_transaction,
        nextauth_transactions::transaction_result,
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
        pages::forward_auth::check,
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
        nextauth_directory::NextAuthAccounts,
        nextauth_directory::NextAuthUser,
        nextauth_directory::NextAuthUsers,
        nextauth_management::NextAuthApiKey,
        nextauth_management::NextAuthApiKeys,
        nextauth_management::NextAuthServer,
        nextauth_management::NextAuthServers,
        nextauth_management::NextAuthPermission,
        nextauth_management::NextAuthPermissions,
        nextauth_management::NextAuthRole,
        nextauth_transactions::NextAuthTransaction,
        nextauth_transactions::NextAuthTransactionId,
        nextauth_transactions::NextAuthTransactionResult,
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
        latchkey_wire::TransactionPush,
        latchkey_wire::TransactionsRequest,
        latchkey_wire::Transactions,
        latchkey_wire::TransactionAnswer,
        latchkey_wire::TransactionAnswered,
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
    modifiers(&SecuritySchemes, &BinaryBodies, &DocumentedErrors, &EventStreams),
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
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::pages::SESSION_COOKIE,
                "The browser session cookie a sign-in at /login sets",
            ))),
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

/// Bodies of raw bytes (QR payloads, PNG images) are binary strings, not arrays of integers.
struct BinaryBodies;

impl Modify for BinaryBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        use utoipa::openapi::{RefOr, Schema};
        const BINARY_TYPES: [&str; 2] = ["application/octet-stream", "image/png"];
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
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

/// The error answers every operation can give, with the family's error body, where an
/// operation's own annotation does not already list them: 400 (malformed input), 401 (a
/// credential missing or wrong, on operations that need one), 403 and 404 (families A, the app
/// protocol and the admin API check permissions and name things that may not exist), 413 (a
/// body over 64 KiB), 429 (the per-address login rate, on login routes) and 503 (not initialised,
/// overloaded, or past `request_timeout`). The guard and extractors answer these on every route,
/// so they are documented from one place rather than on each annotation.
struct DocumentedErrors;

impl Modify for DocumentedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        for (path, item) in openapi.paths.paths.iter_mut() {
            let family = crate::error::Family::of(path);
            let probe = [
                "/healthz",
                "/readyz",
                "/metrics",
                "/openapi.json",
                "/.well-known/jwks.json",
            ]
            .contains(&path.as_str());
            let schema = match family {
                crate::error::Family::Quatrix => "ErrorModel",
                crate::error::Family::Nestjs => "NestError",
                crate::error::Family::Polario => "PolarioError",
                crate::error::Family::NextAuth => "NextAuthError",
                crate::error::Family::Own if path.starts_with("/app/") => "ErrorBody",
                crate::error::Family::Own | crate::error::Family::Page => "OwnError",
            };
            let named = family == crate::error::Family::NextAuth
                || path.starts_with("/admin/")
                || path.starts_with("/app/");
            let login = crate::guard::LOGIN_ROUTES.contains(&path.as_str());
            for operation in operations(item) {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = operation.request_body.is_some();
                let mut wanted: Vec<(&str, &str)> = Vec::new();
                if !probe {
                    wanted.push(("400", "Malformed request: the body says what is wrong"));
                }
                if secured || path.starts_with("/app/") {
                    wanted.push(("401", "A credential is missing, unknown or wrong"));
                }
                if named {
                    wanted.push(("403", "The credential does not allow this"));
                    wanted.push(("404", "A thing the request names does not exist"));
                }
                if has_body {
                    wanted.push(("413", "The body is over 64 KiB"));
                }
                if login {
                    wanted.push(("429", "Too many logins from this address (Retry-After)"));
                }
                if path != "/healthz" && path != "/metrics" && path != "/openapi.json" {
                    wanted.push((
                        "503",
                        "Not initialised yet, overloaded, or the request took too long",
                    ));
                }
                let responses = &mut operation.responses.responses;
                for (status, description) in wanted {
                    responses.entry(status.to_owned()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name(schema)))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
                }
            }
        }
        // A family D call without a valid X-Auth-Token answers ErrorModel, a wrong CAPTCHA
        // answer the vendor's {valid}: both are 401.
        if let Some(op) = openapi
            .paths
            .paths
            .get_mut("/session/unblock-captcha")
            .and_then(|item| item.post.as_mut())
        {
            use utoipa::openapi::schema::OneOfBuilder;
            use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
            let either = OneOfBuilder::new()
                .item(Ref::from_schema_name("UnblockCaptchaResp"))
                .item(Ref::from_schema_name("ErrorModel"))
                .build();
            op.responses.responses.insert(
                "401".to_owned(),
                ResponseBuilder::new()
                    .description(
                        "Wrong answer ({valid: false}), or no valid X-Auth-Token (ErrorModel)",
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::RefOr::T(
                                utoipa::openapi::Schema::OneOf(either),
                            )))
                            .build(),
                    )
                    .build()
                    .into(),
            );
        }
    }
}

/// An event stream's schema describes one event as a client reads it: the `event` name and the
/// `data` text (a JSON document of the schema the operation's description names).
struct EventStreams;

impl Modify for EventStreams {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{RefOr, Schema};
        for item in openapi.paths.paths.values_mut() {
            let Some(get) = item.get.as_mut() else {
                continue;
            };
            for response in get.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if let Some(content) = response.content.get_mut("text/event-stream") {
                    let text = || ObjectBuilder::new().schema_type(Type::String).build();
                    content.schema = Some(RefOr::T(Schema::Object(
                        ObjectBuilder::new()
                            .property("event", text())
                            .property("data", text())
                            .property("id", text())
                            .property(
                                "retry",
                                ObjectBuilder::new().schema_type(Type::Integer).build(),
                            )
                            .build(),
                    )));
                }
            }
        }
    }
}

/// The operations of a path item.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}
