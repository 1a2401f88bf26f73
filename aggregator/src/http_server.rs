//! The HTTP API's connections, each with a bounded cost: HTTP/1.1, over TLS (rustls) when
//! `[http] tls` names a certificate and key.
//!
//! - **Connections**: at most `max_connections` open at once and `max_connections_per_address`
//!   from one address; one more is answered `503` (plain HTTP) or closed (TLS) at once, so
//!   slow clients cannot take every socket (and with them the file descriptors zenoh needs).
//! - **Header-read timeout**: a request's header (and, with TLS, the handshake) must arrive
//!   within `header_read_timeout_s`; a kept-alive connection idle as long is closed.
//! - **Bodies**: at most `max_body_bytes`, arriving within `body_read_timeout_s`
//!   ([`bounded_body`]); `413` and `408` otherwise.
//!
//! Graceful stop: no new connections; open ones finish their request (streams of live alerts
//! end with the aggregator's `closing` signal), the rest are closed after [`STOP_GRACE`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::api::ApiError;
use crate::config::HttpConfig;

/// How long open connections may take to finish when the aggregator stops.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The limits of [`crate::config::HttpConfig`], checked.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Whether the API is served over TLS.
    pub tls: bool,
}

impl Limits {
    pub fn of(c: &HttpConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(c.header_read_timeout_s),
            body_read_timeout: Duration::from_secs(c.body_read_timeout_s),
            max_body_bytes: c.max_body_bytes,
            max_connections: c.max_connections,
            max_connections_per_address: c.max_connections_per_address,
            tls: c.tls.is_some(),
        }
    }
}

/// Connection counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    /// Refused because `max_connections` were open.
    pub refused_total_limit: AtomicU64,
    /// Refused because `max_connections_per_address` were open from that address.
    pub refused_address_limit: AtomicU64,
    /// Closed because a header (or a TLS handshake) did not arrive in time.
    pub header_timeouts: AtomicU64,
    pub tls_failures: AtomicU64,
}

/// Open connections per client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; counted out when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
    metrics: Arc<ConnMetrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().expect("not poisoned");
        o.total -= 1;
        if let Some(n) = o.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.by_address.remove(&self.ip);
            }
        }
        self.metrics.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq)]
enum Full {
    Total,
    Address,
}

fn admit(
    open: &Arc<Mutex<Open>>,
    ip: IpAddr,
    limits: &Limits,
    metrics: &Arc<ConnMetrics>,
) -> Result<Slot, Full> {
    let mut o = open.lock().expect("not poisoned");
    if o.total >= limits.max_connections {
        metrics.refused_total_limit.fetch_add(1, Ordering::Relaxed);
        return Err(Full::Total);
    }
    let n = o.by_address.entry(ip).or_insert(0);
    if *n >= limits.max_connections_per_address {
        metrics
            .refused_address_limit
            .fetch_add(1, Ordering::Relaxed);
        return Err(Full::Address);
    }
    *n += 1;
    o.total += 1;
    metrics.open.fetch_add(1, Ordering::Relaxed);
    Ok(Slot {
        open: open.clone(),
        ip,
        metrics: metrics.clone(),
    })
}

/// Loads `[http] tls`: the certificate chain and its private key (PEM).
pub fn tls_acceptor(t: &crate::config::HttpTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "http.tls.cert '{}': {e}; give a PEM certificate chain",
                t.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "http.tls.cert '{}' holds no certificate; give a PEM certificate chain",
            t.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| {
        format!(
            "http.tls.key '{}': {e}; give the certificate's PEM private key",
            t.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("http.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "http.tls: the key '{}' does not fit the certificate '{}': {e}",
                t.key.display(),
                t.cert.display()
            )
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<ConnMetrics>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, addr) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match admit(&open, addr.ip(), &limits, &metrics) {
            Ok(s) => s,
            Err(full) => {
                if tls.is_none() {
                    refuse(&tcp, &full, &limits);
                }
                continue;
            }
        };
        metrics.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let (app, tls, metrics, closing) =
            (app.clone(), tls.clone(), metrics.clone(), closing.clone());
        conns.spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(tcp, addr, app, limits, metrics, closing).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            connection(stream, addr, app, limits, metrics, closing).await
                        }
                        Ok(Err(e)) => {
                            metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = conns.len(),
            "HTTP connections still open after the stop grace; closing them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Answers a connection over the limits with `503` if its socket takes it at once (a
/// non-blocking write: a slow client gets nothing), then closes it.
fn refuse(tcp: &tokio::net::TcpStream, full: &Full, limits: &Limits) {
    let why = match full {
        Full::Total => format!(
            "the aggregator has its {} connections open (http.max_connections); try again shortly",
            limits.max_connections
        ),
        Full::Address => format!(
            "your address has {} connections open (http.max_connections_per_address); close some",
            limits.max_connections_per_address
        ),
    };
    let body = serde_json::json!({ "error": why }).to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\nx-content-type-options: nosniff\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(reply.as_bytes());
}

/// Serves one connection's requests until it closes, times out or the server stops.
async fn connection<I>(
    io: I,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    metrics: Arc<ConnMetrics>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(client = %addr, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = closing.wait_for(|c| *c), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Middleware: reads a request's body within `body_read_timeout` and `max_body_bytes`
/// before any handler runs (a client trickling a body cannot hold a handler), answering
/// `408` or `413` otherwise.
pub async fn bounded_body(
    axum::extract::State(limits): axum::extract::State<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req
        .headers()
        .contains_key(axum::http::header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(req).await;
    }
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes (http.max_body_bytes)",
                limits.max_body_bytes
            ),
        )
        .into_response()
    };
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Err(_) => ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s (http.body_read_timeout_s)",
                limits.body_read_timeout.as_secs()
            ),
        )
        .into_response(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            too_large()
        }
        Ok(Err(e)) => ApiError(
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        )
        .into_response(),
        Ok(Ok(collected)) => {
            let req = axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(collected.to_bytes()),
            );
            next.run(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            max_body_bytes: 1024,
            max_connections: total,
            max_connections_per_address: per,
            tls: false,
        }
    }

    /// Slots are counted per address and in total, and given back when dropped.
    #[test]
    fn connections_are_bounded_per_address_and_in_total() {
        let open = Arc::new(Mutex::new(Open::default()));
        let m = Arc::new(ConnMetrics::default());
        let l = limits(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = admit(&open, a, &l, &m).unwrap();
        let _a2 = admit(&open, a, &l, &m).unwrap();
        assert_eq!(admit(&open, a, &l, &m).err(), Some(Full::Address));
        let _b1 = admit(&open, b, &l, &m).unwrap();
        assert_eq!(admit(&open, b, &l, &m).err(), Some(Full::Total));
        drop(a1);
        assert!(admit(&open, a, &l, &m).is_ok());
        assert_eq!(m.refused_address_limit.load(Ordering::Relaxed), 1);
        assert_eq!(m.refused_total_limit.load(Ordering::Relaxed), 1);
    }
}
