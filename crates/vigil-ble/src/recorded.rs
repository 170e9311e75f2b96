//! Recorded BLE sessions: a JSON-lines format of radio events, and their replay through a
//! [`BleSession`] exactly as the radio driver feeds it.
//!
//! One event per line; blank lines and lines starting with `#` are comments:
//!
//! ```text
//! # source: /work/shared/vectors/ble-gatt.json (vector ids in "note")
//! {"t_ms":0,"event":"discovered","address":"A0:B1:C2:D3:E4:F5","name":"HRM","services":["180D"]}
//! {"t_ms":800,"event":"connected","address":"A0:B1:C2:D3:E4:F5","services":["180D","180A"]}
//! {"t_ms":1000,"event":"notification","address":"A0:B1:C2:D3:E4:F5","uuid":"2A37","hex":"16485401EC02","note":"H6"}
//! {"t_ms":9000,"event":"disconnected","address":"A0:B1:C2:D3:E4:F5"}
//! {"t_ms":10000,"event":"reconnect_due","address":"A0:B1:C2:D3:E4:F5"}
//! ```
//!
//! `t_ms` is the offset from the start of the session in milliseconds and never decreases;
//! replay stamps each event with `start + t_ms` as its receive time. UUIDs are 16-bit hex
//! (`180D`, `0x2A37`), payloads hex in transmission order. `note` is free text (the test
//! vector a payload comes from). Unknown fields are errors, so a typo cannot silently drop
//! data.

use crate::session::{AddressError, BleAddress, BleEvent, BleSession, Outcome, Rejected};
use serde::{Deserialize, Serialize};
use vigil_model::{Record, Timestamp};

/// One event of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The 1-based line of the recording it was read from (0 when built in code).
    pub line: usize,
    /// Milliseconds since the start of the session.
    pub t_ms: u64,
    pub event: BleEvent,
    pub note: Option<String>,
}

/// A recorded session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recording {
    pub events: Vec<RecordedEvent>,
}

/// Why a recording could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recording line {line}: {problem}")]
pub struct RecordingError {
    pub line: usize,
    pub problem: LineProblem,
}

/// What is wrong with one line of a recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("not a recorded event: {0}")]
    Json(String),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("invalid 16-bit UUID {0:?}")]
    Uuid(String),
    #[error("invalid hex payload: {0}")]
    Hex(String),
    #[error("a {event} event needs the field {field:?}")]
    Missing {
        event: &'static str,
        field: &'static str,
    },
    #[error("the field {field:?} does not belong to a {event} event")]
    Unexpected {
        event: &'static str,
        field: &'static str,
    },
    #[error("t_ms {t_ms} is earlier than the previous event's {previous}")]
    TimeGoesBack { t_ms: u64, previous: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Discovered,
    Connected,
    Notification,
    Disconnected,
    ReconnectDue,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Connected => "connected",
            Self::Notification => "notification",
            Self::Disconnected => "disconnected",
            Self::ReconnectDue => "reconnect_due",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    t_ms: u64,
    event: Kind,
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    services: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn parse_uuid(s: &str) -> Result<u16, LineProblem> {
    let t = s.trim();
    let h = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if h.is_empty() || h.len() > 4 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineProblem::Uuid(s.to_owned()));
    }
    u16::from_str_radix(h, 16).map_err(|_| LineProblem::Uuid(s.to_owned()))
}

fn uuid_text(u: u16) -> String {
    format!("{u:04X}")
}

fn parse_services(v: Option<Vec<String>>) -> Result<Vec<u16>, LineProblem> {
    v.unwrap_or_default()
        .iter()
        .map(|s| parse_uuid(s))
        .collect()
}

impl Line {
    fn into_event(self, line: usize) -> Result<RecordedEvent, LineProblem> {
        let ev = self.event.name();
        let address = BleAddress::parse(&self.address)?;
        let unexpected = |field| LineProblem::Unexpected { event: ev, field };
        let missing = |field| LineProblem::Missing { event: ev, field };
        let event = match self.event {
            Kind::Discovered | Kind::Connected => {
                if self.uuid.is_some() {
                    return Err(unexpected("uuid"));
                }
                if self.hex.is_some() {
                    return Err(unexpected("hex"));
                }
                let services = parse_services(self.services)?;
                if self.event == Kind::Discovered {
                    BleEvent::Discovered {
                        address,
                        name: self.name,
                        advertised_services: services,
                    }
                } else {
                    if self.name.is_some() {
                        return Err(unexpected("name"));
                    }
                    BleEvent::Connected { address, services }
                }
            }
            Kind::Notification => {
                if self.name.is_some() {
                    return Err(unexpected("name"));
                }
                if self.services.is_some() {
                    return Err(unexpected("services"));
                }
                let uuid = parse_uuid(self.uuid.as_deref().ok_or_else(|| missing("uuid"))?)?;
                let hex_text = self.hex.ok_or_else(|| missing("hex"))?;
                let bytes =
                    hex::decode(hex_text.trim()).map_err(|e| LineProblem::Hex(e.to_string()))?;
                BleEvent::Notification {
                    address,
                    characteristic_uuid: uuid,
                    bytes,
                }
            }
            Kind::Disconnected | Kind::ReconnectDue => {
                for (present, field) in [
                    (self.name.is_some(), "name"),
                    (self.services.is_some(), "services"),
                    (self.uuid.is_some(), "uuid"),
                    (self.hex.is_some(), "hex"),
                ] {
                    if present {
                        return Err(unexpected(field));
                    }
                }
                if self.event == Kind::Disconnected {
                    BleEvent::Disconnected { address }
                } else {
                    BleEvent::ReconnectDue { address }
                }
            }
        };
        Ok(RecordedEvent {
            line,
            t_ms: self.t_ms,
            event,
            note: self.note,
        })
    }

    fn from_event(e: &RecordedEvent) -> Self {
        let mut l = Line {
            t_ms: e.t_ms,
            event: Kind::Disconnected,
            address: e.event.address().to_string(),
            name: None,
            services: None,
            uuid: None,
            hex: None,
            note: e.note.clone(),
        };
        match &e.event {
            BleEvent::Discovered {
                name,
                advertised_services,
                ..
            } => {
                l.event = Kind::Discovered;
                l.name = name.clone();
                l.services = Some(advertised_services.iter().map(|u| uuid_text(*u)).collect());
            }
            BleEvent::Connected { services, .. } => {
                l.event = Kind::Connected;
                l.services = Some(services.iter().map(|u| uuid_text(*u)).collect());
            }
            BleEvent::Notification {
                characteristic_uuid,
                bytes,
                ..
            } => {
                l.event = Kind::Notification;
                l.uuid = Some(uuid_text(*characteristic_uuid));
                l.hex = Some(hex::encode_upper(bytes));
            }
            BleEvent::Disconnected { .. } => l.event = Kind::Disconnected,
            BleEvent::ReconnectDue { .. } => l.event = Kind::ReconnectDue,
        }
        l
    }
}

impl Recording {
    /// Reads a recording; the first bad line is the error.
    pub fn parse(text: &str) -> Result<Self, RecordingError> {
        let mut events = Vec::new();
        let mut previous = 0u64;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let fail = |problem| RecordingError { line, problem };
            let parsed: Line =
                serde_json::from_str(t).map_err(|e| fail(LineProblem::Json(e.to_string())))?;
            let ev = parsed.into_event(line).map_err(fail)?;
            if ev.t_ms < previous {
                return Err(fail(LineProblem::TimeGoesBack {
                    t_ms: ev.t_ms,
                    previous,
                }));
            }
            previous = ev.t_ms;
            events.push(ev);
        }
        Ok(Self { events })
    }

    /// The recording as JSON lines (without comments), readable by [`Recording::parse`].
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            // Serialising a struct of strings, integers and vectors cannot fail.
            if let Ok(s) = serde_json::to_string(&Line::from_event(e)) {
                out.push_str(&s);
                out.push('\n');
            }
        }
        out
    }

    /// Feeds every event to `session` in order, stamped `start + t_ms`.
    pub fn replay(&self, session: &mut BleSession, start: Timestamp) -> Replay {
        let steps = self
            .events
            .iter()
            .map(|e| {
                let offset = i64::try_from(e.t_ms).unwrap_or(i64::MAX);
                let received = start.saturating_add_millis(offset);
                Step {
                    line: e.line,
                    received,
                    event: e.event.clone(),
                    result: session.handle(e.event.clone(), received),
                }
            })
            .collect();
        Replay { steps }
    }
}

/// One replayed event and the session's answer.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub line: usize,
    pub received: Timestamp,
    pub event: BleEvent,
    pub result: Result<Outcome, Rejected>,
}

/// The answers of a whole replay.
#[derive(Debug, PartialEq, Default)]
pub struct Replay {
    pub steps: Vec<Step>,
}

impl Replay {
    /// Every record handed to the sink, in order.
    pub fn records(&self) -> Vec<&Record> {
        self.steps
            .iter()
            .filter_map(|s| match &s.result {
                Ok(Outcome::Records { records, .. }) => Some(records),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every notification to quarantine, in order.
    pub fn rejected(&self) -> Vec<&Rejected> {
        self.steps
            .iter()
            .filter_map(|s| s.result.as_ref().err())
            .collect()
    }

    /// Every outcome other than records and rejections (connect, subscribe, reconnect,
    /// ignore), in order.
    pub fn decisions(&self) -> Vec<&Outcome> {
        self.steps
            .iter()
            .filter_map(|s| match &s.result {
                Ok(Outcome::Records { .. }) | Err(_) => None,
                Ok(o) => Some(o),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_round_trips_through_jsonl() {
        let text = r#"
# a comment
{"t_ms":0,"event":"discovered","address":"a0:b1:c2:d3:e4:f5","name":"HRM","services":["180d","0x180F"]}
{"t_ms":5,"event":"connected","address":"A0:B1:C2:D3:E4:F5","services":[]}
{"t_ms":5,"event":"notification","address":"A0:B1:C2:D3:E4:F5","uuid":"2a37","hex":"0048","note":"x"}
{"t_ms":9,"event":"disconnected","address":"A0:B1:C2:D3:E4:F5"}
{"t_ms":10,"event":"reconnect_due","address":"A0:B1:C2:D3:E4:F5"}
"#;
        let r = Recording::parse(text).expect("parse");
        assert_eq!(r.events.len(), 5);
        assert_eq!(r.events[0].line, 3);
        let again = Recording::parse(&r.to_jsonl()).expect("reparse");
        let strip = |r: &Recording| -> Vec<(u64, BleEvent, Option<String>)> {
            r.events
                .iter()
                .map(|e| (e.t_ms, e.event.clone(), e.note.clone()))
                .collect()
        };
        assert_eq!(strip(&again), strip(&r));
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_number() {
        let cases = [
            (
                r#"{"t_ms":0,"event":"discovered","address":"xx"}"#,
                "invalid Bluetooth address",
            ),
            (
                r#"{"t_ms":0,"event":"notification","address":"00:00:00:00:00:01","uuid":"2A37"}"#,
                "needs the field \"hex\"",
            ),
            (
                r#"{"t_ms":0,"event":"notification","address":"00:00:00:00:00:01","uuid":"2A37","hex":"0G"}"#,
                "invalid hex",
            ),
            (
                r#"{"t_ms":0,"event":"notification","address":"00:00:00:00:00:01","uuid":"12345","hex":"00"}"#,
                "invalid 16-bit UUID",
            ),
            (
                r#"{"t_ms":0,"event":"disconnected","address":"00:00:00:00:00:01","hex":"00"}"#,
                "does not belong",
            ),
            (
                r#"{"t_ms":0,"event":"connected","address":"00:00:00:00:00:01","bytes":"00"}"#,
                "unknown field",
            ),
            (
                r#"{"t_ms":0,"event":"paired","address":"00:00:00:00:00:01"}"#,
                "unknown variant",
            ),
            ("not json", "not a recorded event"),
        ];
        for (line, want) in cases {
            let e = Recording::parse(&format!("# header\n{line}\n")).expect_err(line);
            assert_eq!(e.line, 2, "{line}");
            assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        }
        let back = "{\"t_ms\":5,\"event\":\"disconnected\",\"address\":\"00:00:00:00:00:01\"}\n\
                    {\"t_ms\":4,\"event\":\"disconnected\",\"address\":\"00:00:00:00:00:01\"}";
        assert_eq!(
            Recording::parse(back).map_err(|e| e.problem),
            Err(LineProblem::TimeGoesBack {
                t_ms: 4,
                previous: 5
            })
        );
    }
}
