//! Serving the gateway on a socket: plain HTTP or TLS, with the limits a public listener needs.
//! A client must send its request headers within [`ServerLimits::header_read_timeout`] (a
//! half-sent request cannot hold a connection, or shutdown, forever), at most
//! [`ServerLimits::max_connections`] connections are served at once (more are closed at
//! accept), and shutdown stops accepting, turns readiness to 503, lets requests in flight
//! finish for [`ServerLimits::drain_timeout`] and then closes what is left.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{AppState, router};

/// Limits of the listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a client may take to send a request's headers (HTTP/1). hyper runs this timer
    /// while a kept-alive connection waits for its next request too, so it is also the idle
    /// timeout: keep it above the pool idle time of usual clients, or they race the close.
    pub header_read_timeout: Duration,
    /// Most connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Longest wait for requests in flight once shutdown began; then connections are closed.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `state`'s gateway on `listener` (plain HTTP) until `shutdown` completes, then stops
/// accepting and finishes the requests in flight (within the drain time). The producer is not
/// flushed here: call `state.producer.shutdown()` after it returns, so every request answered
/// `2xx` is in Kafka.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, state, DefaultAcceptor, false, shutdown).await
}

/// [`serve`] over TLS (rustls).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, state, RustlsAcceptor::new(tls), true, shutdown).await
}

/// The router as served: each request carries its peer's address (`ConnectInfo`).
type Served =
    axum::middleware::AddExtension<axum::Router, axum::extract::ConnectInfo<std::net::SocketAddr>>;

async fn serve_with<A>(
    listener: tokio::net::TcpListener,
    state: AppState,
    acceptor: A,
    https: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    A: Accept<Limited<tokio::net::TcpStream>, Served> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send,
    A::Service:
        axum_server::service::SendService<axum::http::Request<hyper::body::Incoming>> + Send,
    A::Future: Send,
{
    let limits = state.server;
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let (handle, readiness) = (handle.clone(), state.readiness.clone());
        async move {
            shutdown.await;
            // Load balancers stop sending while the requests in flight finish.
            readiness.start_draining();
            handle.graceful_shutdown(Some(limits.drain_timeout));
        }
    });
    let mut server = axum_server::from_tcp(listener.into_std()?)
        .acceptor(ConnectionLimit {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            inner: acceptor,
        })
        .handle(handle);
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut app = router(state);
    if https {
        // The console's session cookie is then `Secure`.
        app = app.layer(axum::Extension(super::console::Https));
    }
    // The peer's address: the console's login limit counts failures per client.
    server
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
}

/// Closes a connection at accept when `max_connections` are open; each open connection holds
/// a permit until it closes.
#[derive(Clone, Debug)]
struct ConnectionLimit<A> {
    permits: Arc<Semaphore>,
    inner: A,
}

impl<A, S> Accept<tokio::net::TcpStream, S> for ConnectionLimit<A>
where
    A: Accept<Limited<tokio::net::TcpStream>, S> + Clone + Send + 'static,
    A::Future: Send,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future =
        Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send + 'static>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let inner = self.inner.clone();
        Box::pin(async move {
            let Ok(permit) = permit else {
                tracing::warn!("connection limit reached; closing a new connection");
                return Err(io::Error::other("connection limit reached"));
            };
            inner
                .accept(
                    Limited {
                        stream,
                        _permit: permit,
                    },
                    service,
                )
                .await
        })
    }
}

/// A connection counted against the limit until it is dropped.
#[derive(Debug)]
pub struct Limited<S> {
    stream: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
