//! What Slack sends, reduced to what tradebox uses: a slash command or a
//! Run button press, with where to answer.
//!
//! The HTTP endpoints parse the form bodies here with lenient structs (only
//! the fields used are required). Socket Mode gets slack-morphism's typed
//! events and converts them ([`Incoming::from_command`],
//! [`Incoming::from_block_actions`]); when slack-morphism cannot decode an
//! envelope's payload, the raw JSON is parsed here instead
//! ([`Incoming::from_interaction_json`]), so no button press is lost to a
//! block type the library does not know.

use serde::Deserialize;
use slack_morphism::events::{SlackInteractionActionContainer, SlackInteractionBlockActionsEvent};
use slack_morphism::prelude::SlackCommandEvent;
use tradebox_core::pipeline::Input;

/// One request from Slack, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// What makes a delivery unique: Slack's `trigger_id` (the same in a
    /// redelivered envelope or a retried HTTP request).
    pub key: String,
    pub user: String,
    pub channel: String,
    /// Where to post with `response_url` when the bot cannot post.
    pub response_url: Option<url::Url>,
    /// The thread to answer in (a Run button under a threaded message).
    pub thread_ts: Option<String>,
    pub input: Input,
}

/// Why a payload was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload does not decode: {0}")]
    Decode(String),
    #[error("the payload lacks {0}")]
    Missing(&'static str),
    /// A well-formed interaction tradebox has no use for (not an error to
    /// report, just acknowledged).
    #[error("ignored: {0}")]
    Ignored(String),
}

/// A slash command as posted to `/slack/commands`.
#[derive(Debug, Deserialize)]
struct CommandForm {
    command: String,
    #[serde(default)]
    text: String,
    user_id: String,
    channel_id: String,
    #[serde(default)]
    response_url: Option<String>,
    trigger_id: String,
}

/// The parts of a `block_actions` payload tradebox reads.
#[derive(Debug, Deserialize)]
struct BlockActions {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<IdOnly>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    channel: Option<IdOnly>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<Action>,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Container {
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    thread_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    thread_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    action_ts: Option<String>,
}

fn parse_url(url: Option<String>) -> Option<url::Url> {
    url.and_then(|u| url::Url::parse(&u).ok())
}

impl Incoming {
    /// A slash command from its form body (HTTP mode).
    pub fn from_command_form(body: &[u8]) -> Result<Incoming, PayloadError> {
        let form: CommandForm =
            serde_urlencoded::from_bytes(body).map_err(|e| PayloadError::Decode(e.to_string()))?;
        Ok(Incoming {
            key: form.trigger_id,
            user: form.user_id,
            channel: form.channel_id,
            response_url: parse_url(form.response_url),
            thread_ts: None,
            input: Input::Slash {
                command: form.command,
                text: form.text,
            },
        })
    }

    /// An interaction from the `payload` field of its form body (HTTP mode).
    pub fn from_interaction_form(body: &[u8]) -> Result<Incoming, PayloadError> {
        #[derive(Deserialize)]
        struct Form {
            payload: String,
        }
        let form: Form =
            serde_urlencoded::from_bytes(body).map_err(|e| PayloadError::Decode(e.to_string()))?;
        Incoming::from_interaction_json(&form.payload)
    }

    /// An interaction payload as JSON text.
    pub fn from_interaction_json(json: &str) -> Result<Incoming, PayloadError> {
        let p: BlockActions =
            serde_json::from_str(json).map_err(|e| PayloadError::Decode(e.to_string()))?;
        if p.kind != "block_actions" {
            return Err(PayloadError::Ignored(format!("a {} interaction", p.kind)));
        }
        let action = p
            .actions
            .into_iter()
            .next()
            .ok_or(PayloadError::Missing("actions"))?;
        let user = p.user.ok_or(PayloadError::Missing("user"))?.id;
        let channel = p
            .channel
            .map(|c| c.id)
            .or_else(|| p.container.as_ref().and_then(|c| c.channel_id.clone()))
            .ok_or(PayloadError::Missing("channel"))?;
        let thread_ts = p
            .container
            .and_then(|c| c.thread_ts)
            .or_else(|| p.message.and_then(|m| m.thread_ts));
        let key = p
            .trigger_id
            .or_else(|| action.action_ts.clone().map(|ts| format!("{user}:{ts}")))
            .ok_or(PayloadError::Missing("trigger_id"))?;
        Ok(Incoming {
            key,
            user,
            channel,
            response_url: parse_url(p.response_url),
            thread_ts,
            input: Input::Action {
                action_id: action.action_id,
                value: action.value.unwrap_or_default(),
            },
        })
    }

    /// A slash command as slack-morphism decoded it (Socket Mode).
    pub fn from_command(ev: &SlackCommandEvent) -> Incoming {
        Incoming {
            key: ev.trigger_id.0.clone(),
            user: ev.user_id.0.clone(),
            channel: ev.channel_id.0.clone(),
            response_url: Some(ev.response_url.0.clone()),
            thread_ts: None,
            input: Input::Slash {
                command: ev.command.0.clone(),
                text: ev.text.clone().unwrap_or_default(),
            },
        }
    }

    /// A button press as slack-morphism decoded it (Socket Mode).
    pub fn from_block_actions(
        ev: &SlackInteractionBlockActionsEvent,
    ) -> Result<Incoming, PayloadError> {
        let action = ev
            .actions
            .as_ref()
            .and_then(|a| a.first())
            .ok_or(PayloadError::Missing("actions"))?;
        let user = ev
            .user
            .as_ref()
            .map(|u| u.id.0.clone())
            .ok_or(PayloadError::Missing("user"))?;
        let container_channel = match &ev.container {
            SlackInteractionActionContainer::Message(m) => m.channel_id.as_ref(),
            SlackInteractionActionContainer::MessageAttachment(m) => m.channel_id.as_ref(),
            SlackInteractionActionContainer::View(_) => None,
        };
        let channel = ev
            .channel
            .as_ref()
            .map(|c| c.id.0.clone())
            .or_else(|| container_channel.map(|c| c.0.clone()))
            .ok_or(PayloadError::Missing("channel"))?;
        let thread_ts = ev
            .message
            .as_ref()
            .and_then(|m| m.origin.thread_ts.as_ref())
            .map(|ts| ts.0.clone());
        Ok(Incoming {
            key: ev.trigger_id.0.clone(),
            user,
            channel,
            response_url: ev.response_url.as_ref().map(|u| u.0.clone()),
            thread_ts,
            input: Input::Action {
                action_id: action.action_id.0.clone(),
                value: action.value.clone().unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_command_form_and_an_action_payload() {
        let body = b"token=x&team_id=T1&channel_id=C1&user_id=U1&command=%2Fanalyze&text=result+%3D+1&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fr%2F1&trigger_id=tr1";
        let c = Incoming::from_command_form(body).unwrap();
        assert_eq!((c.key.as_str(), c.user.as_str()), ("tr1", "U1"));
        assert!(
            matches!(c.input, Input::Slash { ref command, ref text } if command == "/analyze" && text == "result = 1")
        );
        assert_eq!(c.response_url.unwrap().as_str(), "http://127.0.0.1:9/r/1");

        let json = r#"{"type":"block_actions","user":{"id":"U2"},"trigger_id":"tr2",
            "container":{"type":"message","message_ts":"1.2","channel_id":"C9","thread_ts":"1.0"},
            "message":{"ts":"1.2","blocks":[{"type":"brand_new_block"}]},
            "actions":[{"type":"button","action_id":"run_func_weekly","value":"weekly"}]}"#;
        let a = Incoming::from_interaction_json(json).unwrap();
        assert_eq!(a.channel, "C9");
        assert_eq!(a.thread_ts.as_deref(), Some("1.0"));
        assert!(
            matches!(a.input, Input::Action { ref action_id, .. } if action_id == "run_func_weekly")
        );

        let other = r#"{"type":"view_closed","user":{"id":"U2"}}"#;
        assert!(matches!(
            Incoming::from_interaction_json(other),
            Err(PayloadError::Ignored(_))
        ));
        assert!(matches!(
            Incoming::from_command_form(b"command=%2Fanalyze"),
            Err(PayloadError::Decode(_))
        ));
    }

    mod props {
        //! The parsers take whatever a network peer sends: never a panic,
        //! and any command text (with its user and channel) arrives whole.

        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_bytes_are_an_answer_not_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = Incoming::from_command_form(&body);
                let _ = Incoming::from_interaction_form(&body);
                let _ = Incoming::from_interaction_json(&String::from_utf8_lossy(&body));
            }

            #[test]
            fn any_json_shape_is_an_answer_not_a_panic(
                kind in "[a-z_]{0,16}",
                user in proptest::option::of("[A-Z0-9]{0,12}"),
                channel in proptest::option::of("[A-Z0-9]{0,12}"),
                action in proptest::option::of(".{0,40}"),
                value in proptest::option::of(".{0,40}"),
                url in proptest::option::of(".{0,40}"),
            ) {
                let json = serde_json::json!({
                    "type": kind,
                    "user": user.map(|id| serde_json::json!({"id": id})),
                    "channel": channel.map(|id| serde_json::json!({"id": id})),
                    "actions": action.map(|a| vec![serde_json::json!({"action_id": a, "value": value})]),
                    "response_url": url,
                });
                let _ = Incoming::from_interaction_json(&json.to_string());
            }

            #[test]
            fn a_command_form_keeps_any_text_user_and_channel(
                text in ".{0,300}",
                user in "[A-Z0-9]{1,12}",
                channel in "[A-Z0-9]{1,12}",
                trigger in "[a-z0-9.]{1,20}",
            ) {
                let body = serde_urlencoded::to_string([
                    ("command", "/analyze"),
                    ("text", text.as_str()),
                    ("user_id", user.as_str()),
                    ("channel_id", channel.as_str()),
                    ("trigger_id", trigger.as_str()),
                ])
                .unwrap();
                let c = Incoming::from_command_form(body.as_bytes()).unwrap();
                prop_assert_eq!((&c.user, &c.channel, &c.key), (&user, &channel, &trigger));
                match c.input {
                    Input::Slash { command, text: got } => {
                        prop_assert_eq!(command, "/analyze");
                        prop_assert_eq!(got, text);
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
