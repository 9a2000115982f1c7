//! The command layer of tradebox: what `/analyze`, `/savefunc`, `/runfunc`,
//! `/listfuncs` and `/delfunc` mean, independent of where they were typed
//! (Slack, the web console, `tradebox chat`). Nothing here knows Slack
//! exists; front ends render the reply model.

pub mod audit;
pub mod command;
pub mod config;
pub mod deliveries;
pub mod executor;
pub mod functions;
pub mod leases;
pub mod metrics;
pub mod params;
pub mod permissions;
pub mod pipeline;
pub mod ratelimit;
pub mod reply;
pub mod store;
pub mod text;
