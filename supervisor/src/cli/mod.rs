//! The binary's own modules (not part of the library): the `serve` flags, the client
//! subcommands, logging.

pub(crate) mod client;
pub(crate) mod logging;
pub(crate) mod serve_args;
