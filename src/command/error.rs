//! Errors a command can answer with, worded as Redis words them. They become
//! RESP error replies at the edge; nothing here closes a connection.

use std::borrow::Cow;

use crate::protocol::Reply;
use crate::store::{OpError, WriteError};

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No command by that name.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name as the client sent it.
        name: String,
        /// The first arguments, each quoted as Redis quotes them.
        args: String,
    },
    /// A known container command with an unknown subcommand.
    #[error("ERR unknown subcommand '{sub}'. Try {container} HELP.")]
    UnknownSubcommand {
        /// The container command (`CLIENT`).
        container: String,
        /// The subcommand as sent.
        sub: String,
    },
    /// Arity check failed.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    /// Arguments that do not follow the command's grammar.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument that should be an integer is not.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// Authentication is required first.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// The node is still loading its data.
    #[error("LOADING flagstaff is loading the dataset in memory")]
    Loading,
    /// A flag or segment definition failed validation.
    #[error("INVALID {0}")]
    Invalid(String),
    /// An IFVERSION precondition failed.
    #[error("CONFLICT {0}")]
    Conflict(String),
    /// A generic error; the text follows `ERR `.
    #[error("ERR {0}")]
    Err(Cow<'static, str>),
    /// An error with its own code already at the start of the text.
    #[error("{0}")]
    Coded(Cow<'static, str>),
}

impl CommandError {
    /// A generic `ERR` error.
    pub fn err(msg: impl Into<Cow<'static, str>>) -> Self {
        CommandError::Err(msg.into())
    }

    /// The unknown-command error for `args` (name first), as Redis words it.
    pub fn unknown_command(args: &[bytes::Bytes]) -> Self {
        let name = String::from_utf8_lossy(&args[0]).into_owned();
        let mut quoted = String::new();
        for a in args[1..].iter().take(32) {
            let s = String::from_utf8_lossy(a);
            let s: String = s.chars().take(128).collect();
            quoted.push('\'');
            quoted.push_str(&s);
            quoted.push_str("' ");
        }
        CommandError::UnknownCommand { name, args: quoted }
    }
}

impl From<CommandError> for Reply {
    fn from(e: CommandError) -> Self {
        Reply::Error(e.to_string().into())
    }
}

/// A failed write as the writer sees it: a WATCH conflict is EXEC's nil array,
/// anything else its Redis-style error line.
impl From<WriteError> for Reply {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::WatchFailed => Reply::NilArray,
            other => Reply::Error(other.to_string().into()),
        }
    }
}

/// A refused operation as its error line.
impl From<OpError> for Reply {
    fn from(e: OpError) -> Self {
        Reply::Error(e.to_string().into())
    }
}
