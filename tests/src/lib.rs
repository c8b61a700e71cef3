//! # hero-tests
//!
//! End-to-end tests across real processes (supervisor, runners, `redis-server`) live in
//! `tests/tests/`. This library is empty on purpose.
