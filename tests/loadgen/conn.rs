//! A minimal keep-alive HTTP/1.1 client, as `wrk` has: write the prebuilt
//! request, read the status line and headers, skip `Content-Length` bytes of
//! body. No chunked bodies (both servers answer with a length).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection to one server.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status and `Content-Length` of a complete header block.
fn parse_head(head: &[u8]) -> io::Result<(u16, usize)> {
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .filter(|_| head.starts_with(b"HTTP/1."))
        .ok_or_else(|| bad("no status line"))?;
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            length = std::str::from_utf8(&line[15..])
                .ok()
                .and_then(|v| v.trim().parse().ok());
        }
    }
    Ok((status, length.ok_or_else(|| bad("no content-length"))?))
}

impl Conn {
    /// Connects to `addr` (`127.0.0.1:PORT`) with Nagle off.
    pub async fn connect(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` and reads the answer; returns its status.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut scanned: usize = 0;
        let (status, head_end, length) = loop {
            let got = self.read_more().await?;
            // Look for the blank line from just before the new bytes.
            let from = scanned.saturating_sub(3);
            if let Some(at) = find(&self.buf[from..], b"\r\n\r\n") {
                let head_end = from + at + 4;
                let (status, length) = parse_head(&self.buf[..head_end])?;
                break (status, head_end, length);
            }
            scanned += got;
            if self.buf.len() > 64 * 1024 {
                return Err(bad("header block too large"));
            }
        };
        while self.buf.len() < head_end + length {
            self.read_more().await?;
        }
        Ok(status)
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        let len = self.buf.len();
        self.buf.resize(len + 4096, 0);
        let got = self.stream.read(&mut self.buf[len..]).await;
        let got = match got {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            other => other,
        };
        self.buf.truncate(len + *got.as_ref().unwrap_or(&0));
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 16\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (200, 16));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"garbage").is_err());
    }
}
