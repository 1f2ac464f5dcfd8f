//! Validated identifiers. Every id that reaches the engine from a user or a
//! peer passes through [`Id::parse`], so the rest of the code may rely on the
//! character set (it is used unescaped inside storage keys and in the
//! `epoch:node` ownership encoding).

use std::fmt;

use smol_str::SmolStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::ID_BYTES_MAX;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is {len} bytes; the maximum is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} id {value:?} has a character outside [A-Za-z0-9._-]")]
    BadChar { kind: &'static str, value: String },
    #[error("{kind} id {value:?} is made only of dots; ids need another character")]
    OnlyDots { kind: &'static str, value: String },
}

/// Checks the shared id rules: 1..=ID_BYTES_MAX bytes of `[A-Za-z0-9._-]`,
/// not all of them dots.
///
/// The character set keeps ids safe as storage-key segments (no `/`), in the
/// `epoch:node` owner string (no `:`) and in URLs without escaping. Ids made
/// only of dots (`.`, `..`) are refused because URL and path normalisation
/// treats them as "this" and "parent" segments: `/v1/rooms/..` would name a
/// different route.
pub fn validate_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > ID_BYTES_MAX {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max: ID_BYTES_MAX,
        });
    }
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok {
        return Err(IdError::BadChar {
            kind,
            value: value.chars().take(ID_BYTES_MAX).collect(),
        });
    }
    if value.bytes().all(|b| b == b'.') {
        return Err(IdError::OnlyDots {
            kind,
            value: value.to_string(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        // Inline up to 23 bytes, shared beyond: ids are cloned far more
        // often than made (every message names its sender; SWIM clones both
        // member addresses it compares, for each update it applies, so at
        // 200 members a clone and a drop per member per update). A short
        // id's clone is a copy, with none of an `Arc`'s atomic counting
        // (13 % of a 200-replica simulation, measured); a long one is an
        // `Arc`, never a `String`'s allocation. Order, equality and hash
        // are the string's, as before.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(SmolStr);

        impl $name {
            /// Validates and wraps `value`.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok(Self(value.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        // A string with the shared id rules, so a client can check an id
        // before sending it.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::id_schema($kind)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A room (one automerge document).
    RoomId, "room"
);
id_type!(
    /// A call session of one participant inside a room; unique per join.
    SessionId, "session"
);
id_type!(
    /// An end user.
    UserId, "user"
);
id_type!(
    /// A media node (SFU, gateway) or replica.
    NodeId, "node"
);
id_type!(
    /// The tenant / application that owns a room.
    TenantId, "tenant"
);
id_type!(
    /// A published media track.
    TrackId, "track"
);
id_type!(
    /// A deployment region.
    RegionId, "region"
);

/// The automerge actor of (node, store, incarnation): a change made in
/// memory but lost in a crash can never collide with a different change of
/// the same actor and sequence number made after the restart, and neither
/// can one made by the same node on a new store (its data wiped or lost):
/// that store starts again at incarnation 1, but with another identity.
/// Two changes of one actor and sequence number are refused by automerge
/// wherever the other is held, so such a collision would split the room
/// for good. The replica's seed is mixed in too: `Engine` draws it from the
/// operating system on every start, so a store restored from a backup,
/// which repeats an incarnation its original already used, writes under
/// new actors as well. `store` is `None` for a store written by a build
/// that kept no identity: its actors stay what they were.
pub fn actor_for(
    node: &NodeId,
    store: Option<&StoreId>,
    incarnation: u64,
    seed: u64,
) -> automerge::ActorId {
    let mut hasher = blake3::Hasher::new();
    match store {
        None => {
            hasher.update(b"chorus-actor-v1\0");
            hasher.update(node.as_str().as_bytes());
        }
        Some(store) => {
            hasher.update(b"chorus-actor-v2\0");
            hasher.update(node.as_str().as_bytes());
            hasher.update(b"\0");
            hasher.update(&store.0);
            hasher.update(&seed.to_be_bytes());
        }
    }
    hasher.update(&incarnation.to_be_bytes());
    automerge::ActorId::from(&hasher.finalize().as_bytes()[..16])
}

/// A store's identity, drawn when the store is new and kept for its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// A new store's identity, from what tells two lives of one node apart
    /// without randomness in the replica: the driver's seed (drawn from
    /// the operating system by `Engine`, per node by the simulator) and the
    /// time the store was first opened.
    pub fn new(node: &NodeId, seed: u64, now_ms: u64) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"chorus-store-v1\0");
        hasher.update(node.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(&seed.to_be_bytes());
        hasher.update(&now_ms.to_be_bytes());
        let mut id = [0; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        Self(id)
    }
}

/// The HLC tie-breaker of a node: stable across restarts.
pub fn hlc_actor(node: &NodeId) -> u64 {
    let digest = blake3::hash(node.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        assert!(RoomId::parse("room-1.a_B").is_ok());
    }

    #[test]
    fn rejects_bad_ids_with_a_reason() {
        assert_eq!(RoomId::parse(""), Err(IdError::Empty { kind: "room" }));
        assert!(matches!(NodeId::parse("a:b"), Err(IdError::BadChar { .. })));
        assert!(matches!(UserId::parse("a/b"), Err(IdError::BadChar { .. })));
        let long = "x".repeat(ID_BYTES_MAX + 1);
        assert!(matches!(
            SessionId::parse(long),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn rejects_ids_made_only_of_dots() {
        for dots in [".", "..", "..."] {
            let err = RoomId::parse(dots).expect_err("dots only");
            assert_eq!(
                err,
                IdError::OnlyDots {
                    kind: "room",
                    value: dots.into()
                }
            );
            assert!(err.to_string().contains("only of dots"), "{err}");
            assert!(SessionId::parse(dots).is_err());
            assert!(UserId::parse(dots).is_err());
            assert!(NodeId::parse(dots).is_err());
            assert!(TrackId::parse(dots).is_err());
        }
        assert!(RoomId::parse("..a").is_ok(), "a dot among others is fine");
        assert!(serde_json::from_str::<RoomId>("\"..\"").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: RoomId = serde_json::from_str("\"r1\"").expect("valid id");
        assert_eq!(ok.as_str(), "r1");
        assert!(serde_json::from_str::<RoomId>("\"r 1\"").is_err());
    }
}
