//! One client connection: read what arrived, run every complete request in
//! order, write all their replies with one socket write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::command::{self, Flow, ServerState, Session};
use crate::metrics;
use crate::protocol::{Protocol, Reply, RequestDecoder};
use crate::pubsub::{Mailbox, Message};

const READ_CHUNK: usize = 16 * 1024;
const MAX_READ_CHUNK: usize = 1024 * 1024;
/// Replies beyond this are written before the batch ends, bounding memory.
const FLUSH_AT: usize = 64 * 1024;

const DENIED: &[u8] = b"-DENIED flagstaff is running in protected mode because no password is set. In this mode connections are only accepted from the loopback interface. Set a password with --requirepass, or bind to 127.0.0.1 only.\r\n";

/// Serves one connection until it closes, is killed, or the server shuts down.
pub async fn serve(state: Arc<ServerState>, mut stream: TcpStream, peer: SocketAddr) {
    metrics::add(&state.stats.connections_received, 1);
    if state.default_is_nopass() && !peer.ip().is_loopback() {
        metrics::add(&state.stats.rejected_connections, 1);
        let _ = stream.write_all(DENIED).await;
        return;
    }
    let laddr = stream.local_addr().unwrap_or(peer);
    let fd = i64::from(std::os::fd::AsRawFd::as_raw_fd(&stream));
    let Some(client) = state
        .clients
        .register(peer, laddr, fd, state.settings.maxclients)
    else {
        metrics::add(&state.stats.rejected_connections, 1);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let id = client.id;
    tracing::debug!(id, %peer, "client connected");
    let mut session = Session::new(client.clone(), !state.requires_auth());
    if let Err(e) = run(&state, &mut session, &mut stream).await {
        tracing::debug!(id, error = %e, "connection error");
    }
    state.hub.forget(id, &session.channels, &session.patterns);
    state.monitors.remove(id);
    state.clients.unregister(id);
    tracing::debug!(id, "client disconnected");
}

async fn run(
    state: &ServerState,
    session: &mut Session,
    stream: &mut TcpStream,
) -> std::io::Result<()> {
    let limits = state.settings.decoder_limits();
    let idle = (state.settings.timeout > 0).then(|| Duration::from_secs(state.settings.timeout));
    let mut decoder = RequestDecoder::new();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
    let client = session.client.clone();
    client.note_output(0, wbuf.capacity());
    loop {
        let want = decoder.wanted(rbuf.len()).clamp(READ_CHUNK, MAX_READ_CHUNK);
        rbuf.reserve(want);
        let read = async {
            match idle {
                Some(d) => tokio::time::timeout(d, stream.read_buf(&mut rbuf))
                    .await
                    .unwrap_or(Ok(0)),
                None => stream.read_buf(&mut rbuf).await,
            }
        };
        let n = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ok(()),
            _ = client.kill.cancelled() => return Ok(()),
            msg = next_message(&mut session.mail) => {
                deliver(state, stream, session, msg, &mut wbuf).await?;
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
                flush(state, stream, &mut wbuf).await?;
                continue;
            }
            n = read => n?,
        };
        if n == 0 {
            return Ok(());
        }
        metrics::add(&state.stats.net_input_bytes, n as u64);
        let mut close = false;
        loop {
            // The query buffer as Redis shows it: the request about to run included.
            client.note_query(rbuf.len() + decoder.taken(), rbuf.capacity());
            match decoder.decode(&mut rbuf, &limits, session.authenticated) {
                Ok(Some(args)) => {
                    let flow = command::execute(session, state, &args, &mut wbuf).await;
                    decoder.recycle(args);
                    if flow == Flow::Close {
                        close = true;
                        break;
                    }
                    if wbuf.len() >= FLUSH_AT {
                        client.note_output(wbuf.len(), wbuf.capacity());
                        flush(state, stream, &mut wbuf).await?;
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
        session.publish();
        flush(state, stream, &mut wbuf).await?;
        client.note_output(0, wbuf.capacity());
        if close {
            return Ok(());
        }
    }
}

async fn flush(
    state: &ServerState,
    stream: &mut TcpStream,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    if wbuf.is_empty() {
        return Ok(());
    }
    stream.write_all(wbuf).await?;
    metrics::add(&state.stats.net_output_bytes, wbuf.len() as u64);
    wbuf.clear();
    Ok(())
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
async fn deliver(
    state: &ServerState,
    stream: &mut TcpStream,
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
    flush(state, stream, wbuf).await?;
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
