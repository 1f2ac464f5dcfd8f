//! Work a replica hands off (`Output::Work`, with `work_off_task`): done
//! at once, handed back after a drawn delay, so that the replica's task is
//! free meanwhile, as with a driver's worker thread.

use chorus_engine::replica::Work;

use super::Cluster;

impl Cluster {
    /// How long the work replicas hand off takes, `[min, max]` ms.
    pub fn set_work_ms(&mut self, min: u64, max: u64) {
        self.work_ms = (min, max);
    }

    /// Nodes the others do not list among their configured peers
    /// (`Scenario::unlisted`); taken into account at each node's next start.
    pub fn set_unlisted(&mut self, nodes: &[usize]) {
        self.unlisted = nodes.iter().copied().collect();
    }

    pub(super) fn hand_off(&mut self, i: usize, work: Work) {
        let (min, max) = self.work_ms;
        let at = self.now_ms + self.rng.range(min, max);
        let input = work.run();
        self.nodes[i].work.push((at, input));
    }

    /// Hands back every result that is due.
    pub(super) fn deliver_work(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.now_ms;
            let (due, later) = std::mem::take(&mut self.nodes[i].work)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.nodes[i].work = later;
            for (_, input) in due {
                self.input(i, input);
            }
        }
    }
}
