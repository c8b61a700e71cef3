//! # hero-runner
//!
//! Will hold the runner SDK (handlers registered by function name, served over stdio or
//! TCP with multiplexing, deadlines and cancellation) and the `hero-runner` binary that
//! executes scripts. See issue "Runner SDK and the hero-runner binary".
