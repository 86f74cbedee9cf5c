//! One client connection: read what arrived, run every complete request in
//! order, write all their replies with one socket write.
//!
//! Every socket write races the client's kill switch, server shutdown and
//! the output-buffer limits, so a client that stops reading can always be
//! closed and its buffers freed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::command::paged::{self, PageSource, Paged, Part};
use crate::command::{self, Flow, ServerState, Session};
use crate::config::TlsAuthClientsUser;
use crate::metrics;
use crate::protocol::reply::encode_array_header;
use crate::protocol::{Protocol, Reply, RequestDecoder};
use crate::pubsub::{Mailbox, Message};

const READ_CHUNK: usize = 16 * 1024;
const MAX_READ_CHUNK: usize = 1024 * 1024;
/// Replies beyond this are written before the batch ends, bounding memory.
const FLUSH_AT: usize = 64 * 1024;
/// A write buffer grown past this by one large reply is given back after it.
const KEEP_CAPACITY: usize = 1024 * 1024;

const DENIED: &[u8] = b"-DENIED flagstaff is running in protected mode because no password is set. In this mode connections are only accepted from the loopback interface. Set a password with --requirepass, or bind to 127.0.0.1 only.\r\n";

/// What a client connection runs on: a plain socket (served with readiness
/// and non-blocking reads, so waiting holds no buffer), or TLS over one.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether writes may stay buffered in the stream until flushed.
    const BUFFERS_WRITES: bool;

    /// The socket underneath.
    fn tcp(&self) -> &TcpStream;

    /// The subject CN of the client's verified certificate, if it sent one.
    fn peer_common_name(&self) -> Option<String> {
        None
    }

    /// Waits until bytes arrive, then reads them into `rbuf` (`want` is a
    /// capacity hint).
    fn read_some(
        &mut self,
        rbuf: &mut BytesMut,
        want: usize,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
}

impl ClientStream for TcpStream {
    const BUFFERS_WRITES: bool = false;

    fn tcp(&self) -> &TcpStream {
        self
    }

    async fn read_some(&mut self, rbuf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
        read_some(self, rbuf, want).await
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    const BUFFERS_WRITES: bool = true;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn peer_common_name(&self) -> Option<String> {
        let leaf = self.get_ref().1.peer_certificates()?.first()?;
        crate::auth::tls::common_name(leaf)
    }

    async fn read_some(&mut self, rbuf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
        // rustls may hold decrypted bytes the socket no longer signals, so
        // this waits inside the read, buffer reserved.
        rbuf.reserve(want);
        self.read_buf(rbuf).await
    }
}

/// Serves one connection until it closes, is killed, or the server shuts down.
pub async fn serve<S: ClientStream>(state: Arc<ServerState>, mut stream: S, peer: SocketAddr) {
    metrics::add(&state.stats.connections_received, 1);
    if state.default_is_nopass() && !peer.ip().is_loopback() {
        metrics::add(&state.stats.rejected_connections, 1);
        let _ = stream.write_all(DENIED).await;
        let _ = stream.flush().await;
        return;
    }
    let laddr = stream.tcp().local_addr().unwrap_or(peer);
    let fd = i64::from(std::os::fd::AsRawFd::as_raw_fd(stream.tcp()));
    let Some(client) = state
        .clients
        .register(peer, laddr, fd, state.settings.maxclients)
    else {
        metrics::add(&state.stats.rejected_connections, 1);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        let _ = stream.flush().await;
        return;
    };
    let _ = stream.tcp().set_nodelay(true);
    let id = client.id;
    tracing::debug!(id, %peer, "client connected");
    let mut session = Session::new(client.clone(), !state.requires_auth());
    if state.settings.tls_auth_clients_user == TlsAuthClientsUser::Cn {
        match stream.peer_common_name() {
            Some(cn) if command::acl::login_by_certificate(&state, &mut session, &cn) => {
                tracing::debug!(id, user = %cn, "logged in by client certificate");
            }
            Some(cn) => {
                tracing::info!(id, %peer, cn = %cn, "client certificate names no enabled ACL user; the connection is not logged in");
            }
            None => {}
        }
    }
    if let Err(e) = run(&state, &mut session, &mut stream).await {
        tracing::debug!(id, error = %e, "connection error");
    }
    state.hub.forget(id, &session.channels, &session.patterns);
    state.monitors.remove(id);
    state.clients.unregister(id);
    tracing::debug!(id, "client disconnected");
}

async fn run<S: ClientStream>(
    state: &ServerState,
    session: &mut Session,
    stream: &mut S,
) -> std::io::Result<()> {
    let limits = state.settings.decoder_limits();
    let timeout = (state.settings.timeout > 0).then(|| Duration::from_secs(state.settings.timeout));
    let mut decoder = RequestDecoder::new();
    // Both buffers are allocated only while there is something in them, so
    // an idle connection holds no buffer memory (10,000 idle clients would
    // otherwise pin 320 MiB).
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let client = session.client.clone();
    client.note_output(0, wbuf.capacity());
    let mut out = Writer::new(state, &client.kill);
    loop {
        let want = decoder.wanted(rbuf.len()).clamp(READ_CHUNK, MAX_READ_CHUNK);
        // As Redis, the idle timeout spares subscribers: they only listen.
        let idle = timeout.filter(|_| session.subscriptions() == 0);
        let read = async {
            match idle {
                Some(d) => tokio::time::timeout(d, stream.read_some(&mut rbuf, want))
                    .await
                    .unwrap_or(Ok(0)),
                None => stream.read_some(&mut rbuf, want).await,
            }
        };
        let n = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ok(()),
            _ = client.kill.cancelled() => return Ok(()),
            msg = next_message(&mut session.mail) => {
                deliver(&mut out, stream, session, msg, &mut wbuf).await?;
                wbuf = BytesMut::new();
                continue;
            }
            Some(line) = next_monitor_line(&mut session.monitor) => {
                wbuf.extend_from_slice(&line);
                while let Some(Ok(line)) = session.monitor.as_mut().map(|rx| rx.try_recv()) {
                    wbuf.extend_from_slice(&line);
                    if wbuf.len() >= FLUSH_AT {
                        break;
                    }
                }
                out.flush(stream, &mut wbuf).await?;
                wbuf = BytesMut::new();
                continue;
            }
            n = read => n?,
        };
        if n == 0 {
            return Ok(());
        }
        wbuf.reserve(READ_CHUNK);
        metrics::add(&state.stats.net_input_bytes, n as u64);
        let mut close = false;
        loop {
            // The query buffer as Redis shows it: the request about to run included.
            client.note_query(rbuf.len() + decoder.taken(), rbuf.capacity());
            match decoder.decode(&mut rbuf, &limits, session.authenticated) {
                Ok(Some(args)) => {
                    let (flow, paged) =
                        command::execute(session, state, &args, &mut wbuf, hung_up(stream.tcp()))
                            .await;
                    decoder.recycle(args);
                    if let Some(paged) = paged {
                        session.tally.flush(&state.stats);
                        write_paged(&mut out, stream, session.proto, paged, &mut wbuf).await?;
                    }
                    if flow == Flow::Close {
                        close = true;
                        break;
                    }
                    if wbuf.len() >= FLUSH_AT {
                        client.note_output(wbuf.len(), wbuf.capacity());
                        session.tally.flush(&state.stats);
                        out.flush(stream, &mut wbuf).await?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // As Redis: reply with the protocol error, then close.
                    metrics::add(&state.stats.protocol_errors, 1);
                    tracing::debug!(id = client.id, error = %e, "protocol error");
                    Reply::error(e.to_string()).encode(session.proto, &mut wbuf);
                    close = true;
                    break;
                }
            }
        }
        // Published before the replies go out, so a client that has read
        // them sees this connection's new state in CLIENT LIST.
        client.note_output(wbuf.len(), wbuf.capacity());
        session.tally.flush(&state.stats);
        session.publish();
        out.flush(stream, &mut wbuf).await?;
        if rbuf.is_empty() {
            rbuf = BytesMut::new();
        }
        wbuf = BytesMut::new();
        client.note_output(0, 0);
        if close {
            return Ok(());
        }
    }
}

/// Waits until the socket has bytes, then reads them into `rbuf` (reserving
/// `want` only then, so waiting costs no buffer).
async fn read_some(stream: &TcpStream, rbuf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        rbuf.reserve(want);
        match stream.try_read_buf(rbuf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // A readiness that was stale (as a new socket's first one is):
                // give the buffer back before waiting again.
                if rbuf.is_empty() {
                    *rbuf = BytesMut::new();
                }
            }
            read => return read,
        }
    }
}

/// Writes a connection's replies, closing it (with an error) when it is
/// killed, the server shuts down, or its unread output passes its limits.
struct Writer<'a> {
    state: &'a ServerState,
    kill: &'a CancellationToken,
    limits: crate::pubsub::Limits,
    /// Since when the pending output has been above the soft limit.
    over_soft_since: Option<Instant>,
}

fn closed(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_string())
}

impl<'a> Writer<'a> {
    fn new(state: &'a ServerState, kill: &'a CancellationToken) -> Self {
        Writer {
            state,
            kill,
            limits: state.settings.client_limits(),
            over_soft_since: None,
        }
    }

    /// Fails when `pending` unwritten bytes break the limits; returns the
    /// deadline by which the soft limit must be met again.
    fn check(&mut self, pending: usize) -> std::io::Result<Option<Instant>> {
        let l = &self.limits;
        if l.hard > 0 && pending > l.hard {
            return Err(self.over_limit(pending));
        }
        if l.soft == 0 || pending <= l.soft {
            self.over_soft_since = None;
            return Ok(None);
        }
        let since = *self.over_soft_since.get_or_insert_with(Instant::now);
        let deadline = since + l.soft_for;
        if Instant::now() >= deadline {
            return Err(self.over_limit(pending));
        }
        Ok(Some(deadline))
    }

    fn over_limit(&self, pending: usize) -> std::io::Error {
        // Counted with subscribers cut off: INFO reports both as one figure, as Redis.
        metrics::add(&self.state.hub.disconnected, 1);
        tracing::info!(pending, "client disconnected: output buffer over its limit");
        closed("output buffer over its limit")
    }

    /// Writes all of `wbuf`, racing the kill switch, shutdown and the limits.
    async fn flush<S: ClientStream>(
        &mut self,
        stream: &mut S,
        wbuf: &mut BytesMut,
    ) -> std::io::Result<()> {
        while !wbuf.is_empty() {
            let soft_deadline = self.check(wbuf.len())?;
            let n = tokio::select! {
                biased;
                n = stream.write(wbuf) => n?,
                _ = self.kill.cancelled() => return Err(closed("killed")),
                _ = self.state.shutdown.cancelled() => return Err(closed("server shutting down")),
                _ = sleep_until(soft_deadline) => return Err(self.over_limit(wbuf.len())),
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            metrics::add(&self.state.stats.net_output_bytes, n as u64);
            wbuf.advance(n);
        }
        if S::BUFFERS_WRITES {
            // TLS records still in the stream's buffer go out now.
            tokio::select! {
                biased;
                flushed = stream.flush() => flushed?,
                _ = self.kill.cancelled() => return Err(closed("killed")),
                _ = self.state.shutdown.cancelled() => return Err(closed("server shutting down")),
            }
        }
        self.over_soft_since = None;
        if wbuf.capacity() > KEEP_CAPACITY {
            *wbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        Ok(())
    }
}

/// Writes a reply too large to build whole: each page of items is read on
/// a blocking thread and written out before the next is read.
async fn write_paged<S: ClientStream>(
    out: &mut Writer<'_>,
    stream: &mut S,
    proto: Protocol,
    paged: Paged,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    for part in paged.parts {
        let Part::Items(mut source) = part else {
            paged::encode_part(&part, proto, wbuf);
            continue;
        };
        let (back, total) = off_thread(source, |s| s.total()).await?;
        source = back;
        encode_array_header(total, wbuf);
        let mut written = 0;
        while written < total {
            let (back, page) = off_thread(source, |s| s.next_page()).await?;
            source = back;
            if page.is_empty() {
                // The count is on the wire already: the reply cannot be
                // completed, so the connection closes rather than lie.
                tracing::warn!(
                    total,
                    written,
                    "reply items vanished while being written (compaction); closing the connection"
                );
                return Err(closed("reply source ended early"));
            }
            for item in page.into_iter().take(total - written) {
                item.encode(proto, wbuf);
                written += 1;
            }
            if wbuf.len() >= FLUSH_AT {
                out.flush(stream, wbuf).await?;
            }
        }
    }
    Ok(())
}

/// Runs `f` on `source` on a blocking thread; gives the source back.
async fn off_thread<T: Send + 'static>(
    mut source: Box<dyn PageSource>,
    f: fn(&mut dyn PageSource) -> Result<T, String>,
) -> std::io::Result<(Box<dyn PageSource>, T)> {
    let joined = tokio::task::spawn_blocking(move || {
        let result = f(source.as_mut());
        (source, result)
    })
    .await
    .map_err(std::io::Error::other)?;
    match joined {
        (source, Ok(value)) => Ok((source, value)),
        (_, Err(e)) => {
            tracing::warn!(error = %e, "reading a paged reply failed; closing the connection");
            Err(std::io::Error::other(e))
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Completes when the client has closed its end (a blocked command then
/// stops waiting); never, once it has sent more requests.
async fn hung_up(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    if let Ok(1..) = stream.peek(&mut byte).await {
        std::future::pending::<()>().await;
    }
}

/// Waits for the next pub/sub message (forever when not subscribed).
async fn next_message(
    mail: &mut Option<(
        std::sync::Arc<Mailbox>,
        tokio::sync::mpsc::UnboundedReceiver<Message>,
    )>,
) -> Option<Message> {
    match mail {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for the next `MONITOR` line (forever when not monitoring).
async fn next_monitor_line(
    feed: &mut Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
) -> Option<bytes::Bytes> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and every other queued message in one socket write.
async fn deliver<S: ClientStream>(
    out: &mut Writer<'_>,
    stream: &mut S,
    session: &mut Session,
    first: Option<Message>,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    let proto = session.proto;
    let Some((mailbox, rx)) = session.mail.as_mut() else {
        return Ok(());
    };
    let mut next = first;
    let mut size = 0;
    let mut count = 0;
    while let Some(msg) = next {
        size += msg.size();
        count += 1;
        encode_message(&msg, proto, wbuf);
        if wbuf.len() >= FLUSH_AT {
            break;
        }
        next = rx.try_recv().ok();
    }
    let mailbox = mailbox.clone();
    out.flush(stream, wbuf).await?;
    mailbox.delivered(size, count);
    Ok(())
}

fn encode_message(msg: &Message, proto: Protocol, out: &mut BytesMut) {
    let frame = match &msg.pattern {
        Some(p) => Reply::Push(vec![
            Reply::bulk_static("pmessage"),
            Reply::Bulk(p.clone()),
            Reply::Bulk(msg.channel.clone()),
            Reply::Bulk(msg.payload.clone()),
        ]),
        None => Reply::Push(vec![
            Reply::bulk_static("message"),
            Reply::Bulk(msg.channel.clone()),
            Reply::Bulk(msg.payload.clone()),
        ]),
    };
    frame.encode(proto, out);
}
