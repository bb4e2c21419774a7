//! The OpenAPI document: generated from the handlers' annotations.

use serde_json::{Value, json};
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

/// The states a campaign can be in (`CampaignState` as the document names it).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum StateValue {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
    Cancelled,
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
    components(schemas(ErrorBody, ErrorDetail, StateValue)),
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

/// The document as the API behaves, beyond what the handlers' annotations
/// say: every status an operation can answer, the cursor's shape, and links
/// from the operation that returns an id to those that take it.
///
/// - An operation with a JSON body can answer 413 (over 1 MiB) and 415 (not
///   JSON); one with path or query parameters, 400 (one does not parse, or a
///   cursor this API did not return).
/// - A `cursor` is URL-safe base64 without padding.
/// - Each operation gets an `operationId` of its method and path.
/// - Links: the `id` (or `phone_number`) a create or a list returns feeds the
///   operations on `…/{id}`; a list's `next_cursor` feeds its own `cursor`.
///
/// The result is JSON: utoipa's types have no room for some of it
/// (`propertyNames`, say).
pub fn exact(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    tighten(&mut doc);
    doc
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!("{method}_{}", words.join("_"))
}

/// Schemas the derive cannot say: topic maps, and time zones as the names
/// chrono-tz knows (what the API accepts), in what creates or changes a
/// resource (a render's attributes are only rendered).
fn tighten_components(doc: &mut Value) {
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
    let zone = json!({"type": "string", "enum": zones});
    let topics = json!({
        "type": ["object", "null"],
        "propertyNames": {"pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
        "additionalProperties": {"type": "boolean"},
    });
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        let writes = ["Create", "Patch", "Upsert"]
            .iter()
            .any(|p| name.starts_with(p));
        if !writes {
            continue;
        }
        if props.contains_key("topics") {
            props.insert("topics".into(), topics.clone());
        }
        if let Some(tz) = props.get_mut("default_timezone") {
            let nullable = tz["type"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("null")));
            *tz = zone.clone();
            if nullable {
                tz["type"] = json!(["string", "null"]);
                tz["enum"]
                    .as_array_mut()
                    .expect("an enum")
                    .push(Value::Null);
            }
        }
        if let Some(attributes) = props.get_mut("attributes").and_then(Value::as_object_mut) {
            attributes.insert(
                "properties".into(),
                json!({"timezone": {"type": ["string", "null"], "enum": zones.iter().map(|z| json!(z)).chain([Value::Null]).collect::<Vec<_>>()}}),
            );
        }
    }
}

fn tighten(doc: &mut Value) {
    tighten_components(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    // Operations on `{collection}/{param}…`, for the links.
    let mut by_item: Vec<(String, String, String, String)> = vec![]; // (collection, param, path, method)
    for (path, item) in paths.iter() {
        if let Some((collection, rest)) = path.split_once("/{")
            && let Some((param, tail)) = rest.split_once('}')
            && !tail.contains('{')
        {
            for method in METHODS {
                if item.get(method).is_some() {
                    by_item.push((collection.into(), param.into(), path.clone(), method.into()));
                }
            }
        }
    }
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            op.insert("operationId".into(), operation_id(method, path).into());
            let has_body = op.contains_key("requestBody");
            let mut has_cursor = false;
            let has_params = match op.get_mut("parameters").and_then(Value::as_array_mut) {
                Some(params) => {
                    for p in params.iter_mut() {
                        if p["name"] == "cursor" {
                            has_cursor = true;
                            p["schema"] = json!({
                                "type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$",
                            });
                        }
                    }
                    !params.is_empty()
                }
                None => false,
            };
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses is an object");
            if has_body {
                responses
                    .entry("413")
                    .or_insert_with(|| error_response("The body is over 1 MiB"));
                responses.entry("415").or_insert_with(|| {
                    error_response("The body is not JSON (`Content-Type: application/json`)")
                });
            }
            if has_params {
                let what = if has_cursor {
                    "A parameter does not parse, or `cursor` is not a `next_cursor` this API returned"
                } else {
                    "A parameter does not parse"
                };
                responses
                    .entry("400")
                    .or_insert_with(|| error_response(what));
            }
            // Links out of the success responses.
            let mut links = serde_json::Map::new();
            if has_cursor {
                links.insert(
                    "NextPage".into(),
                    json!({
                        "operationId": operation_id(method, path),
                        "parameters": {"cursor": "$response.body#/next_cursor"},
                        "description": "The next page, while `next_cursor` is not null",
                    }),
                );
            }
            let creates = method == "post";
            let lists = method == "get" && has_cursor;
            if creates || lists {
                for (collection, param, target, target_method) in &by_item {
                    if collection != path {
                        continue;
                    }
                    let source = if creates {
                        format!("$response.body#/{param}")
                    } else {
                        format!("$response.body#/data/0/{param}")
                    };
                    let name = operation_id(target_method, target);
                    links.insert(
                        name.clone(),
                        json!({"operationId": name, "parameters": {param.as_str(): source}}),
                    );
                }
            }
            if links.is_empty() {
                continue;
            }
            for (status, response) in responses.iter_mut() {
                if status.starts_with('2') && response.get("content").is_some() {
                    response["links"] = Value::Object(links.clone());
                }
            }
        }
    }
}
