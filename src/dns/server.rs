//! The responder: UDP and TCP on the region's DNS listener, the only hickory-server user.
//!
//! hickory-server reads the sockets, decodes messages (a packet shorter than a header is
//! dropped; one that does not decode is answered FORMERR) and never answers responses. This
//! module's [`Responder`] is its `RequestHandler` (the built-in catalog never echoes ECS):
//! per-source rate limit and an in-flight cap first (dropped on UDP, so the responder amplifies
//! nothing), then exactly one question in, the [`Zone`](super::zone::Zone) answers it, the ECS
//! option is echoed with the routing scope, and the answer is encoded within the client's EDNS
//! size (512 without EDNS, at most `dns.max_udp_payload`); hickory sets TC when it does not fit
//! and the client retries over TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use super::ratelimit::RateLimiter;
use super::routing::Client;
use super::{AnswerLabels, RcodeLabels, View};
use crate::config::DnsConfig;

/// Errors running the responder.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("dns responder failed: {0}")]
    Net(String),
}

/// The request handler: rate limit, the zone, ECS.
pub struct Responder {
    view: Arc<View>,
    limiter: Mutex<RateLimiter>,
    in_flight: tokio::sync::Semaphore,
    max_udp_payload: u16,
}

impl Responder {
    /// A responder answering from `view` with the limits of `cfg`.
    pub fn new(view: Arc<View>, cfg: &DnsConfig) -> Responder {
        Responder {
            view,
            limiter: Mutex::new(RateLimiter::new(
                cfg.rate_limit_qps,
                cfg.rate_limit_burst,
                cfg.rate_limit_sources,
            )),
            in_flight: tokio::sync::Semaphore::new(cfg.max_in_flight),
            max_udp_payload: cfg.max_udp_payload,
        }
    }

    fn count(&self, rcode: ResponseCode) {
        self.view
            .metrics
            .responses
            .get_or_create(&RcodeLabels {
                // NoError → NOERROR, NXDomain → NXDOMAIN: the names dig prints.
                rcode: format!("{rcode:?}").to_ascii_uppercase(),
            })
            .inc();
    }
}

/// A response header without sections: what a dropped query "answered".
fn dropped(request: &Request, rcode: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = rcode;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Responder {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let src = request.src();
        let udp = request.protocol() == Protocol::Udp;
        let allowed = self
            .limiter
            .lock()
            .map(|mut l| l.allow(src.ip(), self.view.now_ms()))
            .unwrap_or(true);
        if !allowed {
            self.view.metrics.rate_limited.inc();
            if udp {
                return dropped(request, ResponseCode::Refused);
            }
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.view.metrics.overloaded.inc();
            return dropped(request, ResponseCode::ServFail);
        };

        // The response EDNS: present when the query had it, sized to both sides' limits.
        let ecs = request
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(*s),
                _ => None,
            });
        let mut edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512).min(self.max_udp_payload));
            e
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        metadata.authoritative = false;

        let question = request.queries.queries();
        let reply = if !allowed {
            // TCP over the limit: a refusal costs little and keeps the connection sane.
            metadata.response_code = ResponseCode::Refused;
            None
        } else if request.metadata.message_type != MessageType::Query {
            None
        } else if request.metadata.op_code != OpCode::Query {
            metadata.response_code = ResponseCode::NotImp;
            None
        } else if question.len() != 1 {
            metadata.response_code = ResponseCode::FormErr;
            None
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 §6.1.3: only EDNS version 0 is known (the high bits go in the OPT).
            metadata.response_code = ResponseCode::BADVERS;
            None
        } else {
            let q = &question[0];
            let client = match ecs {
                Some(s) if s.source_prefix() > 0 => {
                    Client::from_subnet(s.addr(), s.source_prefix())
                }
                _ => Client::from_source(src.ip()),
            };
            let reply = self.view.zone.answer(
                q.original().name(),
                q.query_type(),
                q.query_class(),
                &client,
                &self.view.healthy(),
            );
            metadata.response_code = reply.rcode;
            metadata.authoritative = reply.authoritative;
            if let Some(a) = &reply.routed {
                if a.fail_open {
                    self.view.metrics.fail_open.inc();
                }
                if let Some(first) = a.regions.first() {
                    let region = self.view.zone.table.regions[*first].name.clone();
                    self.view
                        .metrics
                        .answers
                        .get_or_create(&AnswerLabels {
                            region,
                            qtype: q.query_type().to_string(),
                        })
                        .inc();
                }
            }
            Some(reply)
        };

        // RFC 7871 §7.2.1: echo FAMILY, SOURCE PREFIX-LENGTH and ADDRESS, with our scope.
        if let (Some(e), Some(s)) = (edns.as_mut(), ecs) {
            let scope = reply.as_ref().map_or(0, |r| r.scope);
            let scope = if s.source_prefix() == 0 { 0 } else { scope };
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                s.addr(),
                s.source_prefix(),
                scope,
            )));
        }
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        self.count(metadata.response_code);
        let sent = match &reply {
            Some(r) => {
                let no_soa: [&hickory_proto::rr::Record; 0] = [];
                response
                    .send_response(builder.build(
                        metadata,
                        r.answers.iter(),
                        r.authorities.iter(),
                        no_soa,
                        r.additionals.iter(),
                    ))
                    .await
            }
            None => {
                response
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        match sent {
            Ok(info) => {
                if udp && info.truncation {
                    self.view.metrics.truncated.inc();
                }
                info
            }
            Err(e) => {
                tracing::debug!(%src, error = %e, "could not send a DNS response");
                dropped(request, ResponseCode::ServFail)
            }
        }
    }
}

/// Serve `view` on the bound `udp` socket and `tcp` listener until `shutdown` resolves.
pub async fn serve(
    view: Arc<View>,
    cfg: &DnsConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let mut server = Server::new(Responder::new(view, cfg));
    server.register_socket(udp);
    server.register_listener(
        tcp,
        Duration::from_millis(cfg.tcp_idle_timeout_ms),
        // Responses queued per TCP connection.
        64,
    );
    let token = server.shutdown_token().clone();
    tokio::spawn(async move {
        shutdown.await;
        token.cancel();
    });
    server
        .block_until_done()
        .await
        .map_err(|e| ServerError::Net(e.to_string()))
}

/// Bind the UDP socket and TCP listener of `addr` (the same port on both; port 0 picks one
/// free for both).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    // Port 0: take a free UDP port and try the same for TCP, a few times.
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}
