//! What Slack sends an app for a slash command (a `slash_commands`
//! envelope, whose payload is also the form HTTP mode posts) or a button
//! press (a `block_actions` payload with the message and its blocks), each
//! with a fresh trigger id and its own `response_url`. Socket Mode
//! ([`crate::socket_mode`]) and HTTP mode ([`crate::http_mode`]) both send
//! them.

use serde_json::{json, Value};

use crate::state::{Data, Message, SlashCommand, APP_ID, BOT_ID, BOT_USER_ID, TEAM_ID};
use crate::FakeError;

/// A `slash_commands` envelope and its trigger id.
pub(crate) fn command_envelope(
    data: &mut Data,
    http_base: &str,
    cmd: &SlashCommand,
) -> (Value, String) {
    let n = data.next_id();
    let trigger_id = format!("{n}.4242.trigger{n:06}");
    let response = data.next_id();
    data.response_urls.insert(response, trigger_id.clone());
    let payload = json!({
        "token": "verification-token-unused",
        "team_id": TEAM_ID,
        "team_domain": "fake-desk",
        "channel_id": cmd.channel,
        "channel_name": "general",
        "user_id": cmd.user,
        "user_name": cmd.user.to_lowercase(),
        "command": cmd.command,
        "text": cmd.text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": format!("{http_base}/response/{response}"),
        "trigger_id": trigger_id,
    });
    (
        json!({
            "envelope_id": format!("env-{n}"),
            "type": "slash_commands",
            "accepts_response_payload": true,
            "payload": payload,
        }),
        trigger_id,
    )
}

/// The button `action_id` in a message's blocks.
fn find_button(blocks: &Value, action_id: &str) -> Option<(Value, String)> {
    for block in blocks.as_array()? {
        let block_id = block["block_id"].as_str().unwrap_or("b").to_string();
        let mut candidates: Vec<&Value> = Vec::new();
        if block["accessory"].is_object() {
            candidates.push(&block["accessory"]);
        }
        if let Some(elements) = block["elements"].as_array() {
            candidates.extend(elements.iter());
        }
        for el in candidates {
            if el["type"] == "button" && el["action_id"] == action_id {
                return Some((el.clone(), block_id));
            }
        }
    }
    None
}

/// A `block_actions` payload for pressing `action_id` in `message`.
pub(crate) fn block_actions(
    data: &mut Data,
    http_base: &str,
    message: &Message,
    action_id: &str,
    user: &str,
) -> Result<Value, FakeError> {
    let (button, block_id) = find_button(&message.blocks, action_id).ok_or_else(|| {
        FakeError::Other(format!(
            "no button {action_id} in message {} ({})",
            message.ts, message.blocks
        ))
    })?;
    let n = data.next_id();
    let trigger_id = format!("{n}.4242.trigger{n:06}");
    let response = data.next_id();
    data.response_urls.insert(response, trigger_id.clone());
    let mut container = json!({
        "type": "message",
        "message_ts": message.ts,
        "channel_id": message.channel,
        "is_ephemeral": false,
    });
    let mut msg = json!({
        "type": "message",
        "subtype": "bot_message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM_ID,
        "ts": message.ts,
        "text": message.text,
        "blocks": message.blocks,
    });
    if let Some(thread) = &message.thread_ts {
        container["thread_ts"] = json!(thread);
        msg["thread_ts"] = json!(thread);
    }
    Ok(json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "container": container,
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "fake-desk"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": message.channel, "name": "general"},
        "message": msg,
        "state": {"values": {}},
        "response_url": format!("{http_base}/response/{response}"),
        "actions": [{
            "action_id": action_id,
            "block_id": block_id,
            "text": button["text"],
            "value": button["value"],
            "type": "button",
            "action_ts": format!("1700000001.{n:06}"),
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_are_found_in_accessories_and_actions() {
        let blocks = json!([
            {"type": "section", "block_id": "s1", "text": {"type": "mrkdwn", "text": "a"},
             "accessory": {"type": "button", "action_id": "run_func_a", "value": "a", "text": {"type": "plain_text", "text": "Run"}}},
            {"type": "actions", "block_id": "s2", "elements": [
                {"type": "button", "action_id": "run_func_b", "value": "b", "text": {"type": "plain_text", "text": "Run"}}]},
        ]);
        assert_eq!(
            find_button(&blocks, "run_func_a").map(|(_, b)| b),
            Some("s1".into())
        );
        assert_eq!(
            find_button(&blocks, "run_func_b").map(|(_, b)| b),
            Some("s2".into())
        );
        assert!(find_button(&blocks, "run_func_c").is_none());
    }
}
