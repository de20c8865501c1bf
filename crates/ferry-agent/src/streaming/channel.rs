//! The channel protocol of `v4.channel.k8s.io` and `v5.channel.k8s.io` (Kubernetes'
//! `remotecommand` over WebSocket): every binary message starts with a channel byte.
//!
//! | channel | direction        | content                                                  |
//! |---------|------------------|----------------------------------------------------------|
//! | 0       | client → server  | stdin                                                    |
//! | 1, 2    | server → client  | stdout, stderr                                           |
//! | 3       | server → client  | the outcome: a `metav1.Status` (JSON), last message      |
//! | 4       | client → server  | terminal size, `{"Width":80,"Height":24}`                |
//! | 255     | client → server  | v5 only: close the stream named by the next byte (stdin) |

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel numbers.
pub mod ch {
    /// stdin.
    pub const STDIN: u8 = 0;
    /// stdout.
    pub const STDOUT: u8 = 1;
    /// stderr.
    pub const STDERR: u8 = 2;
    /// The outcome.
    pub const ERROR: u8 = 3;
    /// Terminal size.
    pub const RESIZE: u8 = 4;
    /// v5: close a stream.
    pub const CLOSE: u8 = 255;
}

/// A terminal size from channel 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// What the client sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes for stdin.
    Stdin(Vec<u8>),
    /// stdin ended (v5 close frame for channel 0).
    StdinClosed,
    /// The terminal was resized.
    Resize(Size),
}

/// Decodes one binary message of the client; `None` for messages to ignore.
pub fn decode(data: &[u8]) -> Option<Input> {
    let (&channel, rest) = data.split_first()?;
    match channel {
        ch::STDIN => Some(Input::Stdin(rest.to_vec())),
        ch::RESIZE => {
            let v: Value = serde_json::from_slice(rest).ok()?;
            let dim = |k: &str| v[k].as_u64().and_then(|n| u16::try_from(n).ok());
            Some(Input::Resize(Size {
                width: dim("Width")?,
                height: dim("Height")?,
            }))
        }
        ch::CLOSE if rest.first() == Some(&ch::STDIN) => Some(Input::StdinClosed),
        _ => None,
    }
}

/// The Status that ends a successful command.
pub fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The Status of a command that exited with `code` (non-zero), as the kubelet writes it:
/// kubectl exits with the `ExitCode` cause.
pub fn exit_code(code: i32) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status of a command that could not run at all.
pub fn failure(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

/// One framed message for `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// A WebSocket split into a decoded input stream and a framed output queue.
pub struct Channels {
    /// What the client sends; closes when the client goes away.
    pub input: mpsc::Receiver<Input>,
    /// Frames for the client; dropping every sender closes the connection.
    pub output: mpsc::Sender<Message>,
    /// Ends when the output side has sent everything and closed.
    pub writer: tokio::task::JoinHandle<()>,
}

impl Channels {
    /// Starts the reader and writer tasks of `socket`.
    pub fn start(socket: WebSocket) -> Self {
        let (mut sink, mut stream) = socket.split();
        let (in_tx, input) = mpsc::channel::<Input>(64);
        let (output, mut out_rx) = mpsc::channel::<Message>(64);
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let decoded = match msg {
                    Message::Binary(b) => decode(&b),
                    Message::Close(_) => break,
                    _ => None,
                };
                if let Some(i) = decoded
                    && in_tx.send(i).await.is_err()
                {
                    break;
                }
            }
        });
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            let normal = axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(normal))).await;
            let _ = sink.close().await;
        });
        Channels {
            input,
            output,
            writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_channels() {
        assert_eq!(decode(&[0, b'h', b'i']), Some(Input::Stdin(b"hi".to_vec())));
        assert_eq!(
            decode(b"\x04{\"Width\":100,\"Height\":30}"),
            Some(Input::Resize(Size {
                width: 100,
                height: 30
            }))
        );
        assert_eq!(decode(&[255, 0]), Some(Input::StdinClosed));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(b"\x04not json"), None);
    }

    #[test]
    fn exit_statuses_carry_the_code_as_kubectl_reads_it() {
        let s = exit_code(3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(success()["status"], "Success");
    }
}
