//! Who may do what: actors, contexts, roles, and the caller behind each request.
//!
//! - An **actor** (`{id, pubkey, address[]}`) is an identity: a secp256k1 public key
//!   with a client-chosen `u32` id. A pubkey belongs to at most one actor.
//! - A **context** (`{id, admins[], readers[], executors[]}`) is a tenant: actor ids per
//!   role. Every job belongs to one context through its `context_id` text: `"7"` is
//!   context 7. A `context_id` that names no registered context (the default
//!   `"default"`, any other text, a number nobody registered) belongs to no tenant:
//!   only server admins reach its jobs.
//! - Roles nest: an admin may do what an executor may, an executor what a reader may.
//!   Readers read jobs, outputs, logs and events; executors also create, start, stop
//!   and delete jobs; admins also change the context.
//! - A **caller** ([`Caller`]) is who a request acts as: a server admin (the embedded
//!   default with no token configured, or a token granted `admin`) or an actor (a token
//!   granted to an actor id, or a WebSocket connection that proved a key the actor
//!   owns). A proven key that no actor owns changes nothing but the `caller_id` stamped
//!   on the jobs the connection creates: it keeps what its token (or the open default)
//!   grants.
//!
//! Answers never tell an outsider anything about a context: a job or context the caller
//! has no role in answers exactly like one that does not exist ([`Denied::NotFound`]);
//! a role too small for the operation, where the caller may see the thing, is
//! [`Denied::Forbidden`].
//!
//! The records live in a [`Directory`] (`directory.rs`): in memory, or in Redis beside
//! the jobs, so every supervisor instance on one Redis enforces the same rules.

mod directory;

use serde::{Deserialize, Serialize};

pub use self::directory::{Directory, DirectoryError, MemoryDirectory, RedisDirectory};

/// Actor ids listed in one role of a context, at most. Bounded so that a context record
/// stays small (it is read on every job access).
pub const MAX_ROLE_MEMBERS: usize = 1000;
/// Addresses of one actor, at most.
pub const MAX_ADDRESSES: usize = 64;

/// An identity (the spec's `Actor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Client-chosen id.
    pub id: u32,
    /// Hex of the compressed SEC1 secp256k1 public key (canonical form).
    pub pubkey: String,
    /// IP addresses (IPv4 or IPv6 text) the actor is reached at.
    pub address: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// What `actor.create` takes (the spec's `ActorCreate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorCreate {
    /// Client-chosen id.
    pub id: u32,
    /// Hex of a SEC1 secp256k1 public key, compressed or not.
    pub pubkey: String,
    /// IP addresses.
    #[serde(default)]
    pub address: Vec<String>,
}

/// A tenant (the spec's `Context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Client-chosen id.
    pub id: u32,
    /// Actor ids that may change the context (and do what executors do).
    pub admins: Vec<u32>,
    /// Actor ids that may read its jobs.
    pub readers: Vec<u32>,
    /// Actor ids that may create, start, stop and delete its jobs (and read them).
    pub executors: Vec<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// What `context.create` takes (the spec's `ContextCreate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextCreate {
    /// Client-chosen id.
    pub id: u32,
    /// At least one: a context nobody administers could never be changed again.
    pub admins: Vec<u32>,
    /// Readers.
    #[serde(default)]
    pub readers: Vec<u32>,
    /// Executors.
    #[serde(default)]
    pub executors: Vec<u32>,
}

/// A role in a context; ordered: each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads jobs, outputs, logs, events.
    Reader,
    /// Also creates, starts, stops and deletes jobs.
    Executor,
    /// Also changes the context.
    Admin,
}

impl Context {
    /// The highest role of `actor` in this context, if any.
    pub fn role_of(&self, actor: u32) -> Option<Role> {
        if self.admins.contains(&actor) {
            Some(Role::Admin)
        } else if self.executors.contains(&actor) {
            Some(Role::Executor)
        } else if self.readers.contains(&actor) {
            Some(Role::Reader)
        } else {
            None
        }
    }
}

/// Who a request acts as (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// May do everything, server-wide operations included: the embedded default with
    /// no token configured, or a token granted `admin`.
    ServerAdmin,
    /// A registered actor, by a token granted to its id or by a proven key it owns.
    Actor {
        /// The actor's id.
        id: u32,
        /// Its public key, if registered.
        pubkey: Option<String>,
    },
}

impl Caller {
    /// The text stamped into the `caller_id` of the jobs an actor creates.
    pub fn caller_id(&self) -> Option<String> {
        match self {
            Caller::ServerAdmin => None,
            Caller::Actor {
                pubkey: Some(key), ..
            } => Some(key.clone()),
            Caller::Actor { id, pubkey: None } => Some(format!("actor:{id}")),
        }
    }
}

/// Why a caller may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The caller has no role where the thing lives: answer as if it did not exist.
    NotFound,
    /// The caller may see the thing but its role is too small for this operation.
    Forbidden,
}

pub use crate::job::context_number;

/// May `caller` do what needs `need` in `context` (`None`: the job's `context_id`
/// names no registered context)?
pub fn check(caller: &Caller, context: Option<&Context>, need: Role) -> Result<(), Denied> {
    let id = match caller {
        Caller::ServerAdmin => return Ok(()),
        Caller::Actor { id, .. } => *id,
    };
    match context.and_then(|c| c.role_of(id)) {
        None => Err(Denied::NotFound),
        Some(role) if role >= need => Ok(()),
        Some(_) => Err(Denied::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            id: 7,
            admins: vec![1],
            readers: vec![3],
            executors: vec![2],
            created_at: 0,
            updated_at: 0,
        }
    }

    fn actor(id: u32) -> Caller {
        Caller::Actor { id, pubkey: None }
    }

    /// Each caller x needed role -> the answer. The table is the rule.
    #[test]
    fn roles_nest_and_outsiders_learn_nothing() {
        use Denied::{Forbidden, NotFound};
        use Role::{Admin, Executor, Reader};
        let ctx = context();
        let cases: [(Caller, [Result<(), Denied>; 3]); 5] = [
            (Caller::ServerAdmin, [Ok(()), Ok(()), Ok(())]),
            (actor(1), [Ok(()), Ok(()), Ok(())]),
            (actor(2), [Ok(()), Ok(()), Err(Forbidden)]),
            (actor(3), [Ok(()), Err(Forbidden), Err(Forbidden)]),
            (actor(4), [Err(NotFound), Err(NotFound), Err(NotFound)]),
        ];
        for (caller, want) in cases {
            for (need, want) in [Reader, Executor, Admin].into_iter().zip(want) {
                assert_eq!(
                    check(&caller, Some(&ctx), need),
                    want,
                    "{caller:?} {need:?}"
                );
            }
        }
        // A job in no registered context: server admins only.
        assert_eq!(check(&Caller::ServerAdmin, None, Role::Admin), Ok(()));
        assert_eq!(check(&actor(1), None, Role::Reader), Err(NotFound));
    }

    #[test]
    fn only_canonical_numbers_name_a_context() {
        assert_eq!(context_number("7"), Some(7));
        assert_eq!(context_number("4294967295"), Some(u32::MAX));
        for other in ["default", "07", "+7", "-1", "4294967296", "", " 7", "7 "] {
            assert_eq!(context_number(other), None, "{other:?}");
        }
    }

    #[test]
    fn callers_stamp_jobs_with_their_key() {
        let with_key = Caller::Actor {
            id: 5,
            pubkey: Some("02aa".into()),
        };
        assert_eq!(with_key.caller_id().as_deref(), Some("02aa"));
        assert_eq!(actor(5).caller_id().as_deref(), Some("actor:5"));
        assert_eq!(Caller::ServerAdmin.caller_id(), None);
    }
}
