//! The bounds on connections (src/http/serve.rs, src/http/connections.rs): a request's head
//! must arrive within `--request-head-timeout-ms`, and one client address holds at most
//! `--max-connections-per-address` connections. Without them a client that opened
//! connections and sent half a head on each held them for ever: a helper held 19,985 from
//! one address and `/health` stopped answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{SseReader, assert_error, id_of, new_fingerprint, spawn_app_with};

/// A connection to `server` from the loopback address `source` (127.0.0.x: all of
/// 127.0.0.0/8 is the loopback on Linux), so one test can be several clients.
async fn connect_from(source: [u8; 4], server: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server.parse().unwrap()).await.unwrap()
}

/// Sends `GET path` on `connection` (closing after it) and reads the whole answer: its status
/// and its body as JSON (Null when it is not JSON).
async fn get_on(mut connection: TcpStream, path: &str) -> (u16, String, serde_json::Value) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: boxoffice\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().expect("a status code");
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), body)
}

/// How long until the server closes `connection` (reads until end of stream or a reset),
/// failing after `limit`.
async fn closed_within(connection: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut discarded = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match connection.read(&mut discarded).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept the connection open past {limit:?}"));
    started.elapsed()
}

/// A head that never ends, or one sent a byte at a time (slowloris), is closed once the head
/// timeout has passed since the server began waiting for it; so is a keep-alive connection
/// left idle after an answer. A head that arrives in time is served. Red without hyper's
/// header timeout: each connection stays open past the 5 s the test waits.
#[tokio::test]
async fn a_request_head_not_sent_within_the_head_timeout_closes_its_connection() {
    let app = spawn_app_with(&["--request-head-timeout-ms", "400"]).await;
    let address = app.socket_address().to_owned();

    let mut half = TcpStream::connect(&address).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: boxoffice\r\n")
        .await
        .unwrap();
    let waited = closed_within(&mut half, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}, before its head timeout"
    );

    // A byte every 50 ms keeps the connection busy but never finishes the head: the timeout
    // counts the whole head, not the gap between bytes.
    let mut trickle = TcpStream::connect(&address).await.unwrap();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if trickle.write_all(b"a").await.is_err() {
            break true;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut probe)).await
        {
            break true;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(closed, "a head sent a byte at a time was kept past 5 s");

    // An answered request, then silence: the keep-alive connection goes after the timeout.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: boxoffice\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 4096];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );
    closed_within(&mut idle, Duration::from_secs(5)).await;

    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

/// An open stream is an answer being written, not a wait for a head: it outlives the head
/// timeout many times over and still carries the next change.
#[tokio::test]
async fn a_stream_outlives_the_head_timeout() {
    let app = spawn_app_with(&["--request-head-timeout-ms", "200"]).await;
    let event = app
        .create_event("Watched past the head timeout", 5, None)
        .await;
    let id = id_of(&event);
    let mut stream = SseReader::connect(&app, &format!("/events/{id}/stream")).await;
    let snapshot = stream
        .next(Duration::from_secs(5))
        .await
        .expect("a snapshot");
    assert_eq!(snapshot.remaining(), 5);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = app.purchase(&id, 1, &new_fingerprint()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    stream
        .until(Duration::from_secs(5), |message| message.remaining() == 4)
        .await;
    app.stop().await;
}

/// One address holds at most `--max-connections-per-address` connections: the next is
/// answered 429 `TOO_MANY_CONNECTIONS` with `Retry-After` and closed, its request unread,
/// while another address is served; a closed connection gives its place back. Red without
/// the limit: the fourth connection is served 200.
#[tokio::test]
async fn an_address_past_its_connection_limit_is_refused_and_others_are_served() {
    let app = spawn_app_with(&["--max-connections-per-address", "3"]).await;
    let address = app.socket_address().to_owned();

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 1], &address).await);
    }
    // The server counts a connection when it accepts it; a request on the last one shows all
    // three were accepted before the fourth arrives.
    held[2]
        .write_all(b"GET /health HTTP/1.1\r\nHost: boxoffice\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 4096];
    let read = held[2].read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200 "));

    let (status, head, body) =
        get_on(connect_from([127, 0, 0, 1], &address).await, "/health").await;
    assert_error(
        StatusCode::from_u16(status).unwrap(),
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_CONNECTIONS",
    );
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");

    let (status, _, body) = get_on(connect_from([127, 0, 0, 2], &address).await, "/health").await;
    assert_eq!(status, 200, "another address is served: {body}");

    drop(held.pop());
    let started = Instant::now();
    loop {
        let (status, _, body) =
            get_on(connect_from([127, 0, 0, 1], &address).await, "/health").await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a closed connection's place was not given back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);

    let mut metrics = connect_from([127, 0, 0, 1], &address).await;
    metrics
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: boxoffice\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    metrics.read_to_string(&mut page).await.unwrap();
    // Counted per process: with `cargo test` other tests share it, none of them refused.
    let refused: f64 = page
        .lines()
        .find_map(|line| line.strip_prefix("boxoffice_connections_refused_total "))
        .unwrap_or_else(|| panic!("no refusal counted:\n{page}"))
        .trim()
        .parse()
        .unwrap();
    assert!(refused >= 1.0, "{refused}");
    app.stop().await;
}

/// A trusted proxy carries many clients: its connections are not limited.
#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_connection_limit() {
    let app = spawn_app_with(&[
        "--max-connections-per-address",
        "1",
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .await;
    let address = app.socket_address().to_owned();
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(connect_from([127, 0, 0, 1], &address).await);
    }
    for connection in connections {
        let (status, _, body) = get_on(connection, "/health").await;
        assert_eq!(status, 200, "{body}");
    }
    app.stop().await;
}

/// A stream whose client leaves (closes, or resets) ends at once and gives its connection's
/// place back: a stream reads nothing from its connection, and before, hyper noticed the
/// client gone only at its second failed write, so an address that closed its streams and
/// opened new ones was refused for up to 30 s (a page reloaded often was refused by its own
/// departed streams). Red without `http::peer`'s watch: the new connections are refused
/// past 2 s.
#[tokio::test]
async fn a_stream_whose_client_left_gives_its_place_back_at_once() {
    let app = spawn_app_with(&["--max-connections-per-address", "3"]).await;
    let address = app.socket_address().to_owned();
    let event = app.create_event("Watched, then left", 5, None).await;
    let id = id_of(&event);
    // The watcher's own address: the test's HTTP client keeps a connection from 127.0.0.1.
    const WATCHER: [u8; 4] = [127, 0, 0, 3];
    for reset in [false, true] {
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut stream = connect_from(WATCHER, &address).await;
            stream
                .write_all(
                    format!("GET /events/{id}/stream HTTP/1.1\r\nHost: boxoffice\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut head = [0u8; 4096];
            let read = stream.read(&mut head).await.unwrap();
            assert!(head[..read].starts_with(b"HTTP/1.1 200 "));
            streams.push(stream);
        }
        let (status, _, _) = get_on(connect_from(WATCHER, &address).await, "/health").await;
        assert_eq!(status, 429, "three streams hold the address's three places");
        for stream in streams {
            if reset {
                // Closed with SO_LINGER 0: a reset rather than a FIN.
                stream.set_zero_linger().unwrap();
            } else {
                // All read first: closing with unread bytes would send a reset, not a FIN.
                let mut rest = [0u8; 4096];
                while stream.try_read(&mut rest).is_ok_and(|read| read > 0) {}
            }
            drop(stream);
        }
        let started = Instant::now();
        loop {
            let (status, _, body) = get_on(connect_from(WATCHER, &address).await, "/health").await;
            if status == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the streams' places were not given back (reset: {reset}): {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    app.stop().await;
}
