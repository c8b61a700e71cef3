//! The binary's own modules (not part of the library): the `serve` flags and the client
//! subcommands.

pub(crate) mod client;
pub(crate) mod serve_args;
