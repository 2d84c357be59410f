//! A minimal DNS client for one question, with an optional EDNS Client Subnet: over UDP, and
//! over TCP when the answer comes back truncated. hickory-resolver has no way to send ECS, so
//! `idp-sim --ecs` (posing as an IdP in a given network), the tests and the load generator use
//! this instead; everything else uses hickory-resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Errors of one query.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("dns i/o with {server}: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    #[error("bad dns message: {0}")]
    Proto(String),
}

/// The query message for `name` / `qtype`, with EDNS (and ECS `subnet` when given).
pub fn query_message(
    id: u16,
    name: &Name,
    qtype: RecordType,
    subnet: Option<(IpAddr, u8)>,
) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name.clone(), qtype));
    m.metadata.recursion_desired = false;
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((addr, prefix)) = subnet {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
    }
    m.set_edns(edns);
    m
}

/// Ask `server` one question; TCP when the UDP answer is truncated.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    subnet: Option<(IpAddr, u8)>,
    timeout: Duration,
) -> Result<Message, ClientError> {
    let id: u16 = rand::random();
    let bytes = query_message(id, name, qtype, subnet)
        .to_vec()
        .map_err(|e| ClientError::Proto(e.to_string()))?;
    let udp = query_udp(server, &bytes, id);
    let answer = tokio::time::timeout(timeout, udp)
        .await
        .map_err(|_| ClientError::Timeout(server))??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout(timeout, query_tcp(server, &bytes))
        .await
        .map_err(|_| ClientError::Timeout(server))?
}

/// One question over UDP: the answer with our id (stray datagrams are ignored).
async fn query_udp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, ClientError> {
    let io = |source| ClientError::Io { server, source };
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id && m.metadata.message_type == MessageType::Response {
                return Ok(m);
            }
        }
    }
}

/// One question over TCP (two-byte length prefix, RFC 1035 §4.2.2).
pub async fn query_tcp(server: SocketAddr, bytes: &[u8]) -> Result<Message, ClientError> {
    let io = |source| ClientError::Io { server, source };
    let mut s = tokio::net::TcpStream::connect(server).await.map_err(io)?;
    let len =
        u16::try_from(bytes.len()).map_err(|_| ClientError::Proto("query too long".into()))?;
    s.write_all(&len.to_be_bytes()).await.map_err(io)?;
    s.write_all(bytes).await.map_err(io)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.map_err(io)?;
    Message::from_vec(&buf).map_err(|e| ClientError::Proto(e.to_string()))
}

/// The addresses in an answer and the lowest TTL among them (seconds).
pub fn addresses(m: &Message) -> (Vec<IpAddr>, u32) {
    use hickory_proto::rr::RData;
    let mut ttl = u32::MAX;
    let addrs = m
        .answers
        .iter()
        .filter_map(|r| {
            let ip = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => return None,
            };
            ttl = ttl.min(r.ttl);
            Some(ip)
        })
        .collect::<Vec<_>>();
    (addrs, if ttl == u32::MAX { 0 } else { ttl })
}
