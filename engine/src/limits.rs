//! Every limit of the engine, in one place, with the reason for its value.
//! Units come last in the name (`_bytes_max`, `_ms`). Config fields that a
//! deployment may tune have their defaults here too.

/// Longest id of any kind. 64 bytes holds a UUID with a prefix and keeps
/// storage keys short.
pub const ID_BYTES_MAX: usize = 64;

/// Longest free-form config attribute value. Attributes are labels, not blobs.
pub const ATTR_VALUE_BYTES_MAX: usize = 1024;

/// Most free-form attributes one room may carry.
pub const ATTRS_PER_ROOM_MAX: usize = 64;

/// Most permission entries one room may carry (one per user).
pub const PERMISSIONS_PER_ROOM_MAX: usize = 10_000;

/// Hard ceiling on `max_participants`; real rooms are far below this, and it
/// bounds the work of reading a room.
pub const PARTICIPANTS_PER_ROOM_MAX: u32 = 10_000;

/// Most operations in one `RoomOp::Batch` (one signalling event's writes:
/// a join, its tracks and its permission fit many times over).
pub const BATCH_OPS_MAX: usize = 64;

/// Most tracks one session may publish (audio, video, screen share and data
/// with simulcast fit easily).
pub const TRACKS_PER_SESSION_MAX: usize = 32;

/// Most simulcast layers per track (WebRTC uses up to 3; SVC up to ~4).
pub const SIMULCAST_LAYERS_MAX: u8 = 8;

/// Largest automerge document `import_room` accepts. A room with 10k sessions
/// is a few MiB; 64 MiB stops a hostile blob before automerge parses it.
pub const IMPORT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most bytes automerge bytes from outside (an import, a push, a catch-up
/// response, a snapshot) may decode to once their compressed chunks and
/// columns are inflated. Checked before automerge inflates anything: a
/// 1 MB body could otherwise claim gigabytes. A room with 10k sessions
/// decodes to a few MiB, so this is the import limit again.
pub const DECOMPRESSED_BYTES_MAX: u64 = IMPORT_BYTES_MAX as u64;

/// Most remote changes held per room while waiting for their dependencies.
/// Past this new ones are dropped; anti-entropy fetches them again.
pub const PENDING_CHANGES_PER_ROOM_MAX: usize = 1024;

/// Most bytes of remote changes held per room while waiting for their
/// dependencies: the count bound alone would let 1024 large changes pin
/// memory. 8 MiB is one full snapshot frame.
pub const PENDING_BYTES_PER_ROOM_MAX: usize = 8 * 1024 * 1024;

/// Refused change hashes remembered per hot room, so that a peer resending
/// a refused change (or one that depends on it) costs a hash lookup, not a
/// decode. Past this the oldest are forgotten and would be checked again.
pub const REFUSED_CHANGES_PER_ROOM_MAX: usize = 1024;

/// Raw bytes of a batch of peers' changes whose decodings validation keeps
/// for reading what the batch touches (expanded, a change can take up to
/// about a hundred times its bytes: run-length columns); a larger batch is
/// decoded a second time instead.
pub const DECODED_KEPT_BYTES_MAX: usize = 256 * 1024;

/// Rooms whose genesis change the process remembers (a few hundred bytes
/// each, shared by every replica in the process): past it the least
/// recently used is built again when needed.
pub const GENESIS_MEMO_ROOMS: usize = 4096;

/// Hashes a compacted room remembers of the history it replaced, counting
/// the peers' changes of that history it ignored since (32 bytes each):
/// past it, a peer's further changes of that history wait in `pending`
/// until their writer compacts, as they all did before.
pub const SUPERSEDED_REMEMBERED_MAX: usize = 16_384;

/// Rooms with peers' bases whose cut the replica does not hold, or with
/// purge proofs of another generation, and which peer sent which
/// (`replica::votes`; one bound for each use): past it one room's votes
/// start again (a base or a proof is sent again every sync round while the
/// room differs).
pub const CATCH_UP_VOTES_MAX: usize = 4096;

/// Rooms permitted to catch up on such a base (`RoomSet::permit_catch_up`):
/// past it the permits start again, and are granted again on new votes.
pub const CATCH_UP_PERMITS_MAX: usize = 4096;

/// Distinct peers that must send a base whose cut a replica does not hold
/// before it takes it (or every peer it knows of, if fewer): one peer
/// could make such a base up. The default of `[replica]
/// catch_up_peers_min`.
pub const CATCH_UP_PEERS_MIN: usize = 2;

/// Highest call ownership epoch a write may carry. Epochs count moves of
/// one call (one per failover or drain), so 2^53 - 1 is never reached
/// honestly; it keeps `epoch + 1` from overflowing and stays exact in
/// JavaScript numbers.
pub const EPOCH_MAX: u64 = (1 << 53) - 1;

/// Furthest a local write may move a call's epoch past the current one.
/// Takeovers move it by one; a client that could jump to `EPOCH_MAX` would
/// pin the call (no takeover could follow).
pub const EPOCH_STEP_MAX: u64 = 1024;

/// Compaction does not bother below this many bytes of incremental chunks:
/// rewriting a tiny snapshot on every write would cost more than it saves.
pub const COMPACTION_MIN_CHUNK_BYTES: u64 = 4 * 1024;

/// A room's history is compacted (`room::compact`) once it holds this many
/// changes since its base (`ReplicaConfig::history_changes_max`): a write's cost grows with the history (about
/// 1 ms a join+leave pair at 1,000 cycles, 11 ms at 10,000, release build),
/// and a compaction costs about one pass over it.
pub const HISTORY_CHANGES_DEFAULT: u64 = 1_000;

/// A peer that has not said it can compact is asked again every this many
/// `end_ack_interval_ms` (an older build cannot answer, and counts each
/// question as a frame it cannot decode).
pub const COMPACTION_ASK_EVERY: u64 = 10;

/// Compactions a replica runs off its task at once: each holds a copy of
/// its room, and the rest wait their turn (their requests stay agreed).
pub const COMPACTIONS_OFF_TASK_MAX: usize = 1;

/// Bytes of peers' changes a room being compacted off the replica's task
/// holds back until the compaction is installed (changes that carry a
/// newer base: applied meanwhile, they would compact the room in line).
/// Past it they are dropped; anti-entropy brings them again.
pub const COMPACTION_HELD_BYTES_MAX: usize = 16 << 20;

/// Changes a room may have taken since its compaction's copy was made
/// for them to be carried onto the result on the replica's task; past
/// this, a top-up job carries them off the task first. Carrying costs
/// about a millisecond a change (release build, a room whose history holds
/// about a thousand changes), and a busy room takes tens of changes while
/// a compaction is prepared.
pub const COMPACTION_CARRY_IN_LINE_MAX: u64 = 8;

/// Top-ups of one compaction (above): each carries what the room took
/// while the last one ran, so they shrink as long as carrying is faster
/// than the room's writes; after these the rest is carried in line.
pub const COMPACTION_TOP_UPS_MAX: u32 = 4;

/// Top-ups may go on past `COMPACTION_TOP_UPS_MAX`, up to this many, while
/// each carries fewer changes than the last: carrying is then gaining on
/// the room's writes, and what is left for the replica's task shrinks.
/// When carrying is only about as fast as the writes (a busy room on a
/// busy machine), four rounds could leave hundreds of changes to carry
/// in line: a pause of a second on the room's writes.
pub const COMPACTION_TOP_UPS_SHRINKING_MAX: u32 = 16;

/// Requests whose compaction off the task failed, was given up, or met a
/// different peer's base, that a replica remembers (`no_peer_start`): a
/// peer's base at one of them is not taken as a cue to start the work
/// again.
pub const COMPACTIONS_FAILED_REMEMBERED_MAX: usize = 256;

/// A compaction off the replica's task whose result has not come back
/// after this long (each top-up round has as long again) is given up
/// (counted as failed): its room's held
/// changes apply and the room may be compacted again. The largest room a
/// room may hold compacts in about 4 s in a debug build; a result this
/// late was lost (a driver that never ran the work).
pub const COMPACTION_WORK_MS_MAX: u64 = 120_000;

/// Operations past which a room's peers' changes are applied on a copy off
/// the replica's task (`replica::offload`, with `work_off_task`): the
/// default of `[replica] apply_off_task_ops`.
/// automerge walks the whole operation set to apply a batch: a room of
/// 10 000 sessions (about 150 000 operations) took 150 to 460 ms per batch
/// in a test build on 2 busy cores, past the failure detector's 200 ms
/// probe deadline, and a full sync response into a room a fifth that size
/// still took 180 ms. A room of a few hundred sessions stays in line.
pub const APPLY_OFF_TASK_OPS_DEFAULT: u64 = 10_000;

/// Bytes of peers' changes held for a room while a copy of it is out,
/// applied together on the next copy. Past it they are dropped (counted);
/// anti-entropy brings them again.
pub const APPLY_HELD_BYTES_MAX: usize = 16 << 20;

/// Rooms whose peers' changes are applied off the task at once (each holds
/// a copy of its room); past it a room's changes apply in line.
pub const APPLYING_ROOMS_MAX: usize = 8;

/// After a copy came back too late (its room was written meanwhile, so its
/// changes applied in line again), the room's peers' changes apply in line
/// for this long: a room this replica writes to steadily would otherwise
/// pay for a copy, then the in-line apply anyway, and keep the worker
/// busy that its compactions need.
pub const APPLY_IN_LINE_AFTER_REDO_MS: u64 = 5_000;

/// Rooms remembered as written to under their copies (see above); past it
/// a room is not remembered and its changes go on copies as before.
pub const APPLY_REDONE_ROOMS_MAX: usize = 1024;

/// Since-cursors waiting for changes applied off the task; past it the
/// oldest is dropped (that peer's cursor stays where it was, and its next
/// round replays a little more of its log).
pub const DEFERRED_CURSORS_MAX: usize = 256;

/// The highest generation a compacted base may claim: far beyond any real
/// room (one compaction per `HISTORY_CHANGES_DEFAULT` writes), and never
/// near an overflow of the next generation's number.
pub const GENERATION_MAX: u64 = 1 << 48;

/// Sessions a compacted room remembers as pruned (an 8-byte digest each,
/// 16 KiB at most in its base): a resume or write naming one of them is
/// refused as "has left", like a session still in the document, and a
/// join reusing its id as a duplicate. Older prunes are forgotten, oldest
/// first, so a room's base stays bounded whatever its past; a session
/// forgotten this way reads as unknown. A constant of the compaction
/// format, not a setting: every replica must write the same base.
pub const DEPARTED_REMEMBERED_MAX: usize = 2048;

/// Changes after the cut an import from before a compaction may hold to be
/// carried onto the compacted room (`RoomDoc::carried_import`): carrying
/// copies the document per change, so a long offline tail costs time that
/// grows with its square. As many as a room's history holds before it is
/// compacted by default; a longer one is refused (export the room again).
pub const IMPORT_CARRIED_CHANGES_MAX: usize = 1_000;

/// Default number of rooms kept loaded in memory (~18 KB each measured for
/// small rooms, so ~75 MB). Configurable: `ReplicaConfig::hot_rooms`.
pub const HOT_ROOMS_DEFAULT: usize = 4096;

/// Most rooms a hot-room cache may be configured for. The cache is sized
/// up front, so an absurd setting would abort at start (found by fuzzing
/// the config: `usize::MAX` overflows the hash table). 2^20 rooms at about
/// 18 KB each is already 18 GiB.
pub const HOT_ROOMS_MAX: usize = 1 << 20;

/// Default capacity of the change-event stream per subscriber. A subscriber
/// more than this many events behind gets `Lagged`; writers never wait.
pub const EVENT_QUEUE_DEFAULT: usize = 4096;

/// Largest clock jump forward the HLC accepts from a remote timestamp, so one
/// peer with a wrong clock cannot drag every replica's clock into the future.
pub const HLC_MAX_DRIFT_MS: u64 = 60_000;

/// Commands waiting for the driver; callers wait when it is full, so a
/// burst of writers cannot grow memory without bound.
pub const COMMAND_QUEUE_MAX: usize = 1024;

/// Commands the driver takes in one turn (sharing one flush) before it
/// serves the network and timers again. 256 writes of ~40 µs each keep a
/// turn near 10 ms, well under the failure detector's 500 ms probe period.
pub const COMMANDS_PER_TURN_MAX: usize = 256;

/// Network inputs the driver takes, when a timer fires, before it runs the
/// timer: what arrived while the driver was busy is older than the deadline
/// that just passed (a probe's answer waiting in a socket must not make
/// its sender look silent). Bounded so a flood cannot hold timers back.
pub const NETWORK_CATCH_UP_MAX: usize = 256;

/// Longest the driver spends on that catch-up before it runs the timer.
pub const NETWORK_CATCH_UP_MS: u64 = 50;

/// Pushes held while no peer is subscribed to the push topic yet (past it
/// they are sent by request instead).
pub const UNSENT_PUSHES_MAX: usize = 256;

/// First redial delay after a lost or failed connection; it doubles up to
/// the max, so a dead peer costs a dial every 10 s.
pub const REDIAL_MIN_MS: u64 = 250;
pub const REDIAL_MAX_MS: u64 = 10_000;
/// A connection that lasts this long resets the redial backoff; a shorter
/// one (refused after the handshake: a wrong PSK, an allow-list) keeps it
/// growing. Each redial waits its backoff ±50 % (jitter).
pub const REDIAL_STABLE_MS: u64 = 10_000;
/// Failed dials in a row to one peer before each further one is logged at
/// WARN (the first ones are usual while a cluster starts).
pub const DIAL_FAILURES_WARN: u32 = 3;

/// How long a networked engine waits for its listeners to bind.
pub const LISTEN_TIMEOUT_MS: u64 = 10_000;

/// How often a driver whose store failed retries reopening the replica
/// when no command comes (each command retries too).
pub const REOPEN_RETRY_MS: u64 = 1_000;

/// How long opening a sled store waits for its file lock. sled 0.34 drops
/// a `Db` before its background threads let go of the lock, so reopening a
/// store just closed in the same process (an engine restarted in place, a
/// test) can find it still held for a moment. Another process holding the
/// store still gets the error, after this wait.
pub const STORE_LOCK_WAIT_MS: u64 = 2_000;

/// The most incident-journal entries a replica may be configured to keep
/// (`journal_entries_max`): about 200 MB of store at ~200 bytes an entry.
pub const JOURNAL_ENTRIES_MAX: usize = 1_000_000;

/// Imports one engine merges at once on its callers' threads; more wait.
/// Each holds its decoded changes (up to `DECOMPRESSED_BYTES_MAX`), a copy
/// of the room and the merged result until it is installed: one at a time
/// keeps that to one import's worth, as when imports ran on the replica's
/// task, and leaves the second core to the replica.
pub const IMPORTS_MERGING_MAX: usize = 1;

/// The largest drain rate accepted (calls per second): more is a failover,
/// not a drain.
pub const DRAIN_RATE_MAX: u32 = 100_000;

/// How long a replica that leaves on purpose (`Engine::leave_cluster`) waits for
/// its peers to acknowledge, and how often it looks. A peer on a healthy
/// link answers within a round trip; one that does not answer in a second
/// is treated as the detector would treat it (the departure looks like a
/// failure to that peer), and the stop is not held up longer.
pub const LEAVE_ACK_WAIT_MS: u64 = 1_000;
pub const LEAVE_ACK_POLL_MS: u64 = 10;

/// The longest restart grace accepted (`restart_grace_ms`): while it runs a
/// node's calls stay on it whatever the detector finds, so a restart that
/// takes longer is better handled as a failure.
pub const RESTART_GRACE_MS_MAX: u64 = 600_000;

// ---- The wire protocol (replica/wire.rs) -----------------------------------

/// Largest frame accepted on a request-response stream. A snapshot chunk or a
/// since-batch is cut well below it (`SYNC_BATCH_BYTES_MAX`).
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Largest push frame: gossipsub refuses messages above 64 KiB, and the
/// envelope needs some room of its own.
pub const PUSH_BYTES_MAX: usize = 60 * 1024;

/// Budget of changes or documents in one sync response; the rest follows in
/// the next request. Applying a response is one turn of the receiver's
/// driver: 256 KiB (about 1 200 join-sized changes) keeps that turn short
/// next to the failure detector's 200 ms probe deadline, even into a room
/// of 10 000 sessions.
pub const SYNC_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Most change bytes one change-log entry names. A merge that adds more
/// (a large import, a whole room from a snapshot) is logged as several
/// entries under successive stamps: a since-response carries at least one
/// whole entry, and an entry of any size would outgrow the frame.
pub const LOG_ENTRY_BYTES_MAX: usize = SYNC_BATCH_BYTES_MAX;

/// Bytes of recently applied changes kept in memory to answer peers'
/// since-requests without rebuilding them from automerge (`rooms::recent`):
/// at 1 000 join-sized writes a second, about the last 13 s, and a whole
/// import of the largest room. Counted in change bytes: each entry's
/// decoded header and the maps add roughly as much again.
pub const RECENT_CHANGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most rooms named in one message (requests for changes, leaves, pushes).
pub const ROOMS_PER_MESSAGE_MAX: usize = 4096;

/// Largest end-of-room change a `Purged` message carries as proof. An end
/// change holds one op and the room's heads as dependencies (at most
/// `HEADS_MAX`, 8 KiB of hashes).
pub const PURGE_PROOF_BYTES_MAX: usize = 16 * 1024;

/// Most change-hash prefixes a `SinceReq` lists as already held (72 KiB).
/// Past it the since path still converges; it just resends more.
pub const KNOWN_HASHES_MAX: usize = 8192;

/// Most ancestry hints per room in a `ChangesReq` (see
/// [`RoomHeads`](crate::replica::wire::RoomHeads)).
pub const ANCESTRY_MAX: usize = 16;

/// Most heads per room in a `ChangesReq`: a room with more concurrent
/// branches than this is not a session record.
pub const HEADS_MAX: usize = 256;

/// Rooms named in a round's first `ChangesReq`. Each answer is cut at
/// `SYNC_BATCH_BYTES_MAX`, and the rooms past the cut are named again in the
/// next request: after a heal, naming every differing room (thousands) in
/// each request cost more than the answers. The next request names half as
/// many again as the last cut answer covered, twice as many after an answer
/// that was not cut (up to `ROOMS_PER_MESSAGE_MAX`).
pub const CHANGES_FIRST_ASK_ROOMS: usize = 64;

/// Most heads a leaf answer gives per room (`LeafHeadsResp`): one or two
/// are the rule; a room with more is asked for as it would be without.
pub const LEAF_HEADS_MAX: usize = 8;

/// Rooms whose heads one leaf answer looks up (each lookup loads the room,
/// and a request may name every bucket): past them, rooms go without.
/// At most 256 KiB of heads an answer.
pub const LEAF_HEADS_ROOMS_MAX: usize = 1024;

/// Most digest-tree nodes asked for in one request: a whole tree level.
pub const NODES_PER_REQUEST_MAX: usize = 4096;

// ---- Failure detection (membership/) ---------------------------------------

/// Drain orders a health broadcast carries (the newest first). A cluster
/// drains a handful of nodes at a time; 64 bounds the message at ~5 KB.
pub const DRAIN_ORDERS_MAX: usize = 64;

/// Visits to each peer in this replica's region per anti-entropy cycle
/// (every other peer gets one): rounds prefer near peers, which repair
/// faster and cost no inter-region bytes, and still reach every region
/// each cycle (`Replica::round_order`). Among four regions of 50 replicas,
/// 147 of a cycle's 297 rounds stay in the region, against 49 of 199.
pub const NEAR_PEER_VISITS: u64 = 3;

/// Suspicions the ring watch holds at once, waiting to convert
/// (`membership/watch.rs`): one per neighbour that crashed with the one
/// before it.
pub const WATCH_SUSPICIONS_MAX: usize = 4;

/// Targets this replica checks for other watchers at once, and watchers
/// per target (`membership/watch.rs`). A node is the relay of about
/// `indirect_probes` watchers' checks, and only while they hear nothing.
pub const WATCH_RELAYS_MAX: usize = 16;

/// How many `silence_ms` windows foca's conviction of a suspect that is
/// still heard from may wait for the suspect's refutation
/// (`membership/refute.rs`): a suspect told directly refutes within a
/// round trip, so a longer wait means it cannot be told (an older build),
/// and it is convicted and rejoins as before.
pub const CONVICTION_WAIT_SILENCES: u64 = 5;

/// Nodes a replica sends its health report to each interval besides those
/// it must reach (everyone when its placement changes; suspects and nodes
/// whose report it lacks are asked instead; `replica/reports.rs`).
/// Rotation reports are not answered, so an idle replica sends and
/// receives this many an interval whatever the cluster's size.
pub const HEALTH_FANOUT: usize = 2;

/// Nodes one replica tracks. Beyond it, unknown senders are ignored: a
/// media cluster is tens of nodes, so this only bounds a misbehaving one.
pub const MEMBERS_MAX: usize = 1024;

/// A replica that learns a conviction gossips it at once, rather than at
/// its next periodic gossip (every 200 ms): each hop of the news then
/// costs a link's latency, not a gossip period, which is what keeps
/// detection inside the failover budget at 200 replicas (docs/scale.md).
/// At most once per this many milliseconds: a region cut off convicts
/// dozens of nodes at once. Convictions learned together go in one
/// gossip; those learned in the next 50 ms wait for the periodic gossip
/// (there is no trailing one).
pub const GOSSIP_ON_DOWN_GAP_MS: u64 = 50;

/// Largest SWIM datagram (foca's packet bound). 1400 B fits one UDP
/// packet on any path, should a driver ever send them that way.
pub const SWIM_PACKET_MAX: usize = 1400;

// ---- The libp2p transport (net/) -------------------------------------------

/// A request waits this long for its (empty) acknowledgement. Sync rounds
/// have their own, longer timeout in the replica.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Concurrent request streams per connection. Rounds have one request in
/// flight and pull-backs a few more, but failure-detection datagrams ride
/// the same protocol: 8 was tried and dropped them after a heal, so that
/// membership never re-formed. Each stream may carry a frame of up to
/// `MESSAGE_BYTES_MAX` (8 MiB), so one peer can make this node buffer up
/// to 512 MiB; a smaller frame limit for datagram-sized messages would
/// lower that.
pub const STREAMS_MAX: usize = 64;

/// A new connection's security and multiplexing handshake must finish
/// within this; a peer that stalls it is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// gossipsub's heartbeat: its housekeeping (caches, pruning an older
/// build's graft). It announces nothing: there is no mesh and no IHAVE
/// gossip (`behaviour.rs`). 500 ms as when it announced recent pushes.
pub const GOSSIP_HEARTBEAT_MS: u64 = 500;

/// The largest gossipsub control part of one RPC a daemon decodes (the
/// library's default is 16 KiB). This build sends no IHAVE, but an older
/// one still names up to 5,000 recent pushes in one (about 90 KiB), and a
/// receiver that cannot decode an RPC drops the stream with the pushes
/// queued on it: during a rolling upgrade that lost most pushes.
pub const GOSSIP_CONTROL_BYTES_MAX: usize = 128 * 1024;

/// A connection with no open stream is closed after this long; redials
/// bring it back, and ping keeps live ones busy.
pub const IDLE_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

// ---- Anti-entropy, catch-up, failover and push work (replica/) -------------

/// Requests one round may make before it is cut short: bounds the work a
/// peer that keeps answering "truncated" can cause.
pub const ROUND_REQUESTS_MAX: u32 = 10_000;

/// How far before the peer's cursor our own log is searched for changes we
/// hold: the two logs are stamped by different clocks (HLCs stay close, but
/// a change may reach us a little before it reaches the peer).
pub const KNOWN_LOOKBACK_MS: u64 = 5_000;

/// Largest gap (entries of the peer's log after our cursor) a round closes
/// by the since path; a larger one is walked down the digest tree. The
/// since request lists every change we hold from a little before the
/// cursor (8 bytes each) and the answer resends whatever that list missed,
/// so its cost follows the cluster's write rate times the cursor's age. The
/// walk costs what differs now. Measured on `long/twenty-split-heal`
/// (docs/benchmarks.md).
pub const SINCE_LIST_ENTRIES_MAX: u64 = 256;

/// Log entries read per page while answering a since request.
pub const LOG_PAGE_ENTRIES: usize = 1024;

/// Rooms read per page while answering a snapshot request.
pub const SNAPSHOT_PAGE_ROOMS: usize = 256;

/// Takeovers one replica writes per move tick: bounds the work of a tick;
/// the schedule's rate is the real limit.
pub const TAKEOVERS_PER_TICK_MAX: usize = 256;

/// A call whose slot is due, held here but given by placement to another
/// node that has not moved it, is handed to that node (its room's newest
/// changes sent there) this long after the slot, plus up to
/// `HANDOFF_SPREAD_MS` drawn per replica and call (`replica::handoff`):
/// long enough for the node to have moved a call it held (its conviction
/// may come a few hundred ms after ours, and its takeover takes a link's
/// latency to arrive), short against the 2.5 s failover budget.
pub const HANDOFF_AFTER_MS: u64 = 300;
/// The spread over which the holders' hand-offs of one call come, so that
/// the first usually settles it before the others'.
pub const HANDOFF_SPREAD_MS: u64 = 400;
/// About this many of the cluster's replicas (those drawn by a hash of the
/// replica and the call) hand a given call off; with a third of 200
/// replicas holding a call, no drawn one holds it about once in 250 calls,
/// which anti-entropy then brings. At most `HANDOFFS_PER_TICK_MAX` go out per
/// move tick.
pub const HANDOFF_HOLDERS: u64 = 16;
pub const HANDOFFS_PER_TICK_MAX: usize = 64;

/// How often the mover looks for due calls while a move is in progress.
pub const MOVE_INTERVAL_MS: u64 = 50;

/// Bytes of envelope and per-room framing a push frame must leave free.
pub const PUSH_FRAMING_BYTES: usize = 512;

/// (room, pusher) pairs waiting at once for a request of the changes a
/// push depended on (`replica::missing`); past it, a room is asked for at
/// once.
pub const MISSING_PULL_ROOMS_MAX: usize = 4096;

/// Changes watched per room left waiting by a push (the push's own that
/// wait): if none of them waits any more when the wait is over, nothing
/// is asked (`replica::missing`).
pub const MISSING_PULL_WATCHED_MAX: usize = 8;

/// Change-log entries trimmed per tick; the next tick continues, so one
/// tick's work stays bounded after a long time without trimming.
pub const LOG_TRIM_PER_TICK_MAX: usize = 4096;

/// Rooms one `Purged` message may make this replica load from storage to
/// check a compacted room's end proof against its copy
/// (`RoomSet::is_end_proof`): a message names up to
/// `ROOMS_PER_MESSAGE_MAX` rooms, and each load evicts a hot one. The
/// rooms past it are refused for now and come again by anti-entropy.
pub const PURGE_PROOF_LOADS_MAX: usize = 16;

/// A trim cut short by `LOG_TRIM_PER_TICK_MAX` goes on this much later
/// (not a whole `log_trim_interval_ms`), so trimming keeps up with up to
/// about 40 000 log entries a second (it fell behind above about 410).
pub const LOG_TRIM_CATCH_UP_MS: u64 = 100;

const _: () = assert!(DECOMPRESSED_BYTES_MAX >= IMPORT_BYTES_MAX as u64);
const _: () = assert!(EPOCH_MAX < u64::MAX);
const _: () = assert!(EPOCH_STEP_MAX >= 1 && EPOCH_STEP_MAX < EPOCH_MAX);
const _: () = assert!(HOT_ROOMS_DEFAULT <= HOT_ROOMS_MAX);
const _: () = assert!(COMMANDS_PER_TURN_MAX >= 1 && COMMANDS_PER_TURN_MAX <= COMMAND_QUEUE_MAX);
const _: () = assert!(REDIAL_MIN_MS <= REDIAL_MAX_MS);
// gossipsub's largest message is 64 KiB.
const _: () = assert!(PUSH_BYTES_MAX < 64 * 1024);
const _: () = assert!(PUSH_FRAMING_BYTES < PUSH_BYTES_MAX);
// A purge proof (its room's heads as dependencies) fits a push.
const _: () = assert!(HEADS_MAX * 32 <= PURGE_PROOF_BYTES_MAX);
const _: () = assert!(PURGE_PROOF_BYTES_MAX + PUSH_FRAMING_BYTES < PUSH_BYTES_MAX);
// A sync batch and a full list of known hashes fit one frame.
const _: () = assert!(SYNC_BATCH_BYTES_MAX < MESSAGE_BYTES_MAX);
const _: () = assert!(LOG_ENTRY_BYTES_MAX <= SYNC_BATCH_BYTES_MAX);
const _: () = assert!(KNOWN_HASHES_MAX * 8 < MESSAGE_BYTES_MAX);
// A leaf answer's heads fit a sync batch; a room's heads fit a request.
const _: () = assert!(LEAF_HEADS_ROOMS_MAX * LEAF_HEADS_MAX * 32 <= SYNC_BATCH_BYTES_MAX);
const _: () = assert!(LEAF_HEADS_MAX <= HEADS_MAX);
const _: () = assert!(CHANGES_FIRST_ASK_ROOMS <= ROOMS_PER_MESSAGE_MAX);
// One request can ask for a whole level of the digest tree.
const _: () = assert!(NODES_PER_REQUEST_MAX >= crate::rooms::digest::LEAVES);
const _: () = assert!(SNAPSHOT_PAGE_ROOMS <= ROOMS_PER_MESSAGE_MAX);
const _: () = assert!(MOVE_INTERVAL_MS > 0 && ROUND_REQUESTS_MAX > 0);
const _: () = assert!(crate::limits::JOURNAL_ENTRIES_MAX >= 10_000);
