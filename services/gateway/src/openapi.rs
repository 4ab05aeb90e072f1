//! The OpenAPI 3 document of the REST API, generated from the operation
//! table ([`crate::rest::OPERATIONS`]) and the proto descriptors: schemas
//! follow the proto3 JSON mapping the REST API speaks (camelCase names, enums
//! as names, 64-bit integers as strings, timestamps as RFC 3339), so the
//! document describes exactly what is served. A copy is checked in at
//! `services/gateway/openapi.json`; a test fails when they drift.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use crate::rest::{self, MAX_PAGE_SIZE, OPERATIONS, Operation, fields_in_query, path_params};

/// The checked-in document, as the repository holds it.
pub const CHECKED_IN: &str = include_str!("../openapi.json");

/// The document, pretty-printed with a trailing newline (as checked in).
pub fn document_text() -> Result<String, rest::RestError> {
    let mut text = serde_json::to_string_pretty(&document()?).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

/// The OpenAPI document.
pub fn document() -> Result<Value, rest::RestError> {
    let pool = rest::descriptors()?;
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for operation in OPERATIONS {
        let method = rest::method_of(&pool, operation).ok_or(rest::RestError::UnknownMethod(operation.rpc))?;
        let follow = rest::follow_of(&pool, operation);
        let item = operation_object(operation, &method.input(), &method.output(), follow.as_ref(), &mut schemas);
        paths.entry(operation.path.to_owned()).or_default().insert(operation.method.to_owned(), item);
    }
    schemas.insert("Problem".to_owned(), problem_schema());
    Ok(json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Strata REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every Strata concern's API over JSON, served by the gateway beside gRPC on the same port. \
                            Messages are the gRPC messages in the proto3 JSON mapping; errors are RFC 9457 problems. \
                            Authenticate with `Authorization: Bearer strata_...` (an API token); platform admins may \
                            act for a team with `X-Strata-Team`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token, `strata_...`"}},
            "schemas": schemas,
        },
    }))
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string", "description": "What was wrong and what to do."},
            "code": {"type": "string", "description": "The gRPC status code name."},
        },
    })
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

fn operation_object(
    operation: &Operation,
    input: &MessageDescriptor,
    output: &MessageDescriptor,
    follow: Option<&prost_reflect::MethodDescriptor>,
    schemas: &mut BTreeMap<String, Value>,
) -> Value {
    let in_path: Vec<&str> = path_params(operation.path).collect();
    let mut parameters = Vec::new();
    for name in &in_path {
        if let Some(field) = input.get_field_by_name(name) {
            let schema = member_schema(input, &field, schemas);
            parameters.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
    }
    let rest_fields: Vec<FieldDescriptor> = input.fields().filter(|f| !in_path.contains(&f.name())).collect();
    let mut object = serde_json::Map::new();
    let (service, method) = operation.rpc.split_once('/').unwrap_or_default();
    object.insert("operationId".to_owned(), json!(operation_id(operation)));
    object.insert("summary".to_owned(), json!(operation.summary));
    object.insert("description".to_owned(), json!(format!("The `{method}` method of `{service}`.")));
    object.insert("tags".to_owned(), json!([service.split('.').nth(1).unwrap_or("strata")]));
    if fields_in_query(operation) {
        for field in &rest_fields {
            if let Some(schema) = query_schema(input, field, schemas) {
                parameters.push(json!({"name": field.name(), "in": "query", "required": false, "schema": schema}));
            }
        }
    } else {
        let mut properties = serde_json::Map::new();
        for field in &rest_fields {
            properties.insert(field.json_name().to_owned(), member_schema(input, field, schemas));
        }
        object.insert(
            "requestBody".to_owned(),
            json!({
                "required": true,
                "content": {"application/json": {"schema": {
                    "type": "object", "properties": properties, "additionalProperties": false,
                }}},
            }),
        );
    }
    if let Some(list) = operation.list {
        parameters.push(json!({"name": "page_size", "in": "query", "required": false,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": rest::DEFAULT_PAGE_SIZE}}));
        parameters.push(json!({"name": "page_token", "in": "query", "required": false, "schema": {"type": "string"},
            "description": format!("The `nextPageToken` of the previous page of `{list}`.")}));
    }
    if let Some(streaming) = follow {
        parameters.push(json!({"name": "follow", "in": "query", "required": false, "schema": {"type": "boolean"},
            "description": "Stream as server-sent events (text/event-stream) instead of one page: \
                            one event per item as it happens, until the client goes away."}));
        let streaming_input = streaming.input();
        for field in streaming_input.fields() {
            let known = input.get_field_by_name(field.name()).is_some();
            if !known && let Some(schema) = query_schema(&streaming_input, &field, schemas) {
                parameters.push(json!({"name": field.name(), "in": "query", "required": false, "schema": schema,
                    "description": "With `follow=true` only."}));
            }
        }
    }
    object.insert("parameters".to_owned(), Value::Array(parameters));

    let reply = message_ref(output, schemas);
    let mut responses = serde_json::Map::new();
    let success = if operation.status == 204 {
        json!({"description": "Done."})
    } else if operation.list.is_some() {
        let mut content = json!({"application/json": {"schema": {"allOf": [reply, {
            "type": "object",
            "properties": {"nextPageToken": {"type": "string", "description": "Absent on the last page."}},
        }]}}});
        if follow.is_some() {
            content["text/event-stream"] = json!({"schema": {"type": "string",
                "description": "With `follow=true`: `id:` seq, `event:` type, `data:` the item as JSON."}});
        }
        json!({"description": "A page of the list.", "content": content})
    } else {
        json!({"description": "The reply.", "content": {"application/json": {"schema": reply}}})
    };
    responses.insert(operation.status.to_string(), success);
    for (code, description) in [
        ("400", "The request is wrong."),
        ("401", "No usable API token."),
        ("403", "The token does not allow this."),
        ("404", "No such resource in the team."),
        ("409", "It exists already, or is not in a state to take this."),
        ("503", "The service behind this resource is unavailable; try again."),
    ] {
        responses.insert(code.to_owned(), problem_response(description));
    }
    responses.insert("default".to_owned(), problem_response("Another error."));
    object.insert("responses".to_owned(), Value::Object(responses));
    Value::Object(object)
}

/// `listApps` for `ComputeService/ListApps`.
fn operation_id(operation: &Operation) -> String {
    let method = operation.rpc.rsplit('/').next().unwrap_or_default();
    let mut chars = method.chars();
    chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn message_ref(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if message.full_name() == "google.protobuf.Timestamp" {
        return json!({"type": "string", "format": "date-time"});
    }
    let name = message.full_name().to_owned();
    if !schemas.contains_key(&name) {
        // Reserve the name first: messages may refer to themselves.
        schemas.insert(name.clone(), Value::Null);
        let mut properties = serde_json::Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_owned(), field_schema(&field, schemas));
        }
        schemas.insert(name.clone(), json!({"type": "object", "properties": properties}));
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn scalar_schema(kind: &Kind, schemas: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "pattern": "^-?[0-9]{1,18}$", "description": "A 64-bit integer, as a string."})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "pattern": "^[0-9]{1,19}$", "description": "A 64-bit integer, as a string."})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        // proto3 JSON takes an enum value by name or by number; replies use names.
        Kind::Enum(e) => json!({"anyOf": [
            {"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()},
            {"type": "integer", "format": "int32"},
        ]}),
        Kind::Message(m) => message_ref(m, schemas),
    }
}

/// A resource name (`strata_kit::error::validate_name`): a DNS label.
const NAME_PATTERN: &str = "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$";
/// A subject (`app::validate_subject`).
const SUBJECT_PATTERN: &str = "^[A-Za-z0-9@._+-]{1,100}$";

/// What the services check of a request field beyond its type, so that the
/// document says it (the protos say it in comments only).
fn constraint(message: &MessageDescriptor, field: &FieldDescriptor) -> Option<&'static str> {
    let name = message.name();
    if !name.ends_with("Request") || !matches!(field.kind(), Kind::String) || field.is_list() {
        return None;
    }
    let listing = name.starts_with("List");
    match (message.full_name(), field.name()) {
        ("strata.gateway.v1.CreateTokenRequest", "name") => None,
        ("strata.gateway.v1.CreateTokenRequest", "subject") => Some("^([A-Za-z0-9@._+-]{1,100})?$"),
        (_, "subject" | "owner") if message.package_name() == "strata.gateway.v1" => Some(SUBJECT_PATTERN),
        // Filters of lists are not checked by the services: any text filters.
        (_, "name" | "app" | "database" | "check") if listing => None,
        (_, "name" | "app" | "database" | "check") => Some(NAME_PATTERN),
        _ => None,
    }
}

/// The schema of `field` of `message`, with what the services check of it.
fn member_schema(message: &MessageDescriptor, field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let mut schema = field_schema(field, schemas);
    if let (Some(pattern), Value::Object(map)) = (constraint(message, field), &mut schema) {
        map.insert("pattern".to_owned(), json!(pattern));
    }
    schema
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let value = match field.kind() {
            Kind::Message(entry) => scalar_schema(&entry.map_entry_value_field().kind(), schemas),
            _ => json!({}),
        };
        return json!({"type": "object", "additionalProperties": value});
    }
    let schema = scalar_schema(&field.kind(), schemas);
    if field.is_list() { json!({"type": "array", "items": schema}) } else { schema }
}

/// The schema of a query parameter for `field`; `None` for fields a query
/// cannot carry (messages other than timestamps, lists, maps).
fn query_schema(
    message: &MessageDescriptor,
    field: &FieldDescriptor,
    schemas: &mut BTreeMap<String, Value>,
) -> Option<Value> {
    if field.is_list() || field.is_map() {
        return None;
    }
    match field.kind() {
        Kind::Message(m) if m.full_name() != "google.protobuf.Timestamp" => None,
        _ => Some(member_schema(message, field, schemas)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_document_is_the_generated_one() -> Result<(), Box<dyn std::error::Error>> {
        let generated = document_text()?;
        if std::env::var_os("STRATA_UPDATE_OPENAPI").is_some() {
            std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json"), &generated)?;
            return Ok(());
        }
        assert!(
            generated == CHECKED_IN,
            "services/gateway/openapi.json is out of date: run \
             `STRATA_UPDATE_OPENAPI=1 cargo test -p strata-gateway openapi` and commit it"
        );
        Ok(())
    }

    #[test]
    fn schemas_follow_the_proto3_json_mapping() -> Result<(), rest::RestError> {
        let doc = document()?;
        let app = &doc["components"]["schemas"]["strata.compute.v1.App"]["properties"];
        assert_eq!(app["releaseVersion"]["type"], "integer");
        assert_eq!(app["createdAt"]["format"], "date-time");
        assert_eq!(app["status"]["anyOf"][0]["enum"][2], "APP_STATUS_RUNNING");
        let list = &doc["paths"]["/v1/apps"]["get"];
        assert_eq!(list["operationId"], "listApps");
        assert!(list["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "page_size")));
        let create = &doc["paths"]["/v1/apps"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(create["properties"]["name"]["type"], "string");
        assert_eq!(doc["paths"]["/v1/apps/{app}"]["delete"]["responses"]["204"]["description"], "Done.");
        Ok(())
    }
}
