//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift from
//! the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::families::quatrix;
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
    }
}
