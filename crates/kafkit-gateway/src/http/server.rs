//! Serving the gateway on a socket: plain HTTP or TLS, with a deadline on every state a
//! connection can be in, so no client can hold a connection place without using it:
//!
//! - the TLS handshake must finish within [`ServerLimits::header_read_timeout`];
//! - a connection with no request in flight (before its first byte, while HTTP/1-or-HTTP/2 is
//!   detected, while HTTP/1 headers arrive, kept alive between requests, an idle HTTP/2
//!   connection) is closed once it has been so for [`ServerLimits::header_read_timeout`];
//! - a write the client does not read is abandoned after the same time;
//! - one HTTP/2 connection carries at most [`ServerLimits::max_streams_per_connection`]
//!   requests at once, and at most [`ServerLimits::max_connections`] connections are served
//!   (more are closed at accept), which bounds the requests in flight.
//!
//! Shutdown stops accepting, turns readiness to 503, closes at once every connection that has
//! no request in flight (one that has not delivered a whole request runs no handler), lets the
//! requests in flight finish for [`ServerLimits::drain_timeout`] and then closes what is left.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;
use tower::Service;

use crate::{AppState, router};

/// Limits of the listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a connection may go with no request in flight: before its first byte, reading
    /// a request's headers, kept alive (HTTP/1) or idle (HTTP/2) between requests, and the
    /// TLS handshake; also the longest a response write may wait for the client to read.
    /// Keep it above the pool idle time of usual clients, or they race the close.
    pub header_read_timeout: Duration,
    /// Most connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most requests one HTTP/2 connection carries at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// Longest wait for requests in flight once shutdown began; then connections are closed.
    pub drain_timeout: Duration,
}

/// Default [`ServerLimits::max_streams_per_connection`]: a client wanting more parallelism
/// opens more connections, each counted against [`ServerLimits::max_connections`].
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 16;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a connection with nothing in flight gets at shutdown to write out what it already
/// has (the end of a response just handed to it) before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Serves `state`'s gateway on `listener` (plain HTTP) until `shutdown` completes, then stops
/// accepting and finishes the requests in flight (within the drain time). The producer is not
/// flushed here: call `state.producer().shutdown()` after it returns, so every request answered
/// `2xx` is in Kafka.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, state, DefaultAcceptor, false, shutdown).await
}

/// [`serve`] over TLS (rustls).
pub async fn serve_tls(
    listener: TcpListener,
    state: AppState,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor =
        RustlsAcceptor::new(tls).handshake_timeout(state.server_limits().header_read_timeout);
    serve_with(listener, state, acceptor, true, shutdown).await
}

async fn serve_with<A>(
    listener: TcpListener,
    state: AppState,
    acceptor: A,
    https: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    A: Accept<TcpStream, ()> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Future: Send,
{
    let limits = state.server_limits();
    let readiness = state.readiness().clone();
    let mut app = router(state);
    if https {
        // The console's session cookie is then `Secure`.
        app = app.layer(axum::Extension(crate::console::Https));
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection);
    let (stop, stopped) = watch::channel(false);
    let connections = Connections {
        app,
        builder,
        acceptor,
        limits,
        stop: stopped,
    };
    let places = u32::try_from(limits.max_connections.max(1))
        .map_err(|_| io::Error::other("max_connections over 2^32"))?;
    let permits = Arc::new(Semaphore::new(places as usize));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached; closing a new connection");
            continue;
        };
        // Answers are written whole; do not let Nagle hold their last segment back.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connections.clone().serve(stream, peer, permit));
    }
    drop(listener);
    // Load balancers stop sending while the requests in flight finish.
    readiness.start_draining();
    let _ = stop.send(true);
    // Every connection ends within the drain time; each holds its place until then.
    let _ = permits.acquire_many(places).await;
    Ok(())
}

/// What each connection's task needs.
#[derive(Clone)]
struct Connections<A> {
    app: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    acceptor: A,
    limits: ServerLimits,
    /// Turns `true` when shutdown begins.
    stop: watch::Receiver<bool>,
}

impl<A> Connections<A>
where
    A: Accept<TcpStream, ()> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Future: Send,
{
    /// Serves one connection until it closes, a deadline passes, or shutdown ends it.
    async fn serve(mut self, stream: TcpStream, peer: SocketAddr, _place: OwnedSemaphorePermit) {
        let timeout = self.limits.header_read_timeout;
        let stream = tokio::select! {
            accepted = tokio::time::timeout(timeout, self.acceptor.accept(stream, ())) => {
                match accepted {
                    Ok(Ok((stream, _))) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "handshake timed out");
                        return;
                    }
                }
            }
            _ = self.stop.wait_for(|stop| *stop) => return,
        };
        let (in_flight, mut idle) = watch::channel(0usize);
        let in_flight = Arc::new(in_flight);
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let guard = InFlight::start(&in_flight);
            let mut app = app.clone();
            async move {
                let response = match app.call(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: guard,
                }))
            }
        });
        let io = TokioIo::new(WriteDeadline::new(stream, timeout));
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = idle_for(&mut idle, timeout) => {
                tracing::debug!(%peer, "closing a connection idle for the header timeout");
                return;
            }
            _ = self.stop.wait_for(|stop| *stop) => {}
        }
        // Shutdown: no new request on this connection; one with nothing in flight gets only
        // the time to write out what it holds, the others the drain time.
        connection.as_mut().graceful_shutdown();
        let grace = if *idle.borrow() == 0 {
            SHUTDOWN_GRACE
        } else {
            self.limits.drain_timeout
        };
        let _ = tokio::time::timeout(grace, connection).await;
    }
}

/// Completes once no request has been in flight for `timeout` in a row.
async fn idle_for(in_flight: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if in_flight.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = tokio::time::sleep(timeout) => return,
            changed = in_flight.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// One request in flight on a connection, from its headers until its response body is done.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted in flight until hyper is done with it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream whose writes fail once one has waited `limit` for the client to read: a client
/// that stops reading its answer cannot hold the connection.
struct WriteDeadline<S> {
    stream: S,
    limit: Duration,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(stream: S, limit: Duration) -> Self {
        WriteDeadline {
            stream,
            limit,
            stalled: None,
        }
    }

    /// `Pending` while the write may still wait, a timeout error once it waited too long.
    fn check<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(polled, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.check(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
