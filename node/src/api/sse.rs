//! `GET /v1/changes`: the change feed as Server-Sent Events.
//!
//! Every event's `id:` is the HLC stamp (text form) of the change-log entry
//! that holds its changes, so ids survive restarts. A consumer that
//! reconnects with `Last-Event-ID` gets every entry of the persisted log
//! after that stamp, then the live events, each once. If the log was trimmed
//! past that stamp, a `reset` event comes first (re-read the rooms), then
//! everything from the oldest entry held.
//!
//! Live events carry `{room, origin, changes}` (what changed). The log keeps
//! only the room and the change hashes, so a replayed event is
//! `{room, origin: "replayed", changes: [], hashes}`: the consumer re-reads
//! that room.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;

use chorus_engine::hlc::Timestamp;
use chorus_engine::rooms::LogEntry;
use chorus_engine::RoomId;

use super::{call, ApiError, ApiState};
pub use crate::limits::REPLAY_PAGE_ENTRIES;
use chorus_engine::{RecvError, StampedChange, Subscription};

/// Server-Sent Events of room changes: `{room, origin, changes}` per
/// event, ids that survive restarts; resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/changes", tag = "rooms",
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event seen: replay from after it")),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        super::doc::Failures),
    security(("token" = [])))]
pub(super) async fn changes(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| Timestamp::parse(v.trim()))
                .ok_or_else(|| {
                    ApiError::bad("Last-Event-ID: expected an event id of this feed (a stamp)")
                })?,
        ),
        None => None,
    };
    // Subscribe before reading the log: an event between the two is then in
    // both, and the live copy is skipped by its stamp.
    let live = state.engine.subscribe_stamped();
    let feed = Feed {
        state,
        live,
        cursor: after,
        replaying: after.is_some(),
        ready: VecDeque::new(),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Whether resuming after `cursor` missed entries that the log no longer
/// holds: entries up to `horizon` (inclusive) were trimmed.
pub fn resume_missed(cursor: Option<Timestamp>, horizon: Option<Timestamp>) -> bool {
    matches!((cursor, horizon), (Some(cursor), Some(horizon)) if cursor < horizon)
}

/// One consumer's position in the feed.
struct Feed {
    state: ApiState,
    live: Subscription<StampedChange>,
    /// The stamp of the newest entry sent (or the consumer's
    /// `Last-Event-ID`): the log is replayed after it, live events at or
    /// before it are duplicates.
    cursor: Option<Timestamp>,
    /// Reading the stored log rather than live events.
    replaying: bool,
    ready: VecDeque<SseEvent>,
}

impl Feed {
    /// The next event; `None` ends the stream (the daemon stopped or failed;
    /// the consumer reconnects with its last id).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.replaying {
                self.replay_page().await?;
                continue;
            }
            match self.live.recv().await {
                Ok(change) => {
                    if let Some(event) = self.accept(change) {
                        return Some(event);
                    }
                }
                // Every stamped live event is in the log: catch up there.
                Err(RecvError::Lagged { .. }) if self.cursor.is_some() => self.replaying = true,
                Err(RecvError::Lagged { .. }) => {
                    return Some(reset("this subscriber fell behind; re-read the rooms"));
                }
                Err(RecvError::Closed | RecvError::Empty) => return None,
            }
        }
    }

    /// A live event, unless it was already sent from the log.
    fn accept(&mut self, change: StampedChange) -> Option<SseEvent> {
        let json = serde_json::to_string(&change.change).ok()?;
        let event = SseEvent::default().data(json);
        match change.stamp {
            Some(stamp) if self.cursor.is_some_and(|c| stamp <= c) => None,
            Some(stamp) => {
                self.cursor = Some(stamp);
                Some(event.id(stamp.to_string()))
            }
            // A write that stored nothing: no log entry, no id.
            None => Some(event),
        }
    }

    /// Queues the next page of the stored log after the cursor (or a reset
    /// and the oldest page, if the log was trimmed past it).
    async fn replay_page(&mut self) -> Option<()> {
        let after = self.cursor;
        let (entries, horizon) = call(&self.state, move |e| {
            e.change_log(after, REPLAY_PAGE_ENTRIES)
        })
        .await
        .ok()?;
        if resume_missed(after, horizon) {
            self.ready.push_back(reset(
                "the change log no longer holds events after that id; re-read the rooms",
            ));
            self.cursor = None;
            return Some(());
        }
        if entries.len() < REPLAY_PAGE_ENTRIES {
            self.replaying = false;
        }
        for (stamp, entry) in entries {
            self.cursor = Some(stamp);
            self.ready.push_back(replayed(stamp, &entry));
        }
        Some(())
    }
}

fn reset(message: &'static str) -> SseEvent {
    SseEvent::default().event("reset").data(message)
}

/// A replayed event's data (see the module docs).
#[derive(Serialize)]
struct Replayed<'a> {
    room: &'a RoomId,
    origin: &'static str,
    changes: [(); 0],
    hashes: Vec<String>,
}

fn replayed(stamp: Timestamp, entry: &LogEntry) -> SseEvent {
    let data = Replayed {
        room: &entry.room,
        origin: "replayed",
        changes: [],
        hashes: entry.hashes.iter().map(ToString::to_string).collect(),
    };
    // Ids and hex strings only: JSON encoding cannot fail.
    let json = serde_json::to_string(&data).unwrap_or_default();
    SseEvent::default().id(stamp.to_string()).data(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(wall_ms: u64) -> Timestamp {
        Timestamp {
            wall_ms,
            logical: 0,
            actor: 1,
        }
    }

    #[test]
    fn resuming_before_the_trim_horizon_missed_entries() {
        assert!(!resume_missed(None, None), "a new consumer misses nothing");
        assert!(
            !resume_missed(None, Some(at(5))),
            "a new consumer starts live"
        );
        assert!(!resume_missed(Some(at(3)), None), "nothing trimmed yet");
        assert!(
            !resume_missed(Some(at(5)), Some(at(5))),
            "the consumer saw the newest trimmed entry"
        );
        assert!(!resume_missed(Some(at(9)), Some(at(5))));
        assert!(resume_missed(Some(at(4)), Some(at(5))), "entry 5 is gone");
    }

    #[test]
    fn replayed_events_name_the_room_and_changes() {
        let entry = LogEntry {
            room: RoomId::parse("r1").expect("valid"),
            hashes: vec![chorus_engine::Head([0xab; 32])],
        };
        let data = Replayed {
            room: &entry.room,
            origin: "replayed",
            changes: [],
            hashes: entry.hashes.iter().map(ToString::to_string).collect(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&data).expect("json")).expect("parses");
        assert_eq!(json["room"], "r1");
        assert_eq!(json["origin"], "replayed");
        assert_eq!(json["changes"], serde_json::json!([]));
        assert_eq!(json["hashes"][0], "ab".repeat(32));
    }
}
