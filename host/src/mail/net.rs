//! Sockets: DNS, TCP connect with `TCP_NODELAY`, TLS handshakes, and the
//! stream types handed to the SMTP dialogue (ours in the probe, lettre's for
//! sending).
//!
//! `TCP_NODELAY` matters: an SMTP client writes a command or the message body
//! and the end-of-data dot as separate small segments; with Nagle's algorithm
//! the second waits for the server's (delayed) ACK, ~40 ms per message.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::target::SmtpTarget;
use super::tls::{TlsSetup, classify_handshake};

/// Resolves the target's host (DNS stage).
pub(crate) async fn resolve(target: &SmtpTarget) -> Result<Vec<SocketAddr>, Classification> {
    let fail = |class: Class, detail: String| {
        Classification::local(
            class,
            Stage::Dns,
            detail,
            hint(target, class, Stage::Dns, 0, None),
        )
    };
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    match tokio::time::timeout(target.connect_timeout, lookup).await {
        Err(_) => Err(fail(
            Class::Timeout,
            format!("resolving {:?} timed out", target.host),
        )),
        Ok(Err(err)) => {
            let mut c = fail(
                Class::DnsFailure,
                format!("cannot resolve {:?}: {err}", target.host),
            );
            // EAI_AGAIN ("temporary failure in name resolution") may pass.
            c.temporary = err.to_string().to_ascii_lowercase().contains("temporary");
            Err(c)
        }
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(fail(
                    Class::DnsFailure,
                    format!("{:?} has no address", target.host),
                ))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// Connects to the first address that accepts (TCP stage), with
/// `TCP_NODELAY` set.
pub(crate) async fn connect(
    target: &SmtpTarget,
    addrs: &[SocketAddr],
) -> Result<TcpStream, Classification> {
    let mut last: Option<Classification> = None;
    for addr in addrs {
        let class_for = |class: Class, detail: String| {
            Classification::local(
                class,
                Stage::Connect,
                detail,
                hint(target, class, Stage::Connect, 0, None),
            )
        };
        match tokio::time::timeout(target.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).map_err(|e| {
                    class_for(Class::NetworkError, format!("setting TCP_NODELAY: {e}"))
                })?;
                return Ok(stream);
            }
            Ok(Err(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {
                last = Some(class_for(
                    Class::ConnectionRefused,
                    format!("connection to {addr} refused"),
                ));
            }
            Ok(Err(err)) => {
                last = Some(class_for(
                    Class::NetworkError,
                    format!("connecting to {addr}: {err}"),
                ));
            }
            Err(_) => {
                last = Some(class_for(
                    Class::Timeout,
                    format!(
                        "connecting to {addr} timed out after {:?}",
                        target.connect_timeout
                    ),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        Classification::local(
            Class::DnsFailure,
            Stage::Dns,
            "no address to connect to",
            hint(target, Class::DnsFailure, Stage::Dns, 0, None),
        )
    }))
}

/// Runs a TLS handshake over `tcp` (TLS stage), logging a warning whenever
/// certificate verification is disabled.
pub(crate) async fn handshake(
    target: &SmtpTarget,
    tls: &TlsSetup,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<Conn, Classification> {
    if !tls.verify {
        tracing::warn!(
            connection = %target.connection,
            "TLS certificate verification is disabled for this connection (tls.verify: false)"
        );
    }
    let Some(server_name) = tls.server_name.clone() else {
        return Err(Classification::local(
            Class::ConfigError,
            Stage::Tls,
            format!("{:?} is not a valid TLS server name", target.host),
            hint(target, Class::ConfigError, Stage::Tls, 0, None),
        ));
    };
    let first = Arc::new(Mutex::new(Vec::new()));
    let sniff = Sniff {
        inner: tcp,
        first: first.clone(),
        seen: 0,
    };
    let connect = tls.connector.connect(server_name, sniff);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(stream))),
        Ok(Err(err)) => {
            let first = first.lock().map(|b| b.clone()).unwrap_or_default();
            Err(classify_handshake(target, &err, &first))
        }
        Err(_) => Err(Classification::local(
            Class::Timeout,
            Stage::Tls,
            format!("TLS handshake timed out after {timeout:?}"),
            hint(target, Class::Timeout, Stage::Tls, 0, None),
        )),
    }
}

/// How many of the server's first bytes [`Sniff`] keeps.
const SNIFF_BYTES: usize = 64;

/// A TCP stream that remembers the first bytes the server sent, so a failed
/// TLS handshake can tell "the server greeted in plain SMTP" apart.
#[derive(Debug)]
pub(crate) struct Sniff {
    inner: TcpStream,
    /// Shared with the handshake caller: the handshake future drops the
    /// stream on failure, and the bytes are what explains the failure.
    first: Arc<Mutex<Vec<u8>>>,
    /// Bytes recorded so far, so the lock is only taken at the start.
    seen: usize,
}

impl AsyncRead for Sniff {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res
            && self.seen < SNIFF_BYTES
        {
            let take = (SNIFF_BYTES - self.seen).min(buf.filled().len() - before);
            if let Ok(mut first) = self.first.lock() {
                first.extend_from_slice(&buf.filled()[before..before + take]);
            }
            self.seen += take;
        }
        res
    }
}

impl AsyncWrite for Sniff {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An established SMTP byte stream: plain TCP or TLS over TCP.
#[derive(Debug)]
pub(crate) enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (implicit or after STARTTLS).
    Tls(Box<TlsStream<Sniff>>),
}

impl Conn {
    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Conn::Plain(s) => s.peer_addr(),
            Conn::Tls(s) => s.get_ref().0.inner.peer_addr(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// The stream handed to lettre once mailplug has done the connection stages
/// itself: it first replays the greeting mailplug already read (lettre's
/// session starts by reading one), then passes bytes through.
#[derive(Debug)]
pub(crate) struct Replay {
    prefix: Vec<u8>,
    pos: usize,
    inner: Conn,
}

impl Replay {
    pub(crate) fn new(prefix: Vec<u8>, inner: Conn) -> Self {
        Replay {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Replay {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_are_opened_with_tcp_nodelay() {
        // Without it every message waits for the server's delayed ACK
        // (see host/benches/smtp_throughput.rs, lettre-default column).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut target = crate::mail::target::tests::sample();
        target.port = listener.local_addr().unwrap().port();
        let addrs = resolve(&target).await.unwrap();
        let stream = connect(&target, &addrs).await.unwrap();
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn replay_serves_the_greeting_before_the_socket() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut server, b"after")
            .await
            .unwrap();
        drop(server);
        let mut r = Replay::new(b"220 hi\r\n".to_vec(), Conn::Plain(client));
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"220 hi\r\nafter");
    }
}
