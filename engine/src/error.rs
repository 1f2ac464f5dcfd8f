//! The engine's error type. Each variant is something a caller can act on;
//! none of them is a panic in disguise.

use crate::ids::{IdError, RoomId, SessionId, TrackId, UserId};
use crate::model::Owner;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("room {0} does not exist")]
    UnknownRoom(RoomId),
    #[error("room {0} already exists")]
    RoomExists(RoomId),
    #[error("room {0} has ended")]
    RoomEnded(RoomId),
    #[error("room {0} was purged and cannot be written again")]
    RoomPurged(RoomId),
    #[error("session {session} does not exist in room {room} (it never joined, or it left long ago: past the prunes its compacted room remembers)")]
    UnknownSession { room: RoomId, session: SessionId },
    #[error("session {session} already exists in room {room}; a re-join needs a new session id")]
    DuplicateSession { room: RoomId, session: SessionId },
    #[error("session {session} in room {room} has left; a re-join needs a new session id")]
    SessionLeft { room: RoomId, session: SessionId },
    #[error("room {room} is full ({max} participants)")]
    OverCapacity { room: RoomId, max: u32 },
    #[error("user {user} may not publish in room {room}")]
    NotPermitted { room: RoomId, user: UserId },
    #[error("track {track} is not published by session {session}")]
    UnknownTrack { session: SessionId, track: TrackId },
    #[error(
        "owner {given:?} does not supersede the current owner {current:?}; use a higher epoch"
    )]
    StaleOwner { current: Owner, given: Owner },
    #[error("room document has schema version {found}; this build reads version 1")]
    SchemaVersion { found: u64 },
    #[error("room {room} document is malformed: {reason}")]
    Corrupt { room: RoomId, reason: String },
    #[error("resume of session {session} refused: {reason}")]
    ResumeRefused {
        session: SessionId,
        reason: &'static str,
    },
    #[error("automerge bytes rejected: {0}")]
    Automerge(String),
    #[error("automerge bytes refused: they decompress to more than {max} bytes")]
    DecompressedTooLarge { max: u64 },
    #[error("change {change} to room {room} refused at {path}: {reason}")]
    Refused {
        room: RoomId,
        change: crate::model::Head,
        path: String,
        reason: String,
    },
    #[error("import of {len} bytes refused: the limit is {max}")]
    ImportTooLarge { len: usize, max: usize },
    #[error("network: {0}")]
    Network(String),
    #[error("the replica stopped: {0}")]
    Stopped(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

impl From<automerge::AutomergeError> for Error {
    fn from(err: automerge::AutomergeError) -> Self {
        Error::Automerge(err.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
