//! Slack front end of tradebox: Block Kit rendering of replies
//! ([`blocks`]); the transport (Socket Mode, HTTP events, uploads) is to
//! come.

pub mod blocks;

pub use blocks::{escape_mrkdwn, render, Rendered, Upload};
