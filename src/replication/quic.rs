//! The replication transport: QUIC with mutual TLS between the regions of one cluster. The only
//! quinn user.
//!
//! # What it guarantees
//! - **Only the cluster talks.** The cluster CA ([`super::certs`]) is the only trust root, in
//!   both directions: a server accepts only clients whose certificate the CA signed, a client
//!   only servers whose certificate the CA signed *for the region it meant to reach*
//!   (`<region>.geoscim`). Anyone else fails the TLS handshake; refusals are logged with
//!   `tracing::warn!`, so an SRE can see who knocked.
//! - **The peer's region comes from its verified certificate**, never from what it says later
//!   (a `Hello` naming another region is the protocol's business to refuse).
//! - **One long-lived bidirectional stream per connection**, carrying the length-prefixed
//!   frames of [`super::wire`] in order. A frame is bounded by [`MAX_FRAME`]; a malformed one
//!   closes the connection with [`CLOSE_PROTOCOL_ERROR`] and an error, never a panic.
//! - **A dead peer is noticed**: keep-alives every [`KEEP_ALIVE`], and a connection without any
//!   packet for [`IDLE_TIMEOUT`] is closed (reads and writes then fail).
//!
//! # Connection set-up
//! TLS 1.3 with ALPN [`ALPN`]. The connecting side opens the stream and writes [`PREAMBLE`]; the
//! accepting side answers with the same bytes. The preamble makes the stream visible to the
//! acceptor at once (QUIC announces a stream only with its first bytes), and its answer tells the
//! connector that the acceptor verified its certificate: [`Transport::connect`] returns only
//! once the peer has accepted it. Both sides then send frames freely; replication starts with
//! `Hello` both ways.
//!
//! The transport knows nothing of the protocol: wiring a [`super::Replicator`] to it (a task
//! per connection feeding `recv()` into the replicator and its output into `send()`) is
//! `server`'s job.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::VarInt;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, Mutex};

use super::certs::{self, Identity};
use super::wire::{self, Message, WireError, MAX_FRAME};

/// The ALPN protocol id of replication, version 1 of this transport's framing.
pub const ALPN: &[u8] = b"geoscim-repl/1";
/// Written by each side at the start of the stream (see the module docs).
pub const PREAMBLE: &[u8; 4] = b"GSR1";
/// How often an idle connection sends a keep-alive, so a quiet link stays open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A connection that hears nothing for this long is dead (three missed keep-alives).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a connection set-up (TLS handshake and preamble exchange) may take: a few
/// inter-region round trips; short, because a dialer waiting on a dead peer delays catch-up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Application close code: a normal close.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the framing (malformed frame or preamble).
pub const CLOSE_PROTOCOL_ERROR: u32 = 1;
/// Application close code: the peer's verified certificate names no region.
pub const CLOSE_BAD_IDENTITY: u32 = 2;
/// Connections accepted (or refused) but not yet taken by [`Transport::accept`]; beyond this the
/// acceptor waits, which slows new handshakes rather than queueing without bound.
const ACCEPT_QUEUE: usize = 16;

/// Why the transport could not start, connect, accept, send or receive.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The region's certificate, key or the CA certificate cannot be used for TLS.
    #[error("unusable certificate or key: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind the replication endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// quinn could not take the bound socket (set its options, register it with the runtime).
    #[error("cannot start the replication endpoint: {0}")]
    Endpoint(std::io::Error),
    /// Not a valid region name to connect to.
    #[error("invalid region name {0:?}")]
    InvalidRegion(String),
    /// quinn refused to start a connection (e.g. the endpoint is closed).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or closed: refused handshake (foreign certificate, wrong region),
    /// timeout, or the peer closed it.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading the stream failed (the connection failed, or the peer reset the stream).
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing the stream failed (the connection failed, or the peer stopped the stream).
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was closed by this side already.
    #[error("stream already closed")]
    StreamClosed,
    /// The peer sent bytes that are not a frame (the connection is closed).
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The peer did not start the stream with [`PREAMBLE`] (the connection is closed).
    #[error("the peer did not open the stream with the replication preamble")]
    BadPreamble,
    /// The peer's certificate (verified by TLS) does not name exactly one region.
    #[error("the peer certificate names no single region: {0}")]
    PeerIdentity(String),
    /// The connection set-up took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("connection set-up timed out")]
    Timeout,
}

/// A region's replication endpoint: accepts peers and connects to them, on one UDP socket.
///
/// Needs a tokio runtime (it spawns the task that completes incoming handshakes). Dropping it
/// stops accepting; established [`PeerConnection`]s live on until dropped or closed.
pub struct Transport {
    /// The quinn endpoint: server and client at once, with the cluster CA as the only root.
    endpoint: quinn::Endpoint,
    /// This region's name (from its identity), for logs.
    region: String,
    /// Connections that completed set-up (or failed it), from the accept task.
    accepted: Mutex<mpsc::Receiver<Result<PeerConnection, TransportError>>>,
    /// The accept task, stopped when the transport is dropped.
    accept_task: tokio::task::JoinHandle<()>,
    /// Connection set-ups that failed, either way: see [`Transport::failed_connections`].
    failed: Arc<AtomicU64>,
}

impl Transport {
    /// Bind a UDP socket on `addr` (port 0 picks one) and serve on it: [`Transport::new`].
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        ca_pem: &str,
    ) -> Result<Transport, TransportError> {
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Transport::new(socket, identity, ca_pem)
    }

    /// Serve replication on the bound UDP `socket` with this region's `identity`, trusting
    /// only the CA in `ca_pem`. The caller binds, so it knows the address (port 0 included)
    /// before anything starts.
    pub fn new(
        socket: std::net::UdpSocket,
        identity: &Identity,
        ca_pem: &str,
    ) -> Result<Transport, TransportError> {
        let (server_config, client_config) = tls_configs(identity, ca_pem)?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(TransportError::Endpoint)?;
        endpoint.set_default_client_config(client_config);
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            identity.region.clone(),
            tx,
            failed.clone(),
        ));
        Ok(Transport {
            endpoint,
            region: identity.region.clone(),
            accepted: Mutex::new(rx),
            accept_task,
            failed,
        })
    }

    /// The address the endpoint is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// This region's name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// How many connection set-ups failed since the endpoint started, dialled or accepted:
    /// refused handshakes (a certificate of another CA, or naming the wrong region), peers that
    /// did not answer in time, streams without the preamble. A count that keeps rising while a
    /// peer stays disconnected points at certificates or the network, not at the data.
    pub fn failed_connections(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Connect to the region `expected_region` at `addr`. Fails (and logs) unless the server
    /// proves, with a certificate of the cluster CA, that it is that region, and accepts this
    /// region's certificate in turn.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected_region: &str,
    ) -> Result<PeerConnection, TransportError> {
        if !crate::ids::is_valid_name(expected_region) {
            return Err(TransportError::InvalidRegion(expected_region.to_string()));
        }
        let set_up = async {
            let connecting = self
                .endpoint
                .connect(addr, &certs::server_name(expected_region))?;
            let conn = connecting.await?;
            let (mut send, recv) = conn.open_bi().await?;
            send.write_all(PREAMBLE).await?;
            let mut receiver = PeerReceiver {
                conn: conn.clone(),
                stream: recv,
            };
            receiver.expect_preamble().await?;
            Ok(PeerConnection {
                region: expected_region.to_string(),
                sender: PeerSender {
                    conn: conn.clone(),
                    stream: send,
                },
                receiver,
                conn,
            })
        };
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, set_up)
            .await
            .unwrap_or(Err(TransportError::Timeout));
        if let Err(e) = &result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                region = %self.region, peer = %addr, expected = expected_region, error = %e,
                "replication connection refused or failed"
            );
        }
        result
    }

    /// The next incoming connection: `Ok` with the peer's verified region, or `Err` for one
    /// peer that failed set-up (already logged; keep accepting). `None` once the endpoint is
    /// closed.
    pub async fn accept(&self) -> Option<Result<PeerConnection, TransportError>> {
        self.accepted.lock().await.recv().await
    }

    /// Close the endpoint and every connection on it, now (peers see [`CLOSE_NORMAL`]).
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(CLOSE_NORMAL), b"shutting down");
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Takes incoming connections off the endpoint and completes each set-up in its own task, so a
/// slow or hostile peer cannot hold up the others.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    region: String,
    tx: mpsc::Sender<Result<PeerConnection, TransportError>>,
    failed: Arc<AtomicU64>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let tx = tx.clone();
        let region = region.clone();
        let failed = failed.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, set_up_incoming(incoming))
                .await
                .unwrap_or(Err(TransportError::Timeout));
            match &result {
                Ok(peer) => tracing::debug!(
                    region = %region, peer = %remote, peer_region = peer.region(),
                    "replication peer connected"
                ),
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        region = %region, peer = %remote, error = %e,
                        "replication peer refused or failed"
                    );
                }
            }
            // A closed channel means the transport is gone: the connection is dropped.
            let _ = tx.send(result).await;
        });
    }
}

async fn set_up_incoming(incoming: quinn::Incoming) -> Result<PeerConnection, TransportError> {
    // The handshake fails here for a client without a certificate of the cluster CA.
    let conn = incoming.await?;
    let region = match peer_region(&conn) {
        Ok(region) => region,
        Err(e) => {
            conn.close(
                VarInt::from_u32(CLOSE_BAD_IDENTITY),
                b"certificate names no region",
            );
            return Err(e);
        }
    };
    let (mut send, recv) = conn.accept_bi().await?;
    let mut receiver = PeerReceiver {
        conn: conn.clone(),
        stream: recv,
    };
    receiver.expect_preamble().await?;
    send.write_all(PREAMBLE).await?;
    Ok(PeerConnection {
        region,
        sender: PeerSender {
            conn: conn.clone(),
            stream: send,
        },
        receiver,
        conn,
    })
}

/// The region named by the peer's certificate, which TLS has verified against the cluster CA:
/// its one DNS name of the form `<region>.geoscim`.
fn peer_region(conn: &quinn::Connection) -> Result<String, TransportError> {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| TransportError::PeerIdentity("no certificate".into()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| TransportError::PeerIdentity("empty certificate chain".into()))?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| TransportError::PeerIdentity(e.to_string()))?;
    let mut regions = cert.valid_dns_names().filter_map(certs::region_of_name);
    match (regions.next(), regions.next()) {
        (Some(region), None) => Ok(region.to_string()),
        (None, _) => Err(TransportError::PeerIdentity(
            "no <region>.geoscim name".into(),
        )),
        (Some(_), Some(_)) => Err(TransportError::PeerIdentity("several regions".into())),
    }
}

/// The server and client configurations of a region: mutual TLS 1.3, the cluster CA as the
/// only root both ways, ring as the crypto provider, keep-alive and idle timeout.
fn tls_configs(
    identity: &Identity,
    ca_pem: &str,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let tls = |e: &dyn std::fmt::Display| TransportError::Tls(e.to_string());
    let ca = certs::parse_cert_pem(ca_pem, "the CA certificate").map_err(|e| tls(&e))?;
    let chain = vec![
        certs::parse_cert_pem(&identity.cert_pem, "the region certificate").map_err(|e| tls(&e))?,
    ];
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| tls(&e))?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| tls(&e))?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| tls(&e))?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];

    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls(&e))?;
    client_tls.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .map_err(|e: quinn::VarIntBoundsExceeded| tls(&e))?,
    ));
    // One stream per connection, opened by the connecting side.
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    let transport = Arc::new(transport);

    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).map_err(|e| tls(&e))?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).map_err(|e| tls(&e))?,
    ));
    client.transport_config(transport);
    Ok((server, client))
}

/// One authenticated connection to a peer region, with its one stream.
pub struct PeerConnection {
    /// The peer's region, from its verified certificate.
    region: String,
    /// The connection itself, to close it and to read its state.
    conn: quinn::Connection,
    /// The sending half of the stream.
    sender: PeerSender,
    /// The receiving half of the stream.
    receiver: PeerReceiver,
}

impl PeerConnection {
    /// The peer's region, as its verified certificate names it.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Send one message (see [`PeerSender::send`]).
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        self.sender.send(msg).await
    }

    /// Receive one message (see [`PeerReceiver::recv`]).
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        self.receiver.recv().await
    }

    /// A handle that reads this connection's byte counters, kept by whoever reports traffic
    /// while the two halves are busy in their tasks.
    pub fn meter(&self) -> TrafficMeter {
        TrafficMeter {
            conn: self.conn.clone(),
        }
    }

    /// The two halves, for a reader task and a writer task.
    pub fn split(self) -> (PeerSender, PeerReceiver) {
        (self.sender, self.receiver)
    }

    /// Close the connection now (the peer sees [`CLOSE_NORMAL`]); unsent data is dropped.
    pub fn close(&self) {
        self.conn
            .close(VarInt::from_u32(CLOSE_NORMAL), b"closed by peer");
    }
}

/// Bytes one connection moved, as UDP payload: everything on the wire for it (handshake,
/// frames, acknowledgements, keep-alives, retransmissions), without IP and UDP headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of the UDP datagrams sent.
    pub bytes_sent: u64,
    /// Bytes of the UDP datagrams received.
    pub bytes_received: u64,
}

impl std::ops::Add for Traffic {
    type Output = Traffic;

    fn add(self, other: Traffic) -> Traffic {
        Traffic {
            bytes_sent: self.bytes_sent + other.bytes_sent,
            bytes_received: self.bytes_received + other.bytes_received,
        }
    }
}

/// Reads one connection's byte counters (quinn's connection statistics). They stay readable
/// after the connection closed, so the final counts of a closed connection can be kept.
///
/// Holding a meter keeps the connection's state alive, not the connection open: it does not
/// stop [`PeerSender::close`] or an idle timeout from closing it. Drop it once its final counts
/// are taken.
#[derive(Clone)]
pub struct TrafficMeter {
    /// The connection whose statistics are read.
    conn: quinn::Connection,
}

impl TrafficMeter {
    /// The bytes sent and received on the connection so far.
    pub fn traffic(&self) -> Traffic {
        let stats = self.conn.stats();
        Traffic {
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
        }
    }

    /// Whether the connection is closed (by either side, or timed out): its counts are final,
    /// up to the close frame itself.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}

/// The sending half of a peer's stream.
pub struct PeerSender {
    /// The connection, to close it when this side has nothing valid to send.
    conn: quinn::Connection,
    /// The stream's sending side.
    stream: quinn::SendStream,
}

impl PeerSender {
    /// Send one message as one frame. A message too large for a frame is refused before
    /// anything is sent (the peer would close the connection on it).
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        let frame = wire::encode_frame(msg);
        if frame.len() - 4 > MAX_FRAME {
            return Err(WireError::TooLarge((frame.len() - 4) as u64).into());
        }
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Say "no more messages": the peer's `recv` returns `Ok(None)` after the last one.
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.stream
            .finish()
            .map_err(|_| TransportError::StreamClosed)
    }

    /// The peer's region connection, e.g. to close it.
    pub fn close(&self) {
        self.conn
            .close(VarInt::from_u32(CLOSE_NORMAL), b"closed by peer");
    }
}

/// The receiving half of a peer's stream.
pub struct PeerReceiver {
    /// The connection, closed when the peer breaks the framing.
    conn: quinn::Connection,
    /// The stream's receiving side.
    stream: quinn::RecvStream,
}

impl PeerReceiver {
    /// The next message; `Ok(None)` when the peer finished the stream cleanly. A malformed
    /// frame (too long, or not a message this version reads) closes the connection with
    /// [`CLOSE_PROTOCOL_ERROR`] and returns the error; reads never allocate more than
    /// [`MAX_FRAME`] bytes.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(_)) => {
                return Err(self.protocol_error(WireError::Truncated))
            }
            Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(self.protocol_error(WireError::TooLarge(len as u64)));
        }
        let mut payload = vec![0u8; len];
        match self.stream.read_exact(&mut payload).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(_)) => {
                return Err(self.protocol_error(WireError::Truncated))
            }
            Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
        }
        match wire::decode(&payload) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => Err(self.protocol_error(e)),
        }
    }

    /// Read the peer's [`PREAMBLE`]; anything else closes the connection.
    async fn expect_preamble(&mut self) -> Result<(), TransportError> {
        let mut got = [0u8; PREAMBLE.len()];
        match self.stream.read_exact(&mut got).await {
            Ok(()) if got == *PREAMBLE => Ok(()),
            Err(quinn::ReadExactError::ReadError(e)) => Err(e.into()),
            _ => {
                self.conn
                    .close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"bad preamble");
                Err(TransportError::BadPreamble)
            }
        }
    }

    /// Close the connection because the peer broke the framing, and say why.
    fn protocol_error(&self, e: WireError) -> TransportError {
        tracing::warn!(
            peer = %self.conn.remote_address(), error = %e,
            "malformed replication frame: closing the connection"
        );
        self.conn
            .close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"malformed frame");
        TransportError::Wire(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::certs::{generate_ca, Ca};
    use crate::replication::wire::{Hwm, MessageV1};

    /// Every network step of a test is bounded: a hang fails the test instead of the run.
    const STEP: Duration = Duration::from_secs(10);

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(STEP, f).await.expect("timed out")
    }

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn bind(ca: &Ca, region: &str) -> Transport {
        Transport::bind(localhost(), &ca.issue(region).unwrap(), ca.cert_pem()).unwrap()
    }

    /// Refused by TLS because of a certificate (not a timeout or a lost packet): the reason
    /// travels in the close frame to both sides.
    fn refused_for_certificate<T>(result: &Result<T, TransportError>) -> bool {
        matches!(result, Err(e) if format!("{e:?}").contains("invalid peer certificate"))
    }

    fn hello(region: &str) -> Message {
        Message::V1(MessageV1::Hello {
            region: region.into(),
            protocol: 1,
            incarnation: 7,
            hwm: Hwm::from([(region.to_string(), 3)]),
            floor: Hwm::new(),
        })
    }

    #[tokio::test]
    async fn two_regions_exchange_messages_both_ways() {
        let ca = generate_ca().unwrap();
        let eu = bind(&ca, "eu");
        let us = bind(&ca, "us");
        let eu_addr = eu.local_addr().unwrap();

        let (client, server) =
            within(async { tokio::join!(us.connect(eu_addr, "eu"), eu.accept()) }).await;
        let mut at_us = client.unwrap();
        let mut at_eu = server.unwrap().unwrap();
        // Each side knows the other's region from its verified certificate.
        assert_eq!(at_us.region(), "eu");
        assert_eq!(at_eu.region(), "us");

        within(at_us.send(&hello("us"))).await.unwrap();
        within(at_eu.send(&hello("eu"))).await.unwrap();
        assert_eq!(within(at_eu.recv()).await.unwrap(), Some(hello("us")));
        assert_eq!(within(at_us.recv()).await.unwrap(), Some(hello("eu")));

        // Split halves work from separate tasks, and order is kept.
        let (mut tx, _rx) = at_us.split();
        let batches: Vec<Message> = (1..=50u64)
            .map(|s| {
                Message::V1(MessageV1::Entries {
                    origin: "us".into(),
                    entries: vec![(s, vec![s as u8; 300])],
                })
            })
            .collect();
        let sent = batches.clone();
        let writer = tokio::spawn(async move {
            for m in &sent {
                tx.send(m).await.unwrap();
            }
            tx.finish().unwrap();
            tx
        });
        for expected in &batches {
            assert_eq!(within(at_eu.recv()).await.unwrap().as_ref(), Some(expected));
        }
        // A finished stream ends cleanly.
        assert_eq!(within(at_eu.recv()).await.unwrap(), None);
        let _tx = within(writer).await.unwrap();
    }

    #[tokio::test]
    async fn meters_count_the_bytes_of_both_directions_and_outlive_the_connection() {
        let ca = generate_ca().unwrap();
        let eu = bind(&ca, "eu");
        let us = bind(&ca, "us");
        let (client, server) =
            within(async { tokio::join!(us.connect(eu.local_addr().unwrap(), "eu"), eu.accept()) })
                .await;
        let mut at_us = client.unwrap();
        let mut at_eu = server.unwrap().unwrap();
        let meter = at_us.meter();
        let before = meter.traffic();
        // The handshake alone moved bytes both ways.
        assert!(
            before.bytes_sent > 0 && before.bytes_received > 0,
            "{before:?}"
        );
        let big = Message::V1(MessageV1::Entries {
            origin: "us".into(),
            entries: vec![(1, vec![7; 20_000])],
        });
        within(at_us.send(&big)).await.unwrap();
        assert_eq!(within(at_eu.recv()).await.unwrap(), Some(big));
        within(at_eu.send(&hello("eu"))).await.unwrap();
        assert_eq!(within(at_us.recv()).await.unwrap(), Some(hello("eu")));
        let after = meter.traffic();
        assert!(after.bytes_sent >= before.bytes_sent + 20_000, "{after:?}");
        assert!(after.bytes_received > before.bytes_received, "{after:?}");
        assert!(!meter.is_closed());
        at_us.close();
        assert!(meter.is_closed());
        assert!(meter.traffic().bytes_sent >= after.bytes_sent);
    }

    #[tokio::test]
    async fn a_client_with_a_certificate_from_another_ca_is_refused() {
        let ca = generate_ca().unwrap();
        let eu = bind(&ca, "eu");
        // A stranger with a certificate for "us" from its own CA, who trusts the real CA (so the
        // refusal is the server's).
        let other = generate_ca().unwrap();
        let stranger =
            Transport::bind(localhost(), &other.issue("us").unwrap(), ca.cert_pem()).unwrap();

        let (client, server) = within(async {
            tokio::join!(
                stranger.connect(eu.local_addr().unwrap(), "eu"),
                eu.accept()
            )
        })
        .await;
        assert!(refused_for_certificate(&client), "the stranger got in");
        assert!(
            refused_for_certificate(&server.unwrap()),
            "the server accepted a stranger"
        );
    }

    #[tokio::test]
    async fn a_server_with_a_certificate_from_another_ca_is_refused() {
        let ca = generate_ca().unwrap();
        let us = bind(&ca, "us");
        // An impostor claiming to be "eu", certified by its own CA, that would accept us.
        let other = generate_ca().unwrap();
        let impostor =
            Transport::bind(localhost(), &other.issue("eu").unwrap(), ca.cert_pem()).unwrap();

        let (client, server) = within(async {
            tokio::join!(
                us.connect(impostor.local_addr().unwrap(), "eu"),
                impostor.accept()
            )
        })
        .await;
        assert!(refused_for_certificate(&client), "connected to an impostor");
        assert!(refused_for_certificate(&server.unwrap()));
    }

    #[tokio::test]
    async fn connecting_with_the_wrong_expected_region_is_refused() {
        let ca = generate_ca().unwrap();
        let eu = bind(&ca, "eu");
        let us = bind(&ca, "us");
        let eu_addr = eu.local_addr().unwrap();

        // A valid cluster member, but not the region we meant to reach.
        let (client, server) =
            within(async { tokio::join!(us.connect(eu_addr, "ap"), eu.accept()) }).await;
        assert!(
            matches!(&client, Err(e) if format!("{e:?}").contains("not valid for name")),
            "reached eu while expecting ap: {:?}",
            client.err()
        );
        assert!(refused_for_certificate(&server.unwrap()));
        // An invalid region name is refused before any packet.
        assert!(matches!(
            us.connect(eu_addr, "not a region").await,
            Err(TransportError::InvalidRegion(_))
        ));
        // The right name still works afterwards.
        let (client, server) =
            within(async { tokio::join!(us.connect(eu_addr, "eu"), eu.accept()) }).await;
        assert_eq!(client.unwrap().region(), "eu");
        assert_eq!(server.unwrap().unwrap().region(), "us");
    }

    /// Connect `us` to `eu` and send `bytes` raw on the stream; `eu`'s next `recv` must fail
    /// with a wire error and close the connection, which `us` then sees.
    async fn garbage_closes_the_connection(bytes: &[u8]) -> TransportError {
        let ca = generate_ca().unwrap();
        let eu = bind(&ca, "eu");
        let us = bind(&ca, "us");
        let (client, server) =
            within(async { tokio::join!(us.connect(eu.local_addr().unwrap(), "eu"), eu.accept()) })
                .await;
        let mut at_us = client.unwrap();
        let mut at_eu = server.unwrap().unwrap();

        within(at_us.sender.stream.write_all(bytes)).await.unwrap();
        let err = within(at_eu.recv()).await.unwrap_err();
        // The sender learns that the connection was closed for a protocol error.
        match within(at_us.recv()).await {
            Err(TransportError::Read(quinn::ReadError::ConnectionLost(
                quinn::ConnectionError::ApplicationClosed(close),
            ))) => assert_eq!(close.error_code, VarInt::from_u32(CLOSE_PROTOCOL_ERROR)),
            other => panic!("expected a protocol-error close, got {other:?}"),
        }
        err
    }

    #[tokio::test]
    async fn a_garbage_frame_closes_the_connection_with_an_error() {
        // A frame of 3 bytes in an unknown wire version.
        let err = garbage_closes_the_connection(&[0, 0, 0, 3, 9, 9, 9]).await;
        assert!(
            matches!(err, TransportError::Wire(WireError::UnknownVersion(9))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_is_refused_before_its_bytes_arrive() {
        let err = garbage_closes_the_connection(&u32::MAX.to_be_bytes()).await;
        assert!(
            matches!(err, TransportError::Wire(WireError::TooLarge(_))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_message_too_large_for_a_frame_is_not_sent() {
        let ca = generate_ca().unwrap();
        let eu = bind(&ca, "eu");
        let us = bind(&ca, "us");
        let (client, server) =
            within(async { tokio::join!(us.connect(eu.local_addr().unwrap(), "eu"), eu.accept()) })
                .await;
        let mut at_us = client.unwrap();
        let mut at_eu = server.unwrap().unwrap();
        let huge = Message::V1(MessageV1::Entries {
            origin: "us".into(),
            entries: vec![(1, vec![0; MAX_FRAME])],
        });
        assert!(matches!(
            at_us.send(&huge).await,
            Err(TransportError::Wire(WireError::TooLarge(_)))
        ));
        // The connection is still good.
        within(at_us.send(&hello("us"))).await.unwrap();
        assert_eq!(within(at_eu.recv()).await.unwrap(), Some(hello("us")));
    }
}
