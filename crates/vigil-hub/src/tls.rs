//! HTTPS for the hub: a listener that completes TLS handshakes (rustls through tokio-rustls)
//! off the accept loop, the verified client certificate of each connection, HSTS on every
//! response, and the rule that a gateway's token must belong to the gateway its client
//! certificate names.
//!
//! Handlers see the peer address as `ConnectInfo<SocketAddr>` in both plain and TLS modes, and
//! over TLS a [`TlsPeer`] request extension with the verified client identity.

use crate::ApiError;
use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The HSTS policy sent on every response over TLS (never over plain HTTP).
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// A handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Accepts TCP connections and hands out those whose TLS handshake succeeded. Handshakes run
/// in their own tasks, so a slow or non-TLS client never holds up the others; a plain HTTP
/// request gets a `400` problem document saying the port speaks HTTPS, and is closed.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            rx,
            local,
            acceptor: task,
        })
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    mut tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    // Every TLS connection opens with a handshake record (content type 22).
    if first[0] != 0x16 {
        if first[0].is_ascii_alphabetic() {
            // Take in the request line and headers so the close does not reset the answer.
            let mut buf = vec![0u8; 8192];
            let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
            let body = r#"{"type":"about:blank","title":"Bad request","status":400,"code":"https_required","detail":"this port speaks HTTPS; use an https:// URL"}"#;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(answer.as_bytes()).await?;
            let _ = tcp.shutdown().await;
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a TLS client",
        ));
    }
    acceptor.accept(tcp).await
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor task ended (it does not, short of a panic): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What axum records per TLS connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: TlsPeer,
}

/// The TLS side of a request's connection (a request extension on the TLS listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The client presented a certificate, verified against the client CA.
    pub certificate: bool,
    /// The gateway that certificate names (SAN URI `urn:vigil:gateway:<id>`, else its CN).
    pub identity: Option<String>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        let cert = conn.peer_certificates().and_then(|c| c.first());
        Peer {
            addr: *stream.remote_addr(),
            tls: TlsPeer {
                certificate: cert.is_some(),
                identity: cert.and_then(vigil_tls::peer_identity),
            },
        }
    }
}

/// Middleware of the TLS listener: the peer address as `ConnectInfo<SocketAddr>` (as on plain
/// HTTP), the [`TlsPeer`] extension, and HSTS on the response.
pub async fn tls_layer(
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    req.extensions_mut().insert(ConnectInfo(peer.addr));
    req.extensions_mut().insert(peer.tls);
    // Links the hub writes (FHIR paging, export locations) name the scheme the request
    // arrived on; over TLS that is https whatever the client claimed.
    req.headers_mut().insert(
        axum::http::HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("https"),
    );
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    resp
}

/// A gateway token is accepted over a connection with a client certificate only when the
/// certificate names that same gateway (403 otherwise). Without a certificate (plain HTTP,
/// or TLS with `client_auth` `none` or `optional`) the token alone decides.
pub fn require_gateway(peer: Option<&TlsPeer>, gateway: &str) -> Result<(), ApiError> {
    let Some(p) = peer.filter(|p| p.certificate) else {
        return Ok(());
    };
    if p.identity.as_deref() == Some(gateway) {
        return Ok(());
    }
    tracing::warn!(
        token_gateway = gateway,
        certificate_gateway = p.identity.as_deref().unwrap_or("(none)"),
        "gateway token used with another gateway's client certificate; refused"
    );
    Err(ApiError::Forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_must_name_the_token_gateway() {
        let cert = |id: Option<&str>| TlsPeer {
            certificate: true,
            identity: id.map(str::to_owned),
        };
        assert!(require_gateway(None, "g1").is_ok());
        let no_cert = TlsPeer {
            certificate: false,
            identity: None,
        };
        assert!(require_gateway(Some(&no_cert), "g1").is_ok());
        assert!(require_gateway(Some(&cert(Some("g1"))), "g1").is_ok());
        assert!(matches!(
            require_gateway(Some(&cert(Some("g2"))), "g1"),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            require_gateway(Some(&cert(None)), "g1"),
            Err(ApiError::Forbidden)
        ));
    }
}
