//! HL7 v2 over MLLP: a TCP listener for bedside monitors and interface engines.
//!
//! One task per connection splits the byte stream into messages with
//! [`vigil_devices::mllp::MllpDecoder`] (MLLP frames, or unframed messages separated by a blank
//! line, ended by a pause of `unframed_idle_ms` or by the end of the connection), parses each
//! as an ORU^R01 and answers each with an MLLP-framed ACK, in order:
//!
//! - `AA` only after [`vigil_outbox::Outbox::append`] has committed the message's readings (a
//!   message with no numeric observation is accepted with nothing to store);
//! - `AE` (application error) when the message is an ORU^R01 but cannot be stored: MSH-3 names
//!   no usable device, the outbox is full or failed. The sender keeps it and resends;
//! - `AR` (application reject) when it is not an acceptable message: not HL7 (no MSH, bad
//!   delimiters, empty), not an ORU^R01, no control id, a broken or oversized frame.
//!
//! MSA-2 carries the message control id (MSH-10) whenever it can be read. Messages of type
//! ACK are never answered. Readings name the device from MSH-3 (its EUI-64 when given, the
//! same rule as [`vigil_devices::hl7::parse_oru`]), the patient from PID-3, source `hl7`, and
//! the gateway's receive time.

use crate::adapters::AdapterState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use vigil_devices::hl7::{AckCode, Hl7Error, ack_at, parse_oru_with};
use vigil_devices::mllp::{MllpDecoder, MllpError, frame};
use vigil_devices::{DecodeContext, Decoded};
use vigil_model::{DeviceId, Record, Timestamp};
use vigil_outbox::OutboxError;

/// Settings of the MLLP listener (`[gateway.mllp]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MllpConfig {
    /// Address to listen on, e.g. `0.0.0.0:2575` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Longest message accepted, in bytes; longer ones are discarded and answered `AR`.
    pub max_message_bytes: usize,
    /// An unframed message without a trailing blank line is complete after this pause.
    pub unframed_idle_ms: u64,
    /// A connection that sends nothing for this long is closed (0: never).
    pub idle_timeout_s: u64,
}

impl Default for MllpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2575)),
            max_connections: 64,
            max_message_bytes: MllpDecoder::DEFAULT_MAX_LEN,
            unframed_idle_ms: 500,
            idle_timeout_s: 0,
        }
    }
}

/// Counters of the MLLP listener.
#[derive(Debug, Default)]
pub(crate) struct MllpCounters {
    local_addr: std::sync::OnceLock<SocketAddr>,
    connections_active: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    messages_total: AtomicU64,
    accepted_total: AtomicU64,
    errors_total: AtomicU64,
    rejected_total: AtomicU64,
    readings_total: AtomicU64,
}

/// A snapshot of the MLLP listener's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MllpStatus {
    pub listen: Option<SocketAddr>,
    pub connections_active: u64,
    pub connections_total: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    pub messages_total: u64,
    /// Messages answered `AA`, `AE`, `AR`.
    pub accepted_total: u64,
    pub errors_total: u64,
    pub rejected_total: u64,
    /// Readings committed to the outbox.
    pub readings_total: u64,
}

impl MllpCounters {
    pub(crate) fn snapshot(&self) -> MllpStatus {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MllpStatus {
            listen: self.local_addr.get().copied(),
            connections_active: l(&self.connections_active),
            connections_total: l(&self.connections_total),
            connections_refused: l(&self.connections_refused),
            messages_total: l(&self.messages_total),
            accepted_total: l(&self.accepted_total),
            errors_total: l(&self.errors_total),
            rejected_total: l(&self.rejected_total),
            readings_total: l(&self.readings_total),
        }
    }
}

/// Binds the listener and starts serving. Returns the task and the bound address.
pub(crate) async fn start(
    cfg: MllpConfig,
    outbox: crate::edge::Intake,
    state: &mut AdapterState,
    stop: watch::Receiver<bool>,
) -> Result<(JoinHandle<()>, SocketAddr), std::io::Error> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(MllpCounters::default());
    let _ = counters.local_addr.set(addr);
    state.mllp = Some(counters.clone());
    tracing::info!(%addr, "HL7 MLLP listener started");
    let h = tokio::spawn(serve(listener, cfg, outbox, counters, stop));
    Ok((h, addr))
}

async fn serve(
    listener: TcpListener,
    cfg: MllpConfig,
    outbox: crate::edge::Intake,
    counters: Arc<MllpCounters>,
    stop: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut stop_rx = stop.clone();
    loop {
        tokio::select! {
            _ = super::stopped(&mut stop_rx) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, "MLLP connection refused: too many connections");
                        drop(sock);
                        continue;
                    };
                    counters.connections_total.fetch_add(1, Ordering::Relaxed);
                    let conn = Connection {
                        cfg: cfg.clone(),
                        outbox: outbox.clone(),
                        counters: counters.clone(),
                        peer,
                    };
                    let stop = stop.clone();
                    conns.spawn(async move {
                        conn.counters.connections_active.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(peer = %conn.peer, "MLLP connection opened");
                        if let Err(e) = conn.run(sock, stop).await {
                            tracing::info!(peer = %conn.peer, error = %e, "MLLP connection failed");
                        } else {
                            tracing::info!(peer = %conn.peer, "MLLP connection closed");
                        }
                        conn.counters.connections_active.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    // Connections finish the message in hand (its commit and ACK) and close.
    while conns.join_next().await.is_some() {}
    tracing::info!("HL7 MLLP listener stopped");
}

struct Connection {
    cfg: Arc<MllpConfig>,
    outbox: crate::edge::Intake,
    counters: Arc<MllpCounters>,
    peer: SocketAddr,
}

/// Longest time one ACK may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl Connection {
    async fn run(&self, mut sock: TcpStream, stop: watch::Receiver<bool>) -> std::io::Result<()> {
        let _ = sock.set_nodelay(true);
        let mut dec = MllpDecoder::with_max_len(self.cfg.max_message_bytes.max(16));
        let mut buf = vec![0u8; 16 * 1024];
        let mut in_frame = false;
        let mut pending = false; // bytes of an unfinished unframed message may be buffered
        let mut stop_rx = stop.clone();
        let idle_limit =
            (self.cfg.idle_timeout_s > 0).then(|| Duration::from_secs(self.cfg.idle_timeout_s));
        let unframed_idle = Duration::from_millis(self.cfg.unframed_idle_ms.max(1));
        let mut last_read = tokio::time::Instant::now();
        loop {
            let wait = if pending && !in_frame {
                unframed_idle
            } else {
                idle_limit.unwrap_or(Duration::from_secs(3600))
            };
            let n = tokio::select! {
                _ = super::stopped(&mut stop_rx) => return Ok(()),
                r = sock.read(&mut buf) => r?,
                _ = tokio::time::sleep(wait) => {
                    if pending && !in_frame {
                        // A pause ends an unframed message.
                        pending = false;
                        if let Some(item) = dec.finish() {
                            self.answer(&mut sock, item).await?;
                        }
                    } else if idle_limit.is_some_and(|l| last_read.elapsed() >= l) {
                        tracing::info!(peer = %self.peer, "MLLP connection idle; closing");
                        return Ok(());
                    }
                    continue;
                }
            };
            if n == 0 {
                // Every complete message is answered already; an unframed one may remain. The
                // peer may have shut down only its sending side: answer it anyway.
                if let Some(item) = dec.finish() {
                    let _ = self.answer(&mut sock, item).await;
                }
                return Ok(());
            }
            last_read = tokio::time::Instant::now();
            let chunk = buf.get(..n).unwrap_or_default();
            for &b in chunk {
                match b {
                    0x0B => in_frame = true,
                    0x1C => in_frame = false,
                    _ => {}
                }
            }
            if !in_frame {
                pending = chunk
                    .iter()
                    .rposition(|&b| b == 0x1C)
                    .map_or(chunk, |i| chunk.get(i + 1..).unwrap_or_default())
                    .iter()
                    .any(|b| !b.is_ascii_whitespace())
                    || (pending && !chunk.contains(&0x1C));
            }
            dec.push(chunk);
            self.drain(&mut sock, &mut dec).await?;
        }
    }

    /// Answers every complete message, in order.
    async fn drain(&self, sock: &mut TcpStream, dec: &mut MllpDecoder) -> std::io::Result<()> {
        while let Some(item) = dec.next_message() {
            self.answer(sock, item).await?;
        }
        Ok(())
    }

    async fn answer(
        &self,
        sock: &mut TcpStream,
        item: Result<Vec<u8>, MllpError>,
    ) -> std::io::Result<()> {
        let Some(reply) = self.handle(item).await else {
            return Ok(());
        };
        match tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(&reply)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "ACK write timed out",
            )),
        }
    }

    /// Processes one message; the framed ACK to send, if any.
    async fn handle(&self, item: Result<Vec<u8>, MllpError>) -> Option<Vec<u8>> {
        self.counters.messages_total.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now();
        let (code, control_id, text) = match item {
            Err(e) => (AckCode::AR, String::new(), e.to_string()),
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                if message_type(&text).is_some_and(|t| t.eq_ignore_ascii_case("ACK")) {
                    tracing::debug!(peer = %self.peer, "MLLP: ignoring an ACK message");
                    return None;
                }
                self.process(&text, now).await
            }
        };
        let counter = match code {
            AckCode::AA => &self.counters.accepted_total,
            AckCode::AE => &self.counters.errors_total,
            AckCode::AR => &self.counters.rejected_total,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if code != AckCode::AA {
            tracing::warn!(peer = %self.peer, control_id = %control_id, ack = code.as_str(), reason = %text, "HL7 message not accepted");
        }
        Some(frame(ack_at(&control_id, code, &text, now)))
    }

    async fn process(&self, text: &str, now: Timestamp) -> (AckCode, String, String) {
        let Ok(placeholder) = DeviceId::new("hl7-unknown") else {
            return (AckCode::AE, String::new(), "internal error".into());
        };
        let ctx = DecodeContext::new(placeholder, now);
        let msg = match parse_oru_with(text, &ctx) {
            Ok(m) => m,
            Err(e) => {
                let id = control_id(text).unwrap_or_default();
                let code = match e {
                    Hl7Error::NoDevice(_) => AckCode::AE,
                    _ => AckCode::AR,
                };
                return (code, id, e.to_string());
            }
        };
        let control = msg.control_id.clone();
        let device = match device_from_msh(&msg.sending_app, msg.sending_app_id.as_deref()) {
            Ok(d) => d,
            Err(e) => return (AckCode::AE, control, e.to_string()),
        };
        let skipped = msg.skipped.len();
        let mut decoded: Decoded = msg.into_decoded();
        for r in &mut decoded.readings {
            r.device = device.clone();
            r.received = Some(now);
        }
        let records: Vec<Record> = decoded.into_records();
        let n = records.len();
        if n == 0 {
            return (
                AckCode::AA,
                control,
                format!("no readings; {skipped} rows skipped"),
            );
        }
        match self.outbox.append(records).await {
            Ok(_) => {
                self.counters
                    .readings_total
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::debug!(peer = %self.peer, control_id = %control, readings = n, "HL7 message committed");
                (
                    AckCode::AA,
                    control,
                    format!("{n} readings stored; {skipped} rows skipped"),
                )
            }
            Err(OutboxError::Full { .. }) => (
                AckCode::AE,
                control,
                "gateway outbox full; resend later".into(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "MLLP: outbox append failed");
                (
                    AckCode::AE,
                    control,
                    "gateway storage error; resend later".into(),
                )
            }
        }
    }
}

/// The MSH segment's fields (`fields[0]` is MSH-2), when the text starts with one.
fn msh_fields(text: &str) -> Option<(char, Vec<&str>)> {
    let line = text
        .split(['\r', '\n'])
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\u{0B}' || c == '\u{1C}'))
        .find(|l| !l.is_empty())?;
    let rest = line.strip_prefix("MSH")?.trim_start();
    let sep = rest.chars().next()?;
    if sep.is_alphanumeric() || sep.is_whitespace() {
        return None;
    }
    let fields = rest.get(sep.len_utf8()..)?.split(sep).collect();
    Some((sep, fields))
}

/// MSH-10 as written (first component), when readable.
fn control_id(text: &str) -> Option<String> {
    let (_, fields) = msh_fields(text)?;
    let comp = fields.first()?.chars().next().unwrap_or('^');
    let id = fields.get(8)?.split(comp).next()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// MSH-9 message code (first component), when readable.
fn message_type(text: &str) -> Option<String> {
    let (_, fields) = msh_fields(text)?;
    let comp = fields.first()?.chars().next().unwrap_or('^');
    let t = fields.get(7)?.split(comp).next()?.trim();
    Some(t.to_owned())
}

/// The device id of an HL7 sender: MSH-3's universal id (EUI-64) when given, else its
/// namespace id, characters a [`DeviceId`] does not allow replaced by `-`. This is the rule of
/// `vigil_devices::hl7` (private there), repeated until that crate exposes it.
fn device_from_msh(
    app: &str,
    app_id: Option<&str>,
) -> Result<DeviceId, vigil_model::entity::InvalidId> {
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
    DeviceId::new(if clean.is_empty() {
        "hl7-unknown".to_owned()
    } else {
        clean
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh_fields_are_read_without_a_full_parse() {
        let m = "\u{0B}MSH|^~\\&|APP^0011^EUI-64||||20240101||ORU^R01|ctl-9|P|2.6\rPID|||x\r";
        assert_eq!(control_id(m).as_deref(), Some("ctl-9"));
        assert_eq!(message_type(m).as_deref(), Some("ORU"));
        assert_eq!(control_id("garbage"), None);
        assert_eq!(control_id("MSH|^~\\&|A"), None);
        assert_eq!(
            message_type("MSH|^~\\&|A||||||ACK^R01|1|P").as_deref(),
            Some("ACK")
        );
    }

    #[test]
    fn device_ids_follow_the_hl7_module_rule() {
        let d = |a, b| device_from_msh(a, b).map(|d| d.as_str().to_owned()).ok();
        assert_eq!(
            d("MINDRAY_VS900", Some("00A0370098007A80")).as_deref(),
            Some("00A0370098007A80")
        );
        assert_eq!(d("BED 4/MON", None).as_deref(), Some("BED-4-MON"));
        assert_eq!(d("", None).as_deref(), Some("hl7-unknown"));
    }
}
