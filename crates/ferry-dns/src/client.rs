//! A minimal DNS client (one question over UDP or TCP), for tests, the benchmark and
//! `ferry dns --query`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The name or the message could not be encoded or decoded.
    #[error("bad DNS message: {0}")]
    Message(String),
    /// The socket failed.
    #[error("DNS transport: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no DNS answer within {0:?}")]
    Timeout(Duration),
}

/// The query message for `name`/`qtype` with id `id`.
pub fn query_message(id: u16, name: &str, qtype: RecordType) -> Result<Vec<u8>, QueryError> {
    let name = Name::from_str(name).map_err(|e| QueryError::Message(e.to_string()))?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, qtype));
    m.to_vec().map_err(|e| QueryError::Message(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<Message, QueryError> {
    Message::from_vec(bytes).map_err(|e| QueryError::Message(e.to_string()))
}

/// Asks `server` over UDP (one try, `timeout`).
pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Message, QueryError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    let id = rand_id();
    socket.send(&query_message(id, name, qtype)?).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .map_err(|_| QueryError::Timeout(timeout))??;
    decode(buf.get(..n).unwrap_or_default())
}

/// Asks `server` over TCP (length-prefixed messages).
pub async fn query_tcp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Message, QueryError> {
    let work = async {
        let mut tcp = tokio::net::TcpStream::connect(server).await?;
        let q = query_message(rand_id(), name, qtype)?;
        let len =
            u16::try_from(q.len()).map_err(|_| QueryError::Message("query too long".into()))?;
        tcp.write_all(&len.to_be_bytes()).await?;
        tcp.write_all(&q).await?;
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut buf).await?;
        decode(&buf)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| QueryError::Timeout(timeout))?
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u16
}
