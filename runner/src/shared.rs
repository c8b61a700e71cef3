//! The state a runner's connections share, in a module of its own so that `runner`
//! (which builds it and starts connections) and `connection` (which serves them) both use
//! it without depending on each other in a circle.

use std::collections::HashMap;
use std::sync::Arc;

use hero_protocol::Hello;

use crate::config::RunnerConfig;
use crate::handler::Handler;

/// What every connection of a runner shares: its config and its handlers by function
/// name. Behind an `Arc` in [`Runner`](crate::Runner) and in each connection.
pub(crate) struct Shared {
    pub(crate) config: RunnerConfig,
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Shared {
    pub(crate) fn new(config: RunnerConfig, handlers: HashMap<String, Arc<dyn Handler>>) -> Self {
        Shared { config, handlers }
    }

    /// The handler of `function_name`: exact match first, then ignoring ASCII case.
    pub(crate) fn handler(&self, function_name: &str) -> Option<Arc<dyn Handler>> {
        if let Some(h) = self.handlers.get(function_name) {
            return Some(h.clone());
        }
        self.handlers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(function_name))
            .map(|(_, h)| h.clone())
    }

    /// This runner's `hello`: its functions (sorted), limits and extensions.
    pub(crate) fn hello(&self) -> Hello {
        let mut functions: Vec<String> = self.handlers.keys().cloned().collect();
        functions.sort();
        Hello {
            version: Some(self.config.version.clone()),
            functions,
            max_in_flight: Some(u32::try_from(self.config.max_in_flight).unwrap_or(u32::MAX)),
            extensions: vec!["log".to_owned()],
            ..Hello::new(self.config.name.clone())
        }
    }
}
