//! The OpenAPI document: generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every error: `{"error": {"code", "message", "field"?}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `unprocessable`, `not_found`, `conflict`, `unauthorized`, …
    pub code: String,
    pub message: String,
    /// The request field at fault, when there is one (`attributes.age`, `limit`).
    pub field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Event Stream Engine API",
        description = "Users, segments, templates, campaigns, messages and imports of Event Stream Engine. \
                       Every operation needs `Authorization: Bearer <API key>`. Lists are paginated with \
                       `?limit=&cursor=`; pass a page's `next_cursor` as `cursor` for the next page.",
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(ErrorBody, ErrorDetail, crate::campaigns::StateValue)),
    tags(
        (name = "users"), (name = "segments"), (name = "templates"),
        (name = "campaigns"), (name = "messages"), (name = "imports"), (name = "inbound"),
    ),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key whose SHA-256 hex digest is listed in API_KEYS",
                    ))
                    .build(),
            ),
        );
    }
}
