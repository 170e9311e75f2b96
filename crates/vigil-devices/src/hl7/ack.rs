//! ACK^R01 messages answering an ORU^R01.

use vigil_model::Timestamp;

/// The acknowledgment code of MSA-1 (original acknowledgment mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept: the message was decoded and stored.
    AA,
    /// Application error: the message was understood but could not be processed.
    AE,
    /// Application reject: the message is not acceptable (type, syntax).
    AR,
}

impl AckCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AA => "AA",
            Self::AE => "AE",
            Self::AR => "AR",
        }
    }
}

/// Escapes text for an HL7 field with the default delimiters; line breaks become spaces.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn build(control_id: &str, code: AckCode, text: &str, time: &str) -> String {
    let id = escape(control_id);
    format!(
        "MSH|^~\\&|VIGIL|VIGIL|||{time}||ACK^R01^ACK|{id}|P|2.6\rMSA|{code}|{id}|{text}\r",
        code = code.as_str(),
        text = escape(text),
    )
}

/// An ACK^R01 for the message with control id `control_id` (MSH-10), segments ending in CR,
/// unframed (wrap it with [`crate::mllp::frame`]). The ACK's own control id repeats the
/// original's; its MSH-7 is empty because this function reads no clock (see [`ack_at`]).
pub fn ack(control_id: &str, code: AckCode, text: &str) -> String {
    build(control_id, code, text, "")
}

/// [`ack`] with MSH-7 set to `time` (UTC, `YYYYMMDDHHMMSS+0000`).
pub fn ack_at(control_id: &str, code: AckCode, text: &str, time: Timestamp) -> String {
    let t = time.to_offset_date_time();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    build(control_id, code, text, &stamp)
}
