//! Server-sent events: a gRPC server stream as `text/event-stream`, one
//! event per message (`data:` is the message in the proto3 JSON mapping,
//! `id:` its `seq` when it has one, `event:` its `type` when it has one),
//! with a comment every 15 s so that proxies keep the connection open. An
//! error from the service ends the stream with an `event: error` whose data
//! is a problem.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, header},
    response::Response,
};
use futures::{StreamExt, stream};
use prost_reflect::DynamicMessage;

use crate::problem::Problem;

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One message as an SSE event.
pub fn event(message: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(seq) =
        message.get("seq").and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_u64().map(|n| n.to_string())))
    {
        out.push_str(&format!("id: {seq}\n"));
    }
    if let Some(kind) = message.get("type").and_then(serde_json::Value::as_str) {
        out.push_str(&format!("event: {}\n", kind.replace(['\r', '\n'], " ")));
    }
    // serde_json never writes a raw newline, so the data is one line.
    out.push_str(&format!("data: {message}\n\n"));
    out
}

fn error_event(problem: &Problem) -> String {
    format!("event: error\ndata: {}\n\n", serde_json::to_string(problem).unwrap_or_default())
}

/// The response streaming `messages` as server-sent events.
pub fn response(messages: tonic::Streaming<DynamicMessage>) -> Response {
    let events = stream::unfold(Some(messages), |state| async move {
        let mut messages = state?;
        let next = tokio::select! {
            next = messages.next() => next,
            () = tokio::time::sleep(KEEP_ALIVE) => return Some((": keep-alive\n\n".to_owned(), Some(messages))),
        };
        Some(match next? {
            Ok(message) => match serde_json::to_value(&message) {
                Ok(json) => (event(&json), Some(messages)),
                Err(error) => (
                    error_event(&Problem::from_status(&tonic::Status::internal(format!("encoding an event: {error}")))),
                    None,
                ),
            },
            Err(status) => (error_event(&Problem::from_status(&status)), None),
        })
    });
    let mut response =
        Response::new(Body::from_stream(events.map(|chunk| Ok::<_, std::convert::Infallible>(Bytes::from(chunk)))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_events_with_their_id_and_type() {
        let json = serde_json::json!({"seq": "42", "type": "dev.strata.compute.app.created.v1", "subject": "a\nb"});
        assert_eq!(
            event(&json),
            "id: 42\nevent: dev.strata.compute.app.created.v1\ndata: {\"seq\":\"42\",\"subject\":\"a\\nb\",\"type\":\"dev.strata.compute.app.created.v1\"}\n\n"
        );
        assert_eq!(event(&serde_json::json!({"x": 1})), "data: {\"x\":1}\n\n");
    }
}
