//! The foca runtime: what one call into foca asked for, collected for the
//! replica to carry out (foca is sans-IO, like the replica).

use std::time::Duration;

use foca::OwnedNotification;

use super::SwimId;
use crate::ids::NodeId;

/// Datagrams to send, timers to set, notifications to read.
#[derive(Default)]
pub(super) struct Sink {
    pub(super) sends: Vec<(NodeId, Vec<u8>)>,
    pub(super) timers: Vec<(Duration, foca::Timer<SwimId>)>,
    pub(super) notes: Vec<OwnedNotification<SwimId>>,
}

impl foca::Runtime<SwimId> for Sink {
    fn notify(&mut self, notification: foca::Notification<'_, SwimId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: SwimId, data: &[u8]) {
        self.sends.push((to.node, data.to_vec()));
    }

    fn submit_after(&mut self, event: foca::Timer<SwimId>, after: Duration) {
        self.timers.push((after, event));
    }
}
