//! Delivery of queued notifications: signed webhooks and plain SMTP e-mail, retried with
//! exponential backoff and dead-lettered after `notify_max_attempts`.
//!
//! The queue lives in storage (`vigil_store::Notification`), so a restart loses nothing.
//! Channel `user` is the in-app inbox (delivered once stored); `webhook` posts the payload to
//! the configured webhook named by the target, signed with
//! `X-Vigil-Signature: sha256=<hex HMAC-SHA256 of the body>`; `email` sends to the address
//! configured for the target user.

use crate::HubConfig;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vigil_model::Timestamp;
use vigil_store::{Notification, Store, StoreError};

/// A webhook that receives every alert notification.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// The HMAC-SHA256 key of `X-Vigil-Signature`.
    pub secret: String,
}

/// An SMTP relay reached without TLS (a local MTA or relay on a trusted network).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `host:port`.
    pub server: String,
    pub from: String,
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `X-Vigil-Signature` value of a body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// Why a delivery failed (kept on the notification, never shown to API clients unasked).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no {0} is configured")]
    NotConfigured(String),
    #[error("webhook answered {0}")]
    Status(u16),
    #[error("webhook request failed: {0}")]
    Http(String),
    #[error("smtp: {0}")]
    Smtp(String),
}

/// Sends one notification.
async fn deliver(
    http: &reqwest::Client,
    config: &HubConfig,
    n: &Notification,
) -> Result<(), DeliveryError> {
    match n.channel.as_str() {
        "webhook" => {
            let hook = config
                .webhooks
                .iter()
                .find(|w| w.name == n.target)
                .ok_or_else(|| DeliveryError::NotConfigured(format!("webhook {}", n.target)))?;
            let body = n.payload.to_string();
            let resp = http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header(
                    "x-vigil-signature",
                    signature(&hook.secret, body.as_bytes()),
                )
                .header("x-vigil-notification", n.id.to_string())
                .body(body)
                .send()
                .await
                .map_err(|e| DeliveryError::Http(e.to_string()))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Status(resp.status().as_u16()))
            }
        }
        "email" => {
            let smtp = config
                .smtp
                .as_ref()
                .ok_or_else(|| DeliveryError::NotConfigured("smtp server".into()))?;
            let to = config
                .emails
                .get(&n.target)
                .ok_or_else(|| DeliveryError::NotConfigured(format!("address of {}", n.target)))?;
            let subject = format!(
                "Vigil alert {} {}",
                n.payload["alert"],
                n.payload["event"].as_str().unwrap_or("update")
            );
            send_mail(smtp, to, &subject, &mail_body(&n.payload)).await
        }
        // The in-app inbox: stored is delivered.
        _ => Ok(()),
    }
}

fn mail_body(p: &serde_json::Value) -> String {
    format!(
        "Alert {} ({}) for patient {}: {} (escalation level {}).\r\nOpen Vigil to acknowledge it.\r\n",
        p["alert"],
        p["rule_id"].as_str().unwrap_or("?"),
        p["patient"].as_str().unwrap_or("?"),
        p["event"].as_str().unwrap_or("update"),
        p["escalation_level"],
    )
}

/// Strips anything that could break a header or an SMTP command.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .collect()
}

async fn reply(r: &mut BufReader<TcpStream>, want: &[&str]) -> Result<(), DeliveryError> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line))
            .await
            .map_err(|_| DeliveryError::Smtp("timeout".into()))?
            .map_err(|e| DeliveryError::Smtp(e.to_string()))?;
        if n == 0 || line.len() < 3 {
            return Err(DeliveryError::Smtp("connection closed".into()));
        }
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if want.iter().any(|w| line.starts_with(w)) {
            Ok(())
        } else {
            Err(DeliveryError::Smtp(format!(
                "server said {}",
                line.trim_end()
            )))
        };
    }
}

async fn command(
    r: &mut BufReader<TcpStream>,
    line: &str,
    want: &[&str],
) -> Result<(), DeliveryError> {
    r.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| DeliveryError::Smtp(e.to_string()))?;
    reply(r, want).await
}

/// A minimal SMTP client (RFC 5321, no TLS, no authentication).
pub async fn send_mail(
    smtp: &SmtpConfig,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<(), DeliveryError> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&smtp.server))
        .await
        .map_err(|_| DeliveryError::Smtp("connect timeout".into()))?
        .map_err(|e| DeliveryError::Smtp(e.to_string()))?;
    let mut r = BufReader::new(stream);
    let (from, to) = (clean(&smtp.from), clean(to));
    reply(&mut r, &["220"]).await?;
    command(&mut r, "EHLO vigil-hub\r\n", &["250"]).await?;
    command(&mut r, &format!("MAIL FROM:<{from}>\r\n"), &["250"]).await?;
    command(&mut r, &format!("RCPT TO:<{to}>\r\n"), &["250", "251"]).await?;
    command(&mut r, "DATA\r\n", &["354"]).await?;
    let mut msg = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        clean(subject),
        Timestamp::now(),
    );
    for line in body.lines() {
        if line.starts_with('.') {
            msg.push('.');
        }
        msg.push_str(line);
        msg.push_str("\r\n");
    }
    msg.push_str(".\r\n");
    command(&mut r, &msg, &["250"]).await?;
    let _ = command(&mut r, "QUIT\r\n", &["221"]).await;
    Ok(())
}

/// One pass over the due notifications.
pub async fn drain(
    http: &reqwest::Client,
    store: &dyn Store,
    config: &HubConfig,
) -> Result<usize, StoreError> {
    let due = store.due_notifications(Timestamp::now(), 100).await?;
    let n = due.len();
    for note in due {
        match deliver(http, config, &note).await {
            Ok(()) => store.notification_delivered(note.id).await?,
            Err(e) => {
                let attempts = note.attempts.saturating_add(1);
                let retry_at = (attempts < config.notify_max_attempts).then(|| {
                    let backoff = config
                        .notify_backoff_ms
                        .saturating_mul(1u64 << attempts.min(20))
                        .min(3_600_000);
                    Timestamp::now()
                        .saturating_add_millis(i64::try_from(backoff).unwrap_or(3_600_000))
                });
                tracing::warn!(
                    notification = note.id,
                    channel = %note.channel,
                    attempts,
                    dead = retry_at.is_none(),
                    error = %e,
                    "notification not delivered"
                );
                store
                    .notification_failed(note.id, &e.to_string(), retry_at)
                    .await?;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
