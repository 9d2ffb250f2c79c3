//! The byte pump of one MQTT connection: the session core writes packets into [`Conn::out`];
//! [`Conn::turn`] writes them to the stream (as many as fit in one write call, then a flush,
//! which TLS needs) and reads whatever the broker sent into the input buffer. Nothing here
//! knows MQTT.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::transport::Io;

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What one [`Conn::turn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Bytes arrived in the input buffer.
    Read,
    /// The output buffer was written out (there is room to encode more).
    Wrote,
    /// The broker closed the connection.
    Eof,
}

/// One connection's stream and its two buffers.
pub(crate) struct Conn {
    stream: Box<dyn Io>,
    input: BytesMut,
    out: BytesMut,
    /// Written but not yet flushed (TLS keeps records until flushed).
    unflushed: bool,
    scratch: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: Box<dyn Io>) -> Self {
        Conn {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(64 * 1024),
            unflushed: false,
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Where packets to send go.
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The input (bytes received, not yet decoded) and the output buffer.
    pub(crate) fn buffers(&mut self) -> (&mut BytesMut, &mut BytesMut) {
        (&mut self.input, &mut self.out)
    }

    /// Bytes waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    /// Writes what it can of the output buffer (flushing once it is empty) and reads what
    /// the broker sent; resolves when bytes arrived, the broker closed, or the output buffer
    /// was emptied by this call.
    pub(crate) async fn turn(&mut self) -> io::Result<Turn> {
        poll_fn(|cx| {
            let mut wrote = false;
            while !self.out.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        self.unflushed = true;
                        wrote = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if self.out.is_empty() && self.unflushed {
                match Pin::new(&mut self.stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let mut buf = ReadBuf::new(self.scratch.as_mut_slice());
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Poll::Ready(Ok(Turn::Eof));
                }
                Poll::Ready(Ok(())) => {
                    self.input.extend_from_slice(buf.filled());
                    return Poll::Ready(Ok(Turn::Read));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            if wrote && self.out.is_empty() {
                Poll::Ready(Ok(Turn::Wrote))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Writes out the rest of the output buffer and shuts the stream down (TLS: close_notify),
    /// within `within`.
    pub(crate) async fn finish(&mut self, within: Duration) -> io::Result<()> {
        let out = &mut self.out;
        let stream = &mut self.stream;
        let done = tokio::time::timeout(within, async {
            stream.write_all_buf(out).await?;
            stream.flush().await?;
            stream.shutdown().await
        })
        .await;
        done.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn writes_everything_and_reads_what_arrives() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut conn = Conn::new(Box::new(ours));
        conn.out().extend_from_slice(&[7; 200]);
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 200];
            theirs.read_exact(&mut got).await.unwrap();
            theirs.write_all(b"ack").await.unwrap();
            theirs.shutdown().await.unwrap();
            got
        });
        let mut turns = Vec::new();
        loop {
            let turn = conn.turn().await.unwrap();
            turns.push(turn);
            if turn == Turn::Eof {
                break;
            }
        }
        assert_eq!(reader.await.unwrap(), [7; 200]);
        assert_eq!(&conn.input[..], b"ack");
        assert!(turns.contains(&Turn::Wrote));
        assert_eq!(conn.pending(), 0);
    }
}
