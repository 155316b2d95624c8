//! The accept loop under both listeners: a bounded number of connections, a header size limit
//! and a header read timeout (slowloris), optional in-process TLS (rustls, TLS 1.2+), and a
//! graceful drain: on shutdown no new connections are accepted and in-flight requests finish
//! within the drain deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{ServerConfig, TlsConfig};

/// Connection-level limits shared by both listeners.
#[derive(Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl ConnLimits {
    /// The public listener's limits and TLS (`[server]`).
    pub fn from_config(cfg: &ServerConfig) -> Result<Self, TlsError> {
        Ok(ConnLimits {
            max_connections: cfg.max_connections,
            max_header_bytes: cfg.max_header_bytes,
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            drain_timeout: Duration::from_millis(cfg.drain_timeout_ms),
            tls: cfg.tls.as_ref().map(tls_acceptor).transpose()?,
        })
    }

    /// The same limits without TLS: the admin listener's (it never has TLS).
    pub fn without_tls(&self) -> Self {
        ConnLimits {
            tls: None,
            ..self.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(std::path::PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Invalid(std::path::PathBuf, String),
}

/// Builds a rustls acceptor from PEM files. rustls speaks only TLS 1.2 and 1.3.
pub fn tls_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| TlsError::Read(p.to_path_buf(), e));
    let invalid = |p: &std::path::Path, e: String| TlsError::Invalid(p.to_path_buf(), e);
    let pem_error = |p: &std::path::Path, e: pem::Error| match e {
        pem::Error::NoItemsFound if p == cfg.key => invalid(p, "no private key block".into()),
        e => invalid(p, e.to_string()),
    };
    let certs = CertificateDer::pem_slice_iter(&read(&cfg.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&cfg.cert, e))?;
    if certs.is_empty() {
        return Err(invalid(&cfg.cert, "no CERTIFICATE block".into()));
    }
    // The first PKCS#8, PKCS#1 or SEC1 key in the file.
    let key =
        PrivateKeyDer::from_pem_slice(&read(&cfg.key)?).map_err(|e| pem_error(&cfg.key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| invalid(&cfg.cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(&cfg.key, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `stop` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    loop {
        // Past the connection limit, stop accepting: the kernel backlog queues the rest.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let service = TowerToHyperService::new(router.clone());
        match &limits.tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let (acceptor, http, watcher, timeout) = (
                    acceptor.clone(),
                    http.clone(),
                    graceful.watcher(),
                    limits.header_read_timeout,
                );
                tokio::spawn(async move {
                    // The handshake counts against the header read timeout too.
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    {
                        let _ = watcher
                            .watch(http.serve_connection(TokioIo::new(tls), service))
                            .await;
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline reached with connections still open");
    }
}
