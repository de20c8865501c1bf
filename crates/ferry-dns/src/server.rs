//! The DNS protocol side: a hickory-server request handler answering from the current
//! [`Zone`], and the UDP and TCP listeners.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::zone::{Answer, Zone};

/// The zone being served; swapped whole when the cluster changes.
#[derive(Clone)]
pub struct ZoneHandle(Arc<RwLock<Arc<Zone>>>);

impl ZoneHandle {
    /// A handle serving `zone`.
    pub fn new(zone: Zone) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(zone))))
    }

    /// The zone served now.
    pub fn current(&self) -> Arc<Zone> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `zone` from now on.
    pub fn replace(&self, zone: Zone) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
    }
}

/// Answers queries from a [`ZoneHandle`].
pub struct Handler {
    zone: ZoneHandle,
}

impl Handler {
    /// A handler over `zone`.
    pub fn new(zone: ZoneHandle) -> Self {
        Self { zone }
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let builder = || MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let error = |code: ResponseCode| builder().error_msg(&request.metadata, code);
        if request.metadata.message_type != MessageType::Query {
            return send(response_handle, error(ResponseCode::FormErr), request).await;
        }
        if request.metadata.op_code != OpCode::Query {
            return send(response_handle, error(ResponseCode::NotImp), request).await;
        }
        let info = match request.request_info() {
            Ok(i) => i,
            Err(_) => return send(response_handle, error(ResponseCode::FormErr), request).await,
        };
        let name = info.query.name().to_string();
        let qtype = info.query.query_type();
        let zone = self.zone.current();
        let answer = zone.lookup(&name, qtype);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let none: Vec<Record> = Vec::new();
        let soa = [zone.soa().clone()];
        let response = match &answer {
            Answer::Refused => {
                return send(response_handle, error(ResponseCode::Refused), request).await;
            }
            Answer::Records {
                answers,
                additionals,
            } => builder().build(
                metadata,
                answers.iter(),
                none.iter(),
                none.iter(),
                additionals.iter(),
            ),
            Answer::NoData => {
                builder().build(metadata, none.iter(), none.iter(), soa.iter(), none.iter())
            }
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                builder().build(metadata, none.iter(), none.iter(), soa.iter(), none.iter())
            }
        };
        match response_handle.send_response(response).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS response");
                failed(request, ResponseCode::ServFail)
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    mut handle: R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS response");
            failed(request, ResponseCode::ServFail)
        }
    }
}

/// A running DNS server (UDP and TCP on one address).
pub struct DnsListener {
    /// The bound address (UDP and TCP).
    pub addr: SocketAddr,
    server: Server<Handler>,
}

impl DnsListener {
    /// Binds UDP and TCP on `addr` (port 0: a free port, the same for both) and serves `zone`.
    pub async fn bind(addr: SocketAddr, zone: ZoneHandle) -> std::io::Result<Self> {
        // Port 0: take UDP's free port for TCP too (retried if TCP's is taken).
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind(addr).await?;
            let bound = udp.local_addr()?;
            match tokio::net::TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if addr.port() == 0 && tries < 10 => {
                    tries += 1;
                    tracing::debug!(error = %e, "TCP port taken; trying another");
                }
                Err(e) => return Err(e),
            }
        };
        let bound = udp.local_addr()?;
        let mut server = Server::new(Handler::new(zone));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        Ok(Self {
            addr: bound,
            server,
        })
    }

    /// Stops serving.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS server stopped with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{query_tcp, query_udp};
    use crate::zone::ZoneConfig;
    use hickory_server::proto::rr::{RData, RecordType};
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn zone() -> Zone {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.20".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        Zone::build(
            ZoneConfig {
                domain: "cluster.local".into(),
                service_cidr: "10.96.0.0/16".parse().unwrap(),
                pod_cidr: "10.244.0.0/16".parse().unwrap(),
            },
            &[svc],
            &[],
            &[],
            7,
        )
    }

    #[tokio::test]
    async fn answers_over_udp_and_tcp() {
        let handle = ZoneHandle::new(zone());
        let server = DnsListener::bind("127.0.0.1:0".parse().unwrap(), handle.clone())
            .await
            .unwrap();
        let t = Duration::from_secs(5);
        for tcp in [false, true] {
            let ask = |name: &'static str, qtype| async move {
                if tcp {
                    query_tcp(server.addr, name, qtype, t).await.unwrap()
                } else {
                    query_udp(server.addr, name, qtype, t).await.unwrap()
                }
            };
            let m = ask("web.default.svc.cluster.local.", RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.metadata.authoritative);
            assert_eq!(m.answers.len(), 1, "{m:?}");
            assert_eq!(
                m.answers[0].data,
                RData::A("10.96.0.20".parse::<std::net::Ipv4Addr>().unwrap().into())
            );
            let m = ask("missing.default.svc.cluster.local.", RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            assert_eq!(m.authorities.len(), 1, "the SOA: {m:?}");
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
            let m = ask("web.default.svc.cluster.local.", RecordType::AAAA).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.is_empty());
            assert_eq!(m.authorities.len(), 1);
            let m = ask("example.com.", RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        }
        // A new zone is served at once.
        handle.replace(Zone::empty(ZoneConfig {
            domain: "cluster.local".into(),
            service_cidr: "10.96.0.0/16".parse().unwrap(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
        }));
        let m = query_udp(
            server.addr,
            "web.default.svc.cluster.local.",
            RecordType::A,
            t,
        )
        .await
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn busybox_nslookup_resolves_a_service() {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(busybox) = busybox else {
            eprintln!("SKIP: busybox is not installed (scripts/install-deps installs it)");
            return;
        };
        let server = DnsListener::bind("127.0.0.1:0".parse().unwrap(), ZoneHandle::new(zone()))
            .await
            .unwrap();
        let out = tokio::process::Command::new(busybox)
            .args([
                "nslookup".to_string(),
                format!("-port={}", server.addr.port()),
                "web.default.svc.cluster.local".into(),
                "127.0.0.1".into(),
            ])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("10.96.0.20"),
            "nslookup said: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.shutdown().await;
    }
}
