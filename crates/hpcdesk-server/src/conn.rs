//! HTTP connections: the accept loop, and what keeps slow or numerous clients from using up
//! the server.
//!
//! - hyper's HTTP/1 connections are driven here (rather than by `axum::serve`) so that an
//!   upgraded WebSocket reaches the gateway as the [`ClientStream`] it is: the plain
//!   `TcpStream`, or the TLS stream when the listener has TLS ([`crate::tls`]; the handshake
//!   is made in the connection's own task, within `limits.request_timeout`, holding its slot).
//! - **Incomplete requests are capped** (`limits.max_incomplete_requests`, for all clients
//!   together: behind nginx they all share one address). A connection holds a slot from its
//!   accept until its first request has arrived whole (headers and body), and again for each
//!   further request on it from its headers to the end of its body. A connection accepted
//!   while every slot is taken is closed at once; a further request on a kept-alive
//!   connection while every slot is taken is answered 503 and the connection closed.
//! - **Time limits**: the headers must arrive within `limits.request_timeout` (hyper's header
//!   timer), then the body within the same time again (`routes::limits`), or the connection
//!   is closed.
//!
//! The slot is released by [`RequestSlot::done`], which `routes::limits` calls once it has
//! read the whole body; a connection that ends earlier releases it when it is dropped.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hpcdesk_gateway::ClientStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::state::AppState;

/// The incomplete-request slot of one connection, as a request extension. A connection
/// holds a permit of the shared semaphore from its accept (or its next request's first
/// byte) until its request has arrived whole, so slow senders cannot take every slot. The
/// permit is freed by the body reader (`done`) while the connection's service still holds
/// the slot, hence the shared `Option` behind a plain mutex (held for a take or a set,
/// never across an await); dropping the connection drops the permit too.
#[derive(Clone, Debug)]
pub struct RequestSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl RequestSlot {
    /// The request has arrived whole: its slot is free for another.
    pub fn done(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for the next request of this connection, unless it holds one already.
    fn take_for_request(&self, slots: &Arc<Semaphore>) -> bool {
        let mut held = self.lock();
        if held.is_some() {
            return true;
        }
        match slots.clone().try_acquire_owned() {
            Ok(p) => {
                *held = Some(p);
                true
            }
            Err(_) => false,
        }
    }
}

fn busy() -> axum::response::Response {
    let mut r = axum::response::IntoResponse::into_response(crate::error::ApiError::Overloaded(
        "the desktop service has too many requests in progress; try again shortly".into(),
    ));
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

/// Accepts connections on `listener` and serves `router` on them until `shutdown`; then
/// sends `stop` (connections finish the request they are on and close; background tasks
/// watching it end) and waits up to 30 s for the connections.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: &AppState,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
    stop_tx: &tokio::sync::watch::Sender<bool>,
) {
    let stop = stop_tx.subscribe();
    let limits = &app.config.limits;
    let slots = Arc::new(Semaphore::new(limits.max_incomplete_requests));
    let header_timeout = limits.request_timeout.0;
    // Every connection's task, so that shutdown can wait for them (bounded) and none
    // outlives the server; finished ones are reaped on each accept.
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(first) = slots.clone().try_acquire_owned() else {
            app.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "connection closed: limits.max_incomplete_requests are in progress");
            drop(tcp);
            continue;
        };
        let slot = RequestSlot(Arc::new(Mutex::new(Some(first))));
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let slots = slots.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let router = router.clone();
                let ok = slot.take_for_request(&slots);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req.extensions_mut().insert(slot.clone());
                async move {
                    if !ok {
                        return Ok::<_, std::convert::Infallible>(busy());
                    }
                    tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new)).await
                }
            });
        let mut stop = stop.clone();
        let tls = app.tls.clone();
        connections.spawn(async move {
            let io = match tls {
                None => ClientStream::Plain(tcp),
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
                    Ok(Ok(s)) => ClientStream::Tls(Box::new(s)),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // In-flight requests (a create waiting for its desktop) get time to finish.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}
