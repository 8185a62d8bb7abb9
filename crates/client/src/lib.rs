//! Everything that talks to a coordinator from outside: `rbk submit`,
//! `rbk build` (which talks to an in-process coordinator the same way),
//! `rbk worker` and `rbk cache`.
//!
//! - [`tls`]: coordinator URL → connection (`https://` with the system
//!   roots and an explicit extra CA, [`ClientTls`]);
//! - [`bearer`]: the tenant token on a request;
//! - [`leader`]: finding and following the leader of a replicated
//!   coordinator;
//! - [`images`]: the farm resolves and pulls `FROM` images and pushes
//!   results;
//! - [`remote`]: a content store over the coordinator's Content service;
//! - [`submit`]: the submit driver: send a planned build, follow its
//!   events, cancel on Ctrl-C;
//! - [`reattach`]: following a build to a new leader after a failover;
//! - [`ssh_agents`]: serving `--ssh` agents to a build's steps;
//! - [`progress`]: BuildKit-style progress lines.

pub mod bearer;
mod error;
pub mod images;
pub mod leader;
pub mod progress;
pub mod reattach;
pub mod remote;
pub mod ssh_agents;
pub mod submit;
pub mod tls;

pub use error::{BadToken, SshError, SubmitError};
pub use progress::{Progress, ProgressMode};
pub use remote::RemoteStore;
pub use tls::ClientTls;
