//! MLLP (Minimal Lower Layer Protocol) framing of HL7 v2 messages: `0x0B message 0x1C 0x0D`.
//!
//! [`frame`] wraps one message; [`MllpDecoder`] takes bytes as they arrive, in chunks of any
//! size, and yields complete messages. It tolerates what real senders do: bytes between frames
//! (whitespace is ignored), a missing `0x0D` after `0x1C`, and no framing at all, in which case
//! messages are separated by a blank line (or by the end of input, see
//! [`MllpDecoder::finish`]). Pure: no sockets, no clocks.

use std::collections::VecDeque;

pub use crate::hl7::{AckCode, ack, ack_at};

/// Start block.
pub const START_BLOCK: u8 = 0x0B;
/// End block.
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return that follows the end block.
pub const CR: u8 = 0x0D;

/// Wraps one message in an MLLP frame.
pub fn frame(msg: impl AsRef<[u8]>) -> Vec<u8> {
    let msg = msg.as_ref();
    let mut out = Vec::with_capacity(msg.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(msg);
    out.extend_from_slice(&[END_BLOCK, CR]);
    out
}

/// A framing problem. The decoder recovers and goes on with the next message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MllpError {
    #[error("message longer than the {max}-byte limit; discarded")]
    TooLong { max: usize },
    #[error("frame of {len} bytes ended without its end block (0x1C)")]
    Unterminated { len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Between messages.
    Idle,
    /// Inside `0x0B ... 0x1C`.
    Framed,
    /// Just after `0x1C`: an optional `0x0D` follows.
    AfterEnd,
    /// Inside an unframed message; counts the non-blank bytes of its current line.
    Unframed { line: usize, prev: u8 },
    /// Skipping the rest of an oversized message.
    Discard { framed: bool, line: usize },
}

/// Incremental MLLP de-framer.
#[derive(Debug, Clone)]
pub struct MllpDecoder {
    buf: Vec<u8>,
    mode: Mode,
    max_len: usize,
    ready: VecDeque<Result<Vec<u8>, MllpError>>,
}

impl Default for MllpDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn is_line_end(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl MllpDecoder {
    /// The default limit on one message: 1 MiB.
    pub const DEFAULT_MAX_LEN: usize = 1 << 20;

    pub fn new() -> Self {
        Self::with_max_len(Self::DEFAULT_MAX_LEN)
    }

    /// A decoder that discards (and reports) messages longer than `max_len` bytes.
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            mode: Mode::Idle,
            max_len,
            ready: VecDeque::new(),
        }
    }

    /// Decodes a whole input at once: every message, then whatever [`Self::finish`] yields.
    pub fn decode_all(bytes: &[u8]) -> Vec<Result<Vec<u8>, MllpError>> {
        let mut d = Self::new();
        d.push(bytes);
        let mut out: Vec<_> = std::iter::from_fn(|| d.next_message()).collect();
        out.extend(d.finish());
        out
    }

    /// Feeds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// The next complete message (or framing error), if any.
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, MllpError>> {
        self.ready.pop_front()
    }

    /// Ends the input: an unframed message still open is complete; an open frame is an error.
    /// Messages already complete stay available from [`Self::next_message`]. The decoder is
    /// ready for new input afterwards.
    pub fn finish(&mut self) -> Option<Result<Vec<u8>, MllpError>> {
        let mode = std::mem::replace(&mut self.mode, Mode::Idle);
        let buf = std::mem::take(&mut self.buf);
        match mode {
            Mode::Framed => Some(Err(MllpError::Unterminated { len: buf.len() })),
            Mode::Unframed { .. } => Some(Ok(trim_end(buf))),
            Mode::Idle | Mode::AfterEnd | Mode::Discard { .. } => None,
        }
    }

    fn emit(&mut self, item: Result<Vec<u8>, MllpError>) {
        self.ready.push_back(item);
    }

    fn store(&mut self, b: u8, framed: bool) {
        if self.buf.len() >= self.max_len {
            self.buf.clear();
            self.emit(Err(MllpError::TooLong { max: self.max_len }));
            self.mode = Mode::Discard { framed, line: 1 };
        } else {
            self.buf.push(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match self.mode {
            Mode::Idle => self.idle(b),
            Mode::AfterEnd => {
                self.mode = Mode::Idle;
                if b != CR {
                    self.idle(b);
                }
            }
            Mode::Framed => match b {
                END_BLOCK => {
                    let msg = std::mem::take(&mut self.buf);
                    self.emit(Ok(msg));
                    self.mode = Mode::AfterEnd;
                }
                START_BLOCK => {
                    let len = self.buf.len();
                    self.buf.clear();
                    self.emit(Err(MllpError::Unterminated { len }));
                }
                _ => self.store(b, true),
            },
            Mode::Unframed { line, prev } => match b {
                START_BLOCK | END_BLOCK => {
                    let msg = trim_end(std::mem::take(&mut self.buf));
                    self.emit(Ok(msg));
                    self.mode = Mode::Idle;
                    if b == START_BLOCK {
                        self.mode = Mode::Framed;
                    }
                }
                b'\n' if prev == b'\r' => {
                    self.store(b, false);
                    self.keep_unframed(line, b);
                }
                _ if is_line_end(b) && line == 0 => {
                    // A blank line ends an unframed message.
                    let msg = trim_end(std::mem::take(&mut self.buf));
                    self.emit(Ok(msg));
                    self.mode = Mode::Idle;
                }
                _ if is_line_end(b) => {
                    self.store(b, false);
                    self.keep_unframed(0, b);
                }
                _ => {
                    self.store(b, false);
                    self.keep_unframed(line + usize::from(!is_blank(b)), b);
                }
            },
            Mode::Discard { framed: true, .. } => {
                if b == END_BLOCK {
                    self.mode = Mode::AfterEnd;
                }
            }
            Mode::Discard {
                framed: false,
                line,
            } => {
                if b == START_BLOCK {
                    self.mode = Mode::Framed;
                } else if is_line_end(b) {
                    if line == 0 {
                        self.mode = Mode::Idle;
                    } else {
                        self.mode = Mode::Discard {
                            framed: false,
                            line: 0,
                        };
                    }
                } else if !is_blank(b) {
                    self.mode = Mode::Discard {
                        framed: false,
                        line: line + 1,
                    };
                }
            }
        }
    }

    /// Stays unframed unless `store` switched to discarding.
    fn keep_unframed(&mut self, line: usize, prev: u8) {
        if matches!(self.mode, Mode::Unframed { .. }) {
            self.mode = Mode::Unframed { line, prev };
        }
    }

    fn idle(&mut self, b: u8) {
        match b {
            START_BLOCK => {
                self.buf.clear();
                self.mode = Mode::Framed;
            }
            END_BLOCK | CR | b'\n' | b' ' | b'\t' => {}
            _ => {
                self.buf.clear();
                self.mode = Mode::Unframed { line: 1, prev: b };
                self.store(b, false);
            }
        }
    }
}

fn trim_end(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|&b| is_line_end(b) || is_blank(b)) {
        v.pop();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(items: Vec<Result<Vec<u8>, MllpError>>) -> Vec<String> {
        items
            .into_iter()
            .map(|r| String::from_utf8(r.expect("message")).expect("utf8"))
            .collect()
    }

    #[test]
    fn framed_messages_survive_any_chunking() {
        let mut wire = frame("MSH|a\rOBX|1\r");
        wire.extend(frame(b"MSH|b\r"));
        for chunk in 1..wire.len() {
            let mut d = MllpDecoder::new();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                d.push(part);
                got.extend(std::iter::from_fn(|| d.next_message()));
            }
            assert_eq!(d.finish(), None);
            assert_eq!(ok(got), ["MSH|a\rOBX|1\r", "MSH|b\r"], "chunk {chunk}");
        }
    }

    #[test]
    fn unframed_messages_are_split_on_blank_lines() {
        let input = b"MSH|a\r\nOBX|1\r\n\r\nMSH|b\nOBX|2\n  \nMSH|c\rPID|\r";
        assert_eq!(
            ok(MllpDecoder::decode_all(input)),
            ["MSH|a\r\nOBX|1", "MSH|b\nOBX|2", "MSH|c\rPID|"]
        );
    }

    #[test]
    fn a_missing_cr_after_the_end_block_is_tolerated() {
        let input = b"\x0bMSH|a\r\x1c\x0bMSH|b\r\x1c\r";
        assert_eq!(ok(MllpDecoder::decode_all(input)), ["MSH|a\r", "MSH|b\r"]);
    }

    #[test]
    fn an_interrupted_frame_is_reported_and_the_next_one_decodes() {
        let input = b"\x0bMSH|cut\x0bMSH|b\r\x1c\r\x0bMSH|open";
        let got = MllpDecoder::decode_all(input);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Err(MllpError::Unterminated { len: 7 }));
        assert_eq!(got[1], Ok(b"MSH|b\r".to_vec()));
        assert_eq!(got[2], Err(MllpError::Unterminated { len: 8 }));
    }

    #[test]
    fn oversized_messages_are_discarded_and_reported() {
        let mut d = MllpDecoder::with_max_len(8);
        d.push(&frame("MSH|0123456789"));
        d.push(&frame("MSH|ok"));
        assert_eq!(d.next_message(), Some(Err(MllpError::TooLong { max: 8 })));
        assert_eq!(d.next_message(), Some(Ok(b"MSH|ok".to_vec())));
        assert_eq!(d.next_message(), None);
    }
}
