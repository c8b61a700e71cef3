//! Key namespaces: the default one (`<prefix>`, the canonical names) and one per
//! numbered context (`<prefix>:{c<N>}`, hash tag `{c<N>}`), which a job's id names
//! ([`JobId::context`]). See the module docs of `redis` for the key layout.
//!
//! On a Redis Cluster ([`Layout`] with `cluster`), every key carries a hash tag: the
//! default namespace is `<prefix>:{d}`, and the server-wide keys are under
//! `<prefix>:{s}:` (one slot); numbered contexts keep `<prefix>:{c<N>}`.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::job::JobId;

/// A namespace's key prefix: `prefix` itself for the default one (`None`), else
/// `<prefix>:{c<N>}`.
pub(super) fn space(prefix: &str, context: Option<u32>) -> String {
    match context {
        Some(n) => format!("{prefix}:{{c{n}}}"),
        None => prefix.to_owned(),
    }
}

/// The prefix of the server-wide keys: `prefix` itself on one Redis, `<prefix>:{s}` on a
/// cluster (one hash tag, so scripts over several server-wide keys stay in one slot).
pub(crate) fn server_prefix(prefix: &str, cluster: bool) -> String {
    if cluster {
        format!("{prefix}:{{s}}")
    } else {
        prefix.to_owned()
    }
}

/// The key names of one store: its prefix and whether it is on a cluster.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) prefix: String,
    pub(super) cluster: bool,
}

impl Layout {
    /// A namespace's key prefix: see [`space`]; on a cluster, the default namespace is
    /// `<prefix>:{d}`.
    pub(super) fn space(&self, context: Option<u32>) -> String {
        match context {
            None if self.cluster => format!("{}:{{d}}", self.prefix),
            c => space(&self.prefix, c),
        }
    }

    /// The namespace of job `id`.
    pub(super) fn space_of(&self, id: JobId) -> String {
        self.space(id.context())
    }

    /// A server-wide key: `<prefix>:<name>`, on a cluster `<prefix>:{s}:<name>`.
    pub(super) fn server_key(&self, name: &str) -> String {
        format!("{}:{name}", server_prefix(&self.prefix, self.cluster))
    }
}

/// Whether any numbered namespace holds jobs, as far as this process knows: a claim
/// looks beyond the default queue only then, so a store without numbered contexts pays
/// nothing for them. Learnt from the store (`<prefix>:spaces`), from this process's
/// own creates, and from `work` events naming a context; forgotten when events may have
/// been missed (a resubscribe), so the next claim asks the store again.
#[derive(Debug, Default)]
pub(super) struct Numbered(AtomicU8);

const UNKNOWN: u8 = 0;
const NONE: u8 = 1;
const SOME: u8 = 2;

impl Numbered {
    /// `Some(true)`: numbered namespaces exist; `Some(false)`: none did when last
    /// asked and no event said otherwise since; `None`: ask the store.
    pub(super) fn known(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            NONE => Some(false),
            SOME => Some(true),
            _ => None,
        }
    }

    /// A numbered namespace holds (or held) jobs.
    pub(super) fn seen(&self) {
        self.0.store(SOME, Ordering::Release);
    }

    /// The store said whether any numbered namespace exists. An event that said so
    /// meanwhile wins.
    pub(super) fn learnt(&self, some: bool) {
        let new = if some { SOME } else { NONE };
        let _ = self
            .0
            .compare_exchange(UNKNOWN, new, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Events may have been missed: "none" is no longer known.
    pub(super) fn forget(&self) {
        let _ = self
            .0
            .compare_exchange(NONE, UNKNOWN, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_named_from_ids() {
        assert_eq!(space("hero", None), "hero");
        assert_eq!(space("hero", Some(42)), "hero:{c42}");
        let one = Layout {
            prefix: "hero".into(),
            cluster: false,
        };
        assert_eq!(one.space(None), "hero");
        assert_eq!(one.server_key("spaces"), "hero:spaces");
        let cluster = Layout {
            prefix: "hero".into(),
            cluster: true,
        };
        assert_eq!(cluster.space(None), "hero:{d}");
        assert_eq!(cluster.space(Some(3)), "hero:{c3}");
        assert_eq!(one.space_of(JobId::new()), "hero");
        assert_eq!(one.space_of(JobId::new_in(Some(7))), "hero:{c7}");
        assert_eq!(cluster.server_key("ready:SAL"), "hero:{s}:ready:SAL");
    }

    #[test]
    fn numbered_is_forgotten_only_while_it_says_none() {
        let n = Numbered::default();
        assert_eq!(n.known(), None);
        n.learnt(false);
        assert_eq!(n.known(), Some(false));
        n.forget();
        assert_eq!(n.known(), None);
        n.seen();
        n.learnt(false); // a stale answer does not undo an event
        n.forget();
        assert_eq!(n.known(), Some(true));
    }
}
