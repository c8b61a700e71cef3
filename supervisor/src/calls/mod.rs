//! Building blocks of the calls API (issue 16): ECIES encryption of call payloads.

pub mod ecies;
