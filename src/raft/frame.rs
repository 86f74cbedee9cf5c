//! Messages on the cluster bus. Each message is a RESP array of bulk strings,
//! read by the client-request decoder and written by the one reply encoder,
//! so the bus adds no codec of its own and binary payloads need no escaping.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::protocol::{DecoderLimits, Protocol, Reply, RequestDecoder};

/// Most parts (bulk strings) in one bus message. Every sender that batches
/// (the PUBLISH broadcaster) sizes its batches from this, and the receiving
/// decoder enforces it, so the two cannot disagree.
pub const MAX_PARTS: usize = 1025;

/// Most bytes in one part of a bus message: one raft entry of the largest
/// `--max-entry-bytes` allowed, with room for the request around it, so an
/// entry any member accepted can always be replicated.
pub const MAX_PART_BYTES: usize = crate::config::MAX_ENTRY_BYTES_CEILING as usize + 1024 * 1024;

/// Most bytes of one whole bus message.
pub const MAX_MESSAGE_BYTES: usize = MAX_PART_BYTES + 16 * 1024 * 1024;

/// Limits for authenticated peers: snapshot chunks and entry batches are large.
const PEER_LIMITS: DecoderLimits = DecoderLimits {
    max_bulk_len: MAX_PART_BYTES,
    max_multibulk_len: MAX_PARTS,
    query_buffer_limit: MAX_MESSAGE_BYTES,
};

/// Bytes `parts` occupy on the wire as one bus message (RESP array of bulks).
pub fn message_bytes<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> usize {
    let mut n = 16;
    for p in parts {
        n += p.len() + 16;
    }
    n
}

/// A bus connection's stream: plain TCP, or TLS (`--tls-cluster`) over it.
pub type BusStream = Either<TcpStream, tokio_rustls::TlsStream<TcpStream>>;

/// The socket under a bus stream.
pub fn tcp_of(stream: &BusStream) -> &TcpStream {
    match stream {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    }
}

/// One bus connection, either direction.
#[derive(Debug)]
pub struct FrameConn {
    stream: BusStream,
    read: BytesMut,
    out: BytesMut,
    decoder: RequestDecoder,
    /// Whether the peer proved the secret (before that, the small pre-auth limits apply).
    trusted: bool,
}

impl FrameConn {
    /// Wraps a connected stream.
    pub fn new(stream: BusStream) -> Self {
        let _ = tcp_of(&stream).set_nodelay(true);
        FrameConn {
            stream,
            read: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(16 * 1024),
            decoder: RequestDecoder::new(),
            trusted: false,
        }
    }

    /// Lifts the pre-authentication limits once the peer proved the secret.
    pub fn trust(&mut self) {
        self.trusted = true;
    }

    /// Whether the peer has closed an idle connection (so a request sent on it
    /// would be lost): checked without waiting before a connection is reused.
    pub fn peer_closed(&self) -> bool {
        let tcp = tcp_of(&self.stream);
        if let Either::Left(tcp) = &self.stream {
            let mut probe = [0u8; 1];
            return !matches!(
                tcp.try_read(&mut probe),
                Err(ref e) if e.kind() == io::ErrorKind::WouldBlock
            );
        }
        // Under TLS a byte read from the socket would corrupt the record
        // stream: peek instead. Anything there on an idle connection (a
        // close_notify, or end of stream) means it is no longer usable.
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        !matches!(tcp.poll_peek(&mut cx, &mut buf), std::task::Poll::Pending)
    }

    /// Writes one message.
    pub async fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let frame = Reply::Array(parts.iter().map(Reply::bulk).collect());
        self.out.clear();
        frame.encode(Protocol::Resp2, &mut self.out);
        self.stream.write_all(&self.out).await?;
        // TLS holds the records until flushed; plain TCP has nothing to flush.
        self.stream.flush().await
    }

    /// Reads one message; end of stream or a malformed message is an error.
    pub async fn recv(&mut self) -> io::Result<Vec<Bytes>> {
        loop {
            match self
                .decoder
                .decode(&mut self.read, &PEER_LIMITS, self.trusted)
            {
                Ok(Some(parts)) => return Ok(parts),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.0)),
            }
            self.read.reserve(16 * 1024);
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection",
                ));
            }
        }
    }
}
