//! The Socket Mode server: accepts WebSockets (`hello` on connect), spreads
//! envelopes over the open connections (round robin: with several
//! replicas, each gets its share), matches acks to envelopes, and
//! redelivers what was not acknowledged when its connection closes on
//! another one (with `retry_attempt`), as Slack does; on request it
//! delivers an envelope on every open connection at once
//! ([`FakeSlack::duplicate_deliveries`]). And the methods that send slash
//! commands and button presses over it and wait for the ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::payloads::{block_actions, command_envelope};
use crate::state::{Ack, Data, Message, Pending, Shared, SlashCommand, WsCommand, APP_ID};
use crate::{FakeError, FakeSlack};

impl FakeSlack {
    /// Waits until at least `n` sockets are open.
    pub async fn wait_for_sockets(&self, n: usize, limit: Duration) -> Result<(), FakeError> {
        self.wait_for("open sockets", limit, move |v| {
            (v.data.sockets.len() >= n).then_some(())
        })
        .await
    }

    /// Sends a slash command over Socket Mode and waits for its ack.
    pub async fn send_command(
        &self,
        cmd: &SlashCommand,
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        let (envelope, trigger_id) = {
            let mut data = self.shared.lock();
            command_envelope(&mut data, &self.shared.http_base, cmd)
        };
        self.send_envelope(envelope, trigger_id, limit).await
    }

    /// Presses the button `action_id` in `message` (as `user`) over
    /// Socket Mode and waits for the ack; the payload is built as Slack
    /// builds it, with the message and its blocks.
    pub async fn click(
        &self,
        message: &Message,
        action_id: &str,
        user: &str,
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        self.click_edited(message, action_id, user, |_| {}, limit)
            .await
    }

    /// [`FakeSlack::click`] with the `block_actions` payload changed by
    /// `edit` first (a field Slack might add, rename or drop).
    pub async fn click_edited(
        &self,
        message: &Message,
        action_id: &str,
        user: &str,
        edit: impl FnOnce(&mut Value),
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        let (envelope, trigger_id) = {
            let mut data = self.shared.lock();
            let mut payload =
                block_actions(&mut data, &self.shared.http_base, message, action_id, user)?;
            edit(&mut payload);
            let trigger_id = payload["trigger_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let id = format!("env-{}", data.next_id());
            (
                json!({
                    "envelope_id": id,
                    "type": "interactive",
                    "accepts_response_payload": false,
                    "retry_attempt": 0,
                    "retry_reason": "",
                    "payload": payload,
                }),
                trigger_id,
            )
        };
        self.send_envelope(envelope, trigger_id, limit).await
    }

    async fn send_envelope(
        &self,
        envelope: Value,
        trigger_id: String,
        limit: Duration,
    ) -> Result<Ack, FakeError> {
        let shared = Arc::clone(&self.shared);
        self.on_runtime(async move {
            let id = envelope["envelope_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (tx, rx) = oneshot::channel();
            {
                let mut data = shared.lock();
                data.pending.insert(
                    id.clone(),
                    Pending {
                        envelope,
                        trigger_id,
                        conn: None,
                        sent_at: Instant::now(),
                        deliveries: 0,
                        waiter: Some(tx),
                    },
                );
                deliver_pending(&mut data);
            }
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(ack)) => Ok(ack),
                _ => Err(FakeError::Timeout(limit, format!("the ack of {id}"))),
            }
        })
        .await
    }
}
/// Accepts WebSockets until the runtime stops.
pub(crate) async fn accept_sockets(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        // Frames go out as written (no Nagle delay), as a server's should.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                serve_socket(ws, shared).await;
            }
        });
    }
}

async fn serve_socket(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    shared: Arc<Shared>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsCommand>();
    let id = {
        let mut data = shared.lock();
        let id = data.next_id();
        data.sockets.insert(id, tx.clone());
        data.connects += 1;
        let hello = json!({
            "type": "hello",
            "num_connections": data.sockets.len(),
            "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        });
        let _ = tx.send(WsCommand::Send(hello.to_string()));
        deliver_pending(&mut data);
        id
    };
    shared.touch();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(WsCommand::Send(text)) => {
                    if sink.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsCommand::SendThenDrop(text)) => {
                    let _ = sink.send(WsMessage::Text(text.into())).await;
                    break;
                }
                Some(WsCommand::Drop) | None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => on_ack(&shared, text.as_str()),
                Some(Ok(WsMessage::Ping(_))) => {
                    // tungstenite queued the pong; send it now.
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Dropping both halves closes the TCP connection without a handshake.
    drop(sink);
    drop(stream);
    {
        let mut data = shared.lock();
        data.sockets.remove(&id);
        for p in data.pending.values_mut() {
            if p.conn == Some(id) {
                p.conn = None;
            }
        }
        deliver_pending(&mut data);
    }
    shared.touch();
}

/// Sends every undelivered envelope to an open socket (round robin).
fn deliver_pending(data: &mut Data) {
    let ids: Vec<String> = data
        .pending
        .iter()
        .filter(|(_, p)| p.conn.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    for id in ids {
        let conns: Vec<u64> = data.sockets.keys().copied().collect();
        if conns.is_empty() {
            return;
        }
        data.round_robin = data.round_robin.wrapping_add(1);
        let conn = conns[(data.round_robin as usize) % conns.len()];
        let drop_now = data.drop_after_delivery > 0;
        if drop_now {
            data.drop_after_delivery -= 1;
        }
        let Some(tx) = data.sockets.get(&conn).cloned() else {
            continue;
        };
        let Some(p) = data.pending.get_mut(&id) else {
            continue;
        };
        if p.deliveries > 0 {
            p.envelope["retry_attempt"] = json!(p.deliveries);
            p.envelope["retry_reason"] = json!("timeout");
        }
        p.deliveries += 1;
        p.conn = Some(conn);
        p.sent_at = Instant::now();
        let frame = p.envelope.to_string();
        let _ = tx.send(if drop_now {
            WsCommand::SendThenDrop(frame.clone())
        } else {
            WsCommand::Send(frame.clone())
        });
        // The same envelope on every other connection too, when asked.
        if data.duplicate > 0 && conns.len() > 1 {
            data.duplicate -= 1;
            for other in conns.iter().filter(|&&c| c != conn) {
                if let Some(tx) = data.sockets.get(other) {
                    let _ = tx.send(WsCommand::Send(frame.clone()));
                }
            }
        }
    }
}

fn on_ack(shared: &Shared, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(id) = frame["envelope_id"].as_str() else {
        return;
    };
    {
        let mut data = shared.lock();
        let now = Instant::now();
        let (latency, deliveries, trigger_id, waiter) = match data.pending.remove(id) {
            Some(mut p) => (
                now.duration_since(p.sent_at),
                p.deliveries,
                p.trigger_id.clone(),
                p.waiter.take(),
            ),
            None => (Duration::ZERO, 0, String::new(), None),
        };
        let ack = Ack {
            envelope_id: id.to_string(),
            latency,
            payload: frame.get("payload").cloned(),
            deliveries,
            trigger_id,
        };
        data.acks.push(ack.clone());
        if let Some(w) = waiter {
            let _ = w.send(ack);
        }
    }
    shared.touch();
}
