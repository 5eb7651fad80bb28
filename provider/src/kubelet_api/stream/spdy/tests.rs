use super::*;
use offload_runtime::spdy::{HeaderCodec, read_frame, write_frame};
use std::time::Duration;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Two header blocks of one connection as another zlib (Python's, with the
/// SPDY dictionary and a sync flush per block, as Go's framer writes them).
#[test]
fn inflates_blocks_of_another_zlib_in_one_stream() {
    let mut c = HeaderCodec::new();
    let first = unhex(
        "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
    );
    let second = unhex("c2aa19540e2512d60b000000ffff");
    assert_eq!(
        c.decompress(&first).expect("first"),
        h(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0")
        ])
    );
    assert_eq!(
        c.decompress(&second).expect("second"),
        h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
    );
}

#[test]
fn compressed_blocks_round_trip_across_frames() {
    let (mut tx, mut rx) = (HeaderCodec::new(), HeaderCodec::new());
    for i in 0..5 {
        let headers = h(&[("streamtype", "stdout"), ("n", &i.to_string())]);
        let block = tx.compress(&headers).expect("compress");
        assert_eq!(rx.decompress(&block).expect("decompress"), headers);
    }
    assert!(rx.decompress(&[1, 2, 3, 4]).is_err(), "garbage is an error");
}

#[tokio::test]
async fn frames_round_trip() {
    let frames = vec![
        Frame::SynStream {
            id: 1,
            fin: false,
            headers: h(&[("streamtype", "error")]),
        },
        Frame::SynReply {
            id: 1,
            fin: false,
            headers: vec![],
        },
        Frame::Data {
            id: 3,
            fin: true,
            data: Bytes::from_static(b"hello"),
        },
        Frame::RstStream { id: 5, status: 5 },
        Frame::Ping(7),
        Frame::GoAway { last: 0, status: 0 },
    ];
    let (mut w, mut r) = (HeaderCodec::new(), HeaderCodec::new());
    let mut buf = Vec::new();
    for f in &frames {
        write_frame(&mut buf, &mut w, f).await.expect("write");
    }
    let mut rd = &buf[..];
    for f in &frames {
        assert_eq!(
            read_frame(&mut rd, &mut r).await.expect("read").as_ref(),
            Some(f)
        );
    }
    assert!(read_frame(&mut rd, &mut r).await.expect("eof").is_none());
}

/// A client on the other end of a duplex pipe.
struct Client {
    io: tokio::io::DuplexStream,
    w: HeaderCodec,
    r: HeaderCodec,
}

impl Client {
    async fn send(&mut self, f: Frame) {
        write_frame(&mut self.io, &mut self.w, &f)
            .await
            .expect("client write");
    }
    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(
            Duration::from_secs(5),
            read_frame(&mut self.io, &mut self.r),
        )
        .await
        .expect("frame in time")
        .expect("client read")
    }
}

#[tokio::test]
async fn session_replies_echoes_pings_and_carries_data_both_ways() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut s = Session::start(a);
    let mut c = Client {
        io: b,
        w: HeaderCodec::new(),
        r: HeaderCodec::new(),
    };
    c.send(Frame::SynStream {
        id: 1,
        fin: false,
        headers: h(&[("streamtype", "stdin")]),
    })
    .await;
    assert_eq!(
        c.recv().await,
        Some(Frame::SynReply {
            id: 1,
            fin: false,
            headers: vec![]
        })
    );
    let mut inc = s.incoming.recv().await.expect("stream");
    assert_eq!(inc.header("streamtype"), Some("stdin"));
    c.send(Frame::Data {
        id: 1,
        fin: true,
        data: Bytes::from_static(b"abc"),
    })
    .await;
    assert_eq!(inc.data.recv().await.as_deref(), Some(&b"abc"[..]));
    assert_eq!(inc.data.recv().await, None, "FIN ends the stream");
    assert!(!s.closed().is_cancelled(), "a FIN is not the end");

    c.send(Frame::Ping(1)).await;
    assert_eq!(c.recv().await, Some(Frame::Ping(1)));

    let big = Bytes::from(vec![7u8; MAX_DATA + 10]);
    s.out.data(1, big).await.expect("send");
    s.out.fin(1).await.expect("fin");
    let mut got = 0;
    loop {
        match c.recv().await {
            Some(Frame::Data {
                fin: false, data, ..
            }) => got += data.len(),
            Some(Frame::Data { fin: true, .. }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, MAX_DATA + 10);
    assert!(!inc.reset.is_cancelled(), "a FIN is no reset");
    c.send(Frame::SynStream {
        id: 3,
        fin: false,
        headers: h(&[("streamtype", "data")]),
    })
    .await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { id: 3, .. })
    ));
    let data = s.incoming.recv().await.expect("stream 3");
    c.send(Frame::RstStream {
        id: 3,
        status: CANCEL,
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), data.reset.cancelled())
        .await
        .expect("the client's reset is seen");
    assert!(!s.closed().is_cancelled(), "a reset ends one stream only");
    let closed = s.closed();
    drop(c);
    tokio::time::timeout(Duration::from_secs(5), closed.cancelled())
        .await
        .expect("the client's hang-up is seen");
}
