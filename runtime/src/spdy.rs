//! Shared by the provider (the kubelet API's SPDY server) and the plugin
//! (its SPDY client to a remote apiserver older than 1.30).
//!
//! SPDY/3.1 frames on the wire (draft 3.1, sections 2.2 and 2.6) and the
//! header block compression: one zlib stream per direction for the whole
//! connection, primed with the protocol's dictionary, each block ended by a
//! sync flush.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The zlib dictionary of SPDY/3 header blocks (draft 3, section 2.6.10.1).
const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");
const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// Largest header block we inflate: Kubernetes sends a handful of headers.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
const STREAM_ID: u32 = 0x7fff_ffff;

/// Header names (lower case) and values; a value holding several values
/// keeps their NUL separators.
pub type Headers = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    /// SETTINGS, WINDOW_UPDATE, HEADERS and unknown types: read, not used.
    Ignored(u16),
    /// Not a frame: tells the writer to flush and close.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("SPDY frame too short: {0}")]
    Short(&'static str),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// The two zlib streams of a connection's header blocks.
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Fails only on a deflater that already started: this one is new.
        let _ = deflate.set_dictionary(DICTIONARY);
        HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut block = Vec::new();
        put_len(&mut block, headers.len())?;
        for (k, v) in headers {
            put_len(&mut block, k.len())?;
            block.extend_from_slice(k.as_bytes());
            put_len(&mut block, v.len())?;
            block.extend_from_slice(v.as_bytes());
        }
        let start = self.deflate.total_in();
        let mut out = Vec::with_capacity(block.len() + 64);
        loop {
            let done = (self.deflate.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.deflate
                .compress_vec(&block[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Headers(e.to_string()))?;
            let done = (self.deflate.total_in() - start) as usize;
            if done == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    pub fn decompress(&mut self, input: &[u8]) -> Result<Headers, FrameError> {
        let err = |m: String| FrameError::Headers(m);
        let start = self.inflate.total_in();
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            let before = (self.inflate.total_in(), self.inflate.total_out());
            let done = (self.inflate.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(err("larger than 256 KiB".into()));
                }
                out.reserve(out.capacity());
            }
            match self
                .inflate
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| err(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(err(e.to_string())),
            }
            let done = (self.inflate.total_in() - start) as usize;
            if done == input.len() && out.len() < out.capacity() {
                break;
            }
            if before == (self.inflate.total_in(), self.inflate.total_out()) {
                return Err(err("truncated".into()));
            }
        }
        parse_block(&out)
    }
}

fn put_len(b: &mut Vec<u8>, n: usize) -> Result<(), FrameError> {
    let n = u32::try_from(n).map_err(|_| FrameError::Headers("too long".into()))?;
    b.put_u32(n);
    Ok(())
}

fn parse_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        if b.remaining() < 4 {
            return Err(FrameError::Short("header length"));
        }
        let n = b.get_u32() as usize;
        if b.remaining() < n {
            return Err(FrameError::Short("header"));
        }
        let (v, rest) = b.split_at(n);
        *b = rest;
        Ok(v)
    }
    if b.remaining() < 4 {
        return Err(FrameError::Short("header count"));
    }
    let n = b.get_u32();
    let mut headers = Vec::new();
    for _ in 0..n {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        headers.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(headers)
}

/// The next frame, `None` at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    codec: &mut HeaderCodec,
) -> Result<Option<Frame>, FrameError> {
    let mut head = [0u8; 8];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await?;
    let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if word & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            id: word & STREAM_ID,
            fin: flags & FLAG_FIN != 0,
            data: Bytes::from(body),
        }));
    }
    let version = ((word >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    control(word as u16, flags, &body, codec).map(Some)
}

fn control(
    kind: u16,
    flags: u8,
    body: &[u8],
    codec: &mut HeaderCodec,
) -> Result<Frame, FrameError> {
    let mut b = body;
    let need = |b: &[u8], n: usize, what| {
        if b.len() < n {
            Err(FrameError::Short(what))
        } else {
            Ok(())
        }
    };
    let fin = flags & FLAG_FIN != 0;
    Ok(match kind {
        SYN_STREAM => {
            need(b, 10, "SYN_STREAM")?;
            let id = b.get_u32() & STREAM_ID;
            b.advance(6);
            let headers = codec.decompress(b)?;
            Frame::SynStream { id, fin, headers }
        }
        SYN_REPLY | HEADERS => {
            need(b, 4, "SYN_REPLY")?;
            let id = b.get_u32() & STREAM_ID;
            // Inflated even when unused: the zlib stream must stay in step.
            let headers = codec.decompress(b)?;
            if kind == HEADERS {
                Frame::Ignored(kind)
            } else {
                Frame::SynReply { id, fin, headers }
            }
        }
        RST_STREAM => {
            need(b, 8, "RST_STREAM")?;
            Frame::RstStream {
                id: b.get_u32() & STREAM_ID,
                status: b.get_u32(),
            }
        }
        PING => {
            need(b, 4, "PING")?;
            Frame::Ping(b.get_u32())
        }
        GOAWAY => {
            need(b, 4, "GOAWAY")?;
            let last = b.get_u32() & STREAM_ID;
            let status = if b.len() >= 4 { b.get_u32() } else { 0 };
            Frame::GoAway { last, status }
        }
        other => Frame::Ignored(other),
    })
}

fn control_head(b: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    b.put_u16(0x8000 | VERSION);
    b.put_u16(kind);
    b.put_u8(flags);
    b.put_uint(len as u64, 3);
}

/// Encodes `f` (headers compressed with `codec`) into `w`.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    codec: &mut HeaderCodec,
    f: &Frame,
) -> Result<(), FrameError> {
    let mut b = BytesMut::with_capacity(64);
    let flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match f {
        Frame::Data { id, fin, data } => {
            b.put_u32(id & STREAM_ID);
            b.put_u8(flag(*fin));
            b.put_uint(data.len() as u64, 3);
            w.write_all(&b).await?;
            w.write_all(data).await?;
            return Ok(());
        }
        Frame::SynStream { id, fin, headers } => {
            let block = codec.compress(headers)?;
            control_head(&mut b, SYN_STREAM, flag(*fin), 10 + block.len());
            b.put_u32(id & STREAM_ID);
            b.put_u32(0);
            b.put_u16(0);
            b.extend_from_slice(&block);
        }
        Frame::SynReply { id, fin, headers } => {
            let block = codec.compress(headers)?;
            control_head(&mut b, SYN_REPLY, flag(*fin), 4 + block.len());
            b.put_u32(id & STREAM_ID);
            b.extend_from_slice(&block);
        }
        Frame::RstStream { id, status } => {
            control_head(&mut b, RST_STREAM, 0, 8);
            b.put_u32(id & STREAM_ID);
            b.put_u32(*status);
        }
        Frame::Ping(id) => {
            control_head(&mut b, PING, 0, 4);
            b.put_u32(*id);
        }
        Frame::GoAway { last, status } => {
            control_head(&mut b, GOAWAY, 0, 8);
            b.put_u32(last & STREAM_ID);
            b.put_u32(*status);
        }
        Frame::Ignored(_) | Frame::Shutdown => return Ok(()),
    }
    w.write_all(&b).await?;
    Ok(())
}
