//! The CloudEvents 1.0 envelope (JSON, structured mode) every Strata event
//! travels in. `data` is the proto3-JSON form of the event message from
//! `proto/`; `team` is an extension attribute naming the owning team.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The kind of an event: `strata.<concern>.<entity>.<verb>` on the wire,
/// `dev.strata.<concern>.<entity>.<verb>.v1` as its CloudEvents type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    pub concern: &'static str,
    pub entity: &'static str,
    /// Past tense: events are facts, never commands.
    pub verb: &'static str,
}

impl EventType {
    pub const fn new(concern: &'static str, entity: &'static str, verb: &'static str) -> Self {
        Self { concern, entity, verb }
    }

    /// The CloudEvents `type` attribute.
    pub fn ce_type(&self) -> String {
        format!("dev.strata.{}.{}.{}.v1", self.concern, self.entity, self.verb)
    }

    /// The NATS subject under `prefix` (normally `strata`).
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}.{}", self.concern, self.entity, self.verb)
    }

    /// Whether `event` is of this type.
    pub fn matches(&self, event: &CloudEvent) -> bool {
        event.ty == self.ce_type()
    }
}

/// A CloudEvents 1.0 event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    /// A UUIDv7; also the `Nats-Msg-Id`, so JetStream drops re-publications.
    pub id: String,
    /// `/strata/<concern>`.
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The id of the resource the event is about.
    pub subject: String,
    /// RFC 3339.
    pub time: String,
    pub datacontenttype: String,
    /// Extension attribute: the team that owns the resource.
    pub team: String,
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// A new event of type `ty` about `subject`, owned by `team`.
    pub fn new<M: Serialize>(ty: EventType, subject: &str, team: &str, data: &M) -> Result<Self, serde_json::Error> {
        Ok(Self {
            specversion: "1.0".to_owned(),
            id: uuid::Uuid::now_v7().to_string(),
            source: format!("/strata/{}", ty.concern),
            ty: ty.ce_type(),
            subject: subject.to_owned(),
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            datacontenttype: "application/json".to_owned(),
            team: team.to_owned(),
            data: serde_json::to_value(data)?,
        })
    }

    /// Decodes `data` as the event message `M`.
    pub fn data_as<M: DeserializeOwned>(&self) -> Result<M, serde_json::Error> {
        serde_json::from_value(self.data.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_cloudevents_attributes() -> Result<(), serde_json::Error> {
        let ty = EventType::new("compute", "app", "created");
        let event = CloudEvent::new(ty, "app-1", "blue", &serde_json::json!({"app": "web"}))?;
        let json = serde_json::to_value(&event)?;
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "dev.strata.compute.app.created.v1");
        assert_eq!(json["source"], "/strata/compute");
        assert_eq!(json["team"], "blue");
        assert_eq!(ty.subject("strata"), "strata.compute.app.created");
        assert!(humantime::parse_rfc3339(event.time.as_str()).is_ok());
        assert_eq!(uuid::Uuid::parse_str(&event.id).map(|u| u.get_version_num()).ok(), Some(7));
        assert!(ty.matches(&event));
        Ok(())
    }
}
