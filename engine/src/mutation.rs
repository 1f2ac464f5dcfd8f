//! Deliberately broken merge rules (feature `mutations`). The simulator
//! switches one on for a run to prove its invariants catch a wrong rule;
//! nothing else does. The switch is per thread, so parallel runs and tests
//! do not see each other's mutations.

use std::cell::Cell;

thread_local! {
    static OWNERSHIP_MIN: Cell<bool> = const { Cell::new(false) };
    static COMPACTION_DROPS_JOINS: Cell<bool> = const { Cell::new(false) };
    static COMPACTION_IGNORES_GATE: Cell<bool> = const { Cell::new(false) };
}

/// Makes replicas on this thread leave the replicas that never advertised
/// compaction out of it (neither asked nor waited for): a broken version
/// gate that compacts while an older build is a member.
pub fn set_compaction_ignores_gate(on: bool) {
    COMPACTION_IGNORES_GATE.with(|flag| flag.set(on));
}

pub(crate) fn compaction_ignores_gate() -> bool {
    COMPACTION_IGNORES_GATE.with(Cell::get)
}

/// Makes history compaction on this thread forget the joins it carries
/// (the tail's new sessions): acknowledged writes lost in a compaction.
pub fn set_compaction_drops_joins(on: bool) {
    COMPACTION_DROPS_JOINS.with(|flag| flag.set(on));
}

pub(crate) fn compaction_drops_joins() -> bool {
    COMPACTION_DROPS_JOINS.with(Cell::get)
}

/// Inverts the ownership rule on this thread: the *lowest* `(epoch, node)`
/// claim wins instead of the highest.
pub fn set_ownership_min(on: bool) {
    OWNERSHIP_MIN.with(|flag| flag.set(on));
}

pub(crate) fn ownership_min() -> bool {
    OWNERSHIP_MIN.with(Cell::get)
}
