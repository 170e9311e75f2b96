//! HL7 v2 ORU^R01 observation messages of the IHE PCD-01 profile (bedside and spot-check
//! monitors), and their ACKs.
//!
//! [`parse_oru`] reads one message: MSH-10 control id, MSH-3 sending application, the patient
//! from PID-3 (first repetition, first component), and one [`Observation`] per numeric OBX row
//! whose OBX-3 code is known, mapped to the registry's LOINC metric and converted to its
//! canonical UCUM unit. Every other OBX row lands in [`Hl7Message::skipped`] with a reason, so
//! each OBX row is accounted for exactly once.
//!
//! Rules:
//! - OBX-3 is an MDC code (`150456^MDC_PULS_OXIM_SAT_O2^MDC`) looked up with
//!   `registry().by_mdc` (then a short table of vendor codes, see `codes.rs`), or a LOINC code
//!   (`8867-4^Heart rate^LN`). Unknown codes are skipped.
//! - Only value type NM is an observation. Rows of other types (CWE/ST rows that describe the
//!   MDS/VMD/channel hierarchy, or no type) are skipped; so is an empty OBX-5 (never 0), and a
//!   row whose result status (OBX-11) is X, D or W.
//! - OBX-6 is an MDC unit code (`262688^MDC_DIM_PERCENT^MDC`), or else read as UCUM. A row
//!   without a unit is skipped rather than guessed.
//! - Time: OBX-14, else the OBR-7 of the enclosing OBR, else MSH-7, else the receive time of
//!   the context. A DTM without an offset is read as UTC. A malformed time skips the row.
//! - Blood-pressure rows (systolic, diastolic, mean) of the same OBX-4 channel (the sub-id
//!   without its last part: `1.1.9` of `1.1.9.150301`) and the same time become one 85354-9
//!   panel reading. [`Hl7Message::observations`] keeps one entry per row (what the vectors
//!   list), and each names the reading that carries it.
//! - The same metric from two probes gives two readings: nothing is de-duplicated; the
//!   observations' OBX-4 sub-id and OBX-18 equipment tell them apart.
//! - Tolerated quirks: empty set ids, LF or CRLF segment ends, spaces around fields, MLLP
//!   framing bytes left in the text, non-UTF-8 bytes (decoded lossily by the [`Decoder`]).

mod ack;
mod codes;
mod dtm;

pub use ack::{AckCode, ack, ack_at};
pub use codes::{mdc_metric, mdc_unit};
pub use dtm::parse_dtm;

use crate::mllp::MllpDecoder;
use crate::{DecodeContext, DecodeError, Decoded, Decoder};
use serde::Serialize;
use vigil_model::{Component, DeviceId, Metric, PatientId, Reading, Source, Timestamp, registry};

/// The format name of this decoder.
pub const FORMAT: &str = "hl7";

/// Why a message was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("HL7 message is empty")]
    Empty,
    #[error("HL7 message starts with segment {found:?}, not MSH")]
    NoMsh { found: String },
    #[error("MSH segment has no field separator and encoding characters")]
    BadDelimiters,
    #[error("MSH-9 message type {found:?} is not ORU^R01")]
    UnsupportedType { found: String },
    #[error("MSH-10 message control id is empty")]
    NoControlId,
    #[error("MSH-3 names no usable device id ({0:?})")]
    NoDevice(String),
}

/// Why one OBX row (or the PID patient id) gave no observation.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    #[error("value type {value_type:?} is not NM (a device hierarchy or text row)")]
    NotNumeric { value_type: String },
    #[error("observation code {code:?} ({system}) is not in the code registry")]
    UnknownCode { code: String, system: String },
    #[error("OBX-5 is empty")]
    EmptyValue,
    #[error("OBX-5 {value:?} is not an HL7 NM number")]
    BadValue { value: String },
    #[error("result status {status:?} withdraws the value")]
    ResultStatus { status: String },
    #[error("OBX-6 gives no unit")]
    MissingUnit,
    #[error("OBX-6 unit {unit:?} is not a known MDC unit code")]
    UnknownUnit { unit: String },
    #[error("{message}")]
    UnitMismatch { message: String },
    #[error("time {value:?} is not a valid HL7 DTM to the day")]
    BadTime { value: String },
    #[error("no observation time (OBX-14, OBR-7, MSH-7) and no receive time")]
    NoTime,
    #[error("panel code carries no value of its own; its components are separate rows")]
    PanelValue,
    #[error("patient id {value:?} is not a valid Vigil id")]
    InvalidPatientId { value: String },
}

/// One numeric OBX row, mapped and converted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// 1-based position of the segment in the message.
    pub segment: usize,
    /// OBX-1 (may be empty).
    pub set_id: Option<String>,
    /// OBX-4: the MDS.VMD.channel.metric path in PCD-01.
    pub sub_id: Option<String>,
    /// OBX-3 code as sent.
    pub code: String,
    /// The MDC code, when OBX-3 is MDC-coded.
    pub mdc: Option<u32>,
    pub metric: Metric,
    /// Value in the metric's canonical unit.
    pub value: f64,
    /// The canonical UCUM unit.
    pub ucum: &'static str,
    /// Value and UCUM unit as sent.
    pub source_value: f64,
    pub source_unit: String,
    pub time: Timestamp,
    /// OBX-18 equipment instance identifier.
    pub equipment: Option<String>,
    /// Index in [`Hl7Message::readings`] of the reading that carries this value.
    pub reading: usize,
}

/// An OBX row (or PID id) that gave no observation, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// 1-based position of the segment in the message.
    pub segment: usize,
    pub set_id: Option<String>,
    /// OBX-3 code as sent (or the field name for PID).
    pub code: String,
    pub reason: SkipReason,
}

/// A parsed ORU^R01.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hl7Message {
    /// MSH-10.
    pub control_id: String,
    /// MSH-3 first component (namespace id).
    pub sending_app: String,
    /// MSH-3 second component (universal id, an EUI-64 in PCD-01).
    pub sending_app_id: Option<String>,
    /// MSH-7.
    pub message_time: Option<Timestamp>,
    /// PID-3 first component.
    pub patient: Option<PatientId>,
    pub observations: Vec<Observation>,
    pub readings: Vec<Reading>,
    pub skipped: Vec<Skipped>,
}

impl Hl7Message {
    /// The message as a [`Decoded`]: fields are the message without its readings.
    pub fn into_decoded(self) -> Decoded {
        let mut fields = serde_json::to_value(&self).unwrap_or(serde_json::Value::Null);
        if let Some(m) = fields.as_object_mut() {
            m.remove("readings");
        }
        Decoded {
            format: FORMAT.to_owned(),
            fields,
            readings: self.readings,
            events: Vec::new(),
        }
    }
}

/// Parses an ORU^R01; readings name the device from MSH-3 (its EUI-64 when given) and have no
/// receive time. Use [`parse_oru_with`] when the caller knows the device.
pub fn parse_oru(text: &str) -> Result<Hl7Message, Hl7Error> {
    parse(text, None)
}

/// Parses an ORU^R01 for a known device and receive time (the receive time is the last
/// fallback for the observation time).
pub fn parse_oru_with(text: &str, ctx: &DecodeContext) -> Result<Hl7Message, Hl7Error> {
    parse(text, Some(ctx))
}

/// The [`Decoder`] for `hl7`: input is one or more messages, MLLP-framed or separated by
/// blank lines. One bad message fails the input (the gateway should split with
/// [`MllpDecoder`] and ACK each message).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hl7Decoder;

impl Decoder for Hl7Decoder {
    fn format(&self) -> &str {
        FORMAT
    }
    fn decode(&self, input: &[u8], ctx: &DecodeContext) -> Result<Vec<Decoded>, DecodeError> {
        let mut out = Vec::new();
        for (index, item) in MllpDecoder::decode_all(input).into_iter().enumerate() {
            let bytes = item?;
            let text = String::from_utf8_lossy(&bytes);
            let msg = parse_oru_with(&text, ctx)
                .map_err(|source| DecodeError::Hl7Message { index, source })?;
            out.push(msg.into_decoded());
        }
        if out.is_empty() {
            return Err(DecodeError::Empty {
                format: FORMAT.to_owned(),
            });
        }
        Ok(out)
    }
}

/// Registry names: `hl7`.
pub(crate) fn format_names() -> Vec<String> {
    vec![FORMAT.to_owned()]
}

/// Registry factory: accepts exactly `hl7`.
pub(crate) fn decoder_for(rest: &str) -> Option<Box<dyn Decoder>> {
    rest.is_empty()
        .then(|| Box::new(Hl7Decoder) as Box<dyn Decoder>)
}

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy)]
struct Delims {
    field: char,
    comp: char,
    rep: char,
    esc: char,
    sub: char,
}

/// One segment: `fields[n]` is SEG-n (for MSH too: `fields[1]` is the field separator).
#[derive(Debug)]
struct Segment<'a> {
    index: usize,
    id: String,
    fields: Vec<&'a str>,
}

impl Segment<'_> {
    fn field(&self, n: usize) -> &str {
        self.fields.get(n).map_or("", |f| f.trim())
    }
}

impl Delims {
    /// Component `i` (1-based) of the first repetition of a field, trimmed.
    fn comp<'f>(&self, field: &'f str, i: usize) -> &'f str {
        field
            .split(self.rep)
            .next()
            .and_then(|r| r.split(self.comp).nth(i.saturating_sub(1)))
            .map_or("", str::trim)
    }

    /// Replaces the standard escape sequences of text values.
    fn unescape(&self, s: &str) -> String {
        if !s.contains(self.esc) {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        let mut parts = s.split(self.esc);
        if let Some(first) = parts.next() {
            out.push_str(first);
        }
        let mut inside = true;
        for p in parts {
            if inside {
                match p {
                    "F" => out.push(self.field),
                    "S" => out.push(self.comp),
                    "T" => out.push(self.sub),
                    "R" => out.push(self.rep),
                    "E" => out.push(self.esc),
                    _ => {}
                }
            } else {
                out.push_str(p);
            }
            inside = !inside;
        }
        out
    }
}

fn is_frame_or_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{0B}' || c == '\u{1C}' || c == '\u{FEFF}'
}

fn split_segments(text: &str) -> Result<(Delims, Vec<Segment<'_>>), Hl7Error> {
    let mut lines = text
        .split(['\r', '\n'])
        .map(|l| l.trim_matches(is_frame_or_space))
        .filter(|l| !l.is_empty());
    let msh = lines.next().ok_or(Hl7Error::Empty)?;
    let Some(after) = msh.strip_prefix("MSH") else {
        let found: String = msh.chars().take(3).collect();
        return Err(Hl7Error::NoMsh { found });
    };
    let after = after.trim_start();
    let field = after.chars().next().ok_or(Hl7Error::BadDelimiters)?;
    if field.is_alphanumeric() || field.is_whitespace() {
        return Err(Hl7Error::BadDelimiters);
    }
    let rest = after.get(field.len_utf8()..).unwrap_or("");
    let mut msh_fields: Vec<&str> = vec!["MSH", after.get(..field.len_utf8()).unwrap_or("|")];
    msh_fields.extend(rest.split(field));
    let enc: Vec<char> = msh_fields.get(2).map_or("", |e| e.trim()).chars().collect();
    let pick = |i: usize, default: char| enc.get(i).copied().unwrap_or(default);
    let delims = Delims {
        field,
        comp: pick(0, '^'),
        rep: pick(1, '~'),
        esc: pick(2, '\\'),
        sub: pick(3, '&'),
    };
    let distinct = [delims.comp, delims.rep, delims.esc, delims.sub]
        .iter()
        .all(|&c| c != field && !c.is_alphanumeric());
    if !distinct || delims.comp == delims.rep {
        return Err(Hl7Error::BadDelimiters);
    }
    let mut segments = vec![Segment {
        index: 1,
        id: "MSH".to_owned(),
        fields: msh_fields,
    }];
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(field).collect();
        let id = fields
            .first()
            .map_or(String::new(), |s| s.trim().to_ascii_uppercase());
        segments.push(Segment {
            index: i + 2,
            id,
            fields,
        });
    }
    Ok((delims, segments))
}

/// HL7 NM: optional sign, digits, optional decimal point (no exponent, no NaN or infinity).
fn parse_nm(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    let points = body.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || points > 1 || digits + points != body.len() {
        return None;
    }
    s.parse().ok().filter(|v: &f64| v.is_finite())
}

/// A device id from MSH-3: the universal id (EUI-64) when given, else the namespace id, with
/// characters a [`DeviceId`] does not allow replaced by `-` (`hl7-unknown` when both are empty).
fn device_from_msh(app: &str, app_id: Option<&str>) -> Result<DeviceId, Hl7Error> {
    let raw = app_id.unwrap_or(app);
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let id = if clean.is_empty() {
        "hl7-unknown".to_owned()
    } else {
        clean
    };
    DeviceId::new(id).map_err(|e| Hl7Error::NoDevice(e.0))
}

/// The panel that has `metric` as a component.
fn panel_of(metric: Metric) -> Option<Metric> {
    registry().all().find(|p| p.components().contains(&metric))
}

/// OBX-4 without its last dot-separated part (`1.1.9` of `1.1.9.150301`).
fn channel_of(sub_id: Option<&str>) -> &str {
    sub_id.map_or("", |s| s.rsplit_once('.').map_or("", |(c, _)| c))
}

struct Row<'s> {
    seg: &'s Segment<'s>,
    set_id: Option<String>,
    code: String,
}

fn parse(text: &str, ctx: Option<&DecodeContext>) -> Result<Hl7Message, Hl7Error> {
    let (d, segments) = split_segments(text)?;
    let msh = segments.first().ok_or(Hl7Error::Empty)?;
    let kind = msh.field(9);
    if !d.comp(kind, 1).eq_ignore_ascii_case("ORU") || !d.comp(kind, 2).eq_ignore_ascii_case("R01")
    {
        return Err(Hl7Error::UnsupportedType {
            found: kind.to_owned(),
        });
    }
    let control_id = d.unescape(d.comp(msh.field(10), 1));
    if control_id.is_empty() {
        return Err(Hl7Error::NoControlId);
    }
    let sending_app = d.unescape(d.comp(msh.field(3), 1));
    let sending_app_id = Some(d.unescape(d.comp(msh.field(3), 2))).filter(|s| !s.is_empty());
    let message_time = parse_dtm(d.comp(msh.field(7), 1));

    let mut patient = None;
    let mut skipped = Vec::new();
    let mut observations = Vec::new();
    let mut obr_time: Option<&str> = None;
    for seg in &segments {
        match seg.id.as_str() {
            "PID" if patient.is_none() => {
                let id = d.unescape(d.comp(seg.field(3), 1));
                if !id.is_empty() {
                    match PatientId::new(id.clone()) {
                        Ok(p) => patient = Some(p),
                        Err(_) => skipped.push(Skipped {
                            segment: seg.index,
                            set_id: None,
                            code: "PID-3".to_owned(),
                            reason: SkipReason::InvalidPatientId { value: id },
                        }),
                    }
                }
            }
            "OBR" => obr_time = Some(d.comp(seg.field(7), 1)).filter(|s| !s.is_empty()),
            "OBX" => {
                let row = Row {
                    seg,
                    set_id: Some(seg.field(1).to_owned()).filter(|s| !s.is_empty()),
                    code: d.unescape(d.comp(seg.field(3), 1)),
                };
                let times = (obr_time, message_time, ctx.map(|c| c.received));
                match observation(&d, &row, times) {
                    Ok(o) => observations.push(o),
                    Err(reason) => skipped.push(Skipped {
                        segment: seg.index,
                        set_id: row.set_id,
                        code: row.code,
                        reason,
                    }),
                }
            }
            _ => {}
        }
    }

    let device = match ctx {
        Some(c) => c.device.clone(),
        None => device_from_msh(&sending_app, sending_app_id.as_deref())?,
    };
    let readings = assemble(&mut observations, &device, ctx, patient.as_ref());
    Ok(Hl7Message {
        control_id,
        sending_app,
        sending_app_id,
        message_time,
        patient,
        observations,
        readings,
        skipped,
    })
}

/// Maps one OBX row, or says why it is not an observation.
fn observation(
    d: &Delims,
    row: &Row<'_>,
    (obr_time, msh_time, received): (Option<&str>, Option<Timestamp>, Option<Timestamp>),
) -> Result<Observation, SkipReason> {
    let seg = row.seg;
    let value_type = seg.field(2).to_ascii_uppercase();
    if value_type != "NM" {
        return Err(SkipReason::NotNumeric { value_type });
    }
    let system = d.comp(seg.field(3), 3).to_ascii_uppercase();
    let mdc = match system.as_str() {
        "MDC" | "" => row.code.parse::<u32>().ok(),
        _ => None,
    };
    let metric = match (mdc, system.as_str()) {
        (Some(code), _) => mdc_metric(code),
        (None, "LN") => registry().lookup(&row.code),
        _ => None,
    }
    .ok_or_else(|| SkipReason::UnknownCode {
        code: row.code.clone(),
        system: system.clone(),
    })?;
    if metric.is_panel() {
        return Err(SkipReason::PanelValue);
    }
    let raw = seg.field(5);
    if raw.is_empty() || raw.chars().all(|c| c == d.comp || c == d.rep) {
        return Err(SkipReason::EmptyValue);
    }
    let status = d.comp(seg.field(11), 1).to_ascii_uppercase();
    if matches!(status.as_str(), "X" | "D" | "W") {
        return Err(SkipReason::ResultStatus { status });
    }
    let source_value = parse_nm(raw).ok_or_else(|| SkipReason::BadValue {
        value: raw.to_owned(),
    })?;
    let unit_field = seg.field(6);
    let unit_code = d.comp(unit_field, 1);
    if unit_code.is_empty() {
        return Err(SkipReason::MissingUnit);
    }
    let unit_system = d.comp(unit_field, 3).to_ascii_uppercase();
    let source_unit = match unit_code.parse::<u32>() {
        Ok(code) if unit_system == "MDC" || unit_system.is_empty() => {
            mdc_unit(code).ok_or_else(|| SkipReason::UnknownUnit {
                unit: unit_field.to_owned(),
            })?
        }
        _ => unit_code,
    };
    let value = metric
        .to_canonical(source_value, source_unit)
        .map_err(|e| SkipReason::UnitMismatch {
            message: e.to_string(),
        })?;
    let obx_time = d.comp(seg.field(14), 1);
    let time = match (obx_time, obr_time) {
        ("", None) => msh_time.or(received).ok_or(SkipReason::NoTime)?,
        ("", Some(t)) | (t, _) => parse_dtm(t).ok_or_else(|| SkipReason::BadTime {
            value: t.to_owned(),
        })?,
    };
    Ok(Observation {
        segment: seg.index,
        set_id: row.set_id.clone(),
        sub_id: Some(seg.field(4).to_owned()).filter(|s| !s.is_empty()),
        code: row.code.clone(),
        mdc,
        metric,
        value,
        ucum: metric.ucum(),
        source_value,
        source_unit: source_unit.to_owned(),
        time,
        equipment: Some(d.unescape(d.comp(seg.field(18), 1))).filter(|s| !s.is_empty()),
        reading: 0,
    })
}

/// Builds the readings: one per observation, except that panel components of one channel and
/// time share one panel reading. Sets each observation's `reading` index.
fn assemble(
    observations: &mut [Observation],
    device: &DeviceId,
    ctx: Option<&DecodeContext>,
    patient: Option<&PatientId>,
) -> Vec<Reading> {
    let mut readings: Vec<Reading> = Vec::new();
    // (panel, channel, time, reading index) of panels built so far.
    let mut panels: Vec<(Metric, String, Timestamp, usize)> = Vec::new();
    for o in observations.iter_mut() {
        let component = Component {
            metric: o.metric,
            value: o.value,
        };
        if let Some(panel) = panel_of(o.metric) {
            let channel = channel_of(o.sub_id.as_deref());
            let open = panels
                .iter()
                .find(|(p, c, t, i)| {
                    *p == panel
                        && c == channel
                        && *t == o.time
                        && readings
                            .get(*i)
                            .is_some_and(|r| r.components.iter().all(|c| c.metric != o.metric))
                })
                .map(|(_, _, _, i)| *i);
            if let Some(i) = open
                && let Some(r) = readings.get_mut(i)
            {
                r.components.push(component);
                o.reading = i;
                continue;
            }
            o.reading = readings.len();
            panels.push((panel, channel.to_owned(), o.time, o.reading));
            readings.push(Reading::panel(
                device.clone(),
                panel,
                vec![component],
                o.time,
            ));
        } else {
            o.reading = readings.len();
            readings.push(Reading::quantity(device.clone(), o.metric, o.value, o.time));
        }
    }
    for r in &mut readings {
        let order = r.metric.components();
        r.components.sort_by_key(|c| {
            order
                .iter()
                .position(|m| *m == c.metric)
                .unwrap_or(usize::MAX)
        });
        r.source = Source::Hl7;
        r.received = ctx.map(|c| c.received);
        r.patient = patient.cloned();
    }
    readings
}

#[cfg(test)]
mod tests;
