//! `flagstaff export` and `flagstaff import`: backup and restore against a
//! running server, over RESP. Export writes `FLAG.DUMP`'s document; import
//! checks every definition in the file first, then sends it as one
//! `FLAG.IMPORT`, which the server applies all or nothing.
//!
//! The file format is the `FLAG.DUMP` document:
//! `{"revision": n, "flags": {key: FLAG.GET document, ...}, "segments": {key: SEGMENT.GET document, ...}}`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

/// A backup or restore failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Could not reach or talk to the server.
    #[error("{addr}: {why}")]
    Connection {
        /// Server address.
        addr: String,
        /// Why.
        why: String,
    },
    /// The server answered with an error.
    #[error("server refused: {0}")]
    Refused(String),
    /// The backup file is unreadable or invalid.
    #[error("{path}: {why}")]
    File {
        /// File path.
        path: String,
        /// Why.
        why: String,
    },
}

/// A minimal blocking RESP2 client for the backup tools.
struct Client {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: &str, password: Option<&str>) -> Result<Client, BackupError> {
        let conn_err = |why: String| BackupError::Connection {
            addr: addr.to_string(),
            why,
        };
        let stream = TcpStream::connect(addr).map_err(|e| conn_err(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| conn_err(e.to_string()))?;
        let mut c = Client {
            addr: addr.to_string(),
            stream,
            buf: Vec::new(),
        };
        if let Some(p) = password {
            c.call(&["AUTH", p])?;
        }
        Ok(c)
    }

    fn call(&mut self, args: &[&str]) -> Result<OwnedFrame, BackupError> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        let conn_err = |why: String| BackupError::Connection {
            addr: self.addr.clone(),
            why,
        };
        self.stream
            .write_all(&req)
            .map_err(|e| conn_err(e.to_string()))?;
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    if let OwnedFrame::Error(e) = &frame {
                        return Err(BackupError::Refused(e.clone()));
                    }
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(conn_err(format!("bad reply: {e}"))),
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| conn_err(e.to_string()))?;
            if n == 0 {
                return Err(conn_err("connection closed".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Fetches the dump document (optionally only keys matching `pattern`).
pub fn export(
    addr: &str,
    password: Option<&str>,
    pattern: Option<&str>,
) -> Result<String, BackupError> {
    let mut c = Client::connect(addr, password)?;
    let frame = match pattern {
        Some(p) => c.call(&["FLAG.DUMP", "MATCH", p])?,
        None => c.call(&["FLAG.DUMP"])?,
    };
    match frame {
        OwnedFrame::BulkString(b) => String::from_utf8(b).map_err(|e| BackupError::Connection {
            addr: addr.to_string(),
            why: format!("dump is not UTF-8: {e}"),
        }),
        other => Err(BackupError::Connection {
            addr: addr.to_string(),
            why: format!("unexpected reply {other:?}"),
        }),
    }
}

/// Validates the backup in `path`, then applies it; returns the keys written.
pub fn import(addr: &str, password: Option<&str>, path: &str) -> Result<i64, BackupError> {
    let file_err = |why: String| BackupError::File {
        path: path.to_string(),
        why,
    };
    let document = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    crate::store::parse_dump(&document).map_err(|e| file_err(e.to_string()))?;
    let mut c = Client::connect(addr, password)?;
    match c.call(&["FLAG.IMPORT", &document, "REASON", "flagstaff import"])? {
        OwnedFrame::Integer(n) => Ok(n),
        other => Err(BackupError::Connection {
            addr: addr.to_string(),
            why: format!("unexpected reply {other:?}"),
        }),
    }
}
