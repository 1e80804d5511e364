//! A resumable session leaving this node without leaving its rooms (parked
//! with the deployment), and one arriving from elsewhere (claimed here): the
//! hub's part of `broker::parking`. Neither is heard by the other members.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::activity::LeftReason;
use super::room::{Flavor, Location, Member};
use super::Hub;
use axum::extract::ws::Message;
use switchboard_protocol::server::encode;

use crate::broker::parking::{Adopted, Known, Parked};
use crate::broker::{meta_of, user_of, BrokerError, Listed};
use crate::outbox::Outbox;
use crate::peer_id::{NodeId, PeerId};

/// What changed in a resumed session's rooms while it was away, as the events
/// it missed. Their order against what was queued for it is not known, so
/// they go around it: a newcomer's `peer-joined` before the queue (which may
/// hold its relays); a departure's `peer-left` after it, and after the relays
/// that reached the session since its claim (a relay the departed peer sent
/// before it left may have been passed on by the node that parked the
/// session): it is put in the outbox as the room is adopted, before the
/// room's later events (see [`Hub::adopt`]).
#[derive(Default)]
pub struct Missed {
    /// `peer-joined` for members that arrived meanwhile.
    pub joined: Vec<Message>,
    /// A `peer-left` did not fit in the outbox: the session lost messages.
    pub overflowed: bool,
}

impl Missed {
    /// The missed arrivals before the frames queued for the session, in the order it is sent them.
    pub fn around(self, queued: Vec<String>) -> Vec<Message> {
        let mut all = self.joined;
        all.extend(queued.into_iter().map(|frame| Message::Text(frame.into())));
        all
    }
}

impl Hub {
    /// Parks a session whose connection is gone with the deployment, if it
    /// keeps sessions; returns whether it does (if not, the caller keeps the
    /// session). `parked.frames` is filled here with what the outbox still held.
    ///
    /// Routing here changes first: a relay to the peer after this call goes to
    /// the broker, which queues it behind the frames taken from the outbox.
    pub fn park(&self, id: PeerId, outbox: &Arc<Outbox>, mut parked: Parked) -> bool {
        if !self.broker.keeps_sessions() {
            return false;
        }
        for room_name in &parked.record.rooms {
            let Some(mut room) = self.rooms.get_mut(room_name) else { continue };
            let others = room.members.keys().filter(|peer| **peer != id).copied().collect();
            let Some(member) = room.members.get_mut(&id).filter(|m| m.is_local()) else { continue };
            member.location = Location::Remote(NodeId::parked());
            parked.known.push((room_name.clone(), others));
            if !room.members.values().any(Member::is_local) {
                self.metrics.rooms.decrement(1.0);
            }
        }
        if self.peers.remove(&id).is_some() {
            self.metrics.peers.decrement(1.0);
        }
        // No push into the outbox can start any more: take what it holds.
        parked.frames = outbox.drain_text();
        let Some(hub) = self.me() else { return true };
        let departing = self.departing.clone();
        departing.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let rooms = parked.record.rooms.clone();
            if !hub.broker.park(parked).await {
                // Lost with the node's link to the deployment: gone, as a disconnect would be.
                hub.unpark(id, &rooms).await;
            }
            for room in rooms {
                hub.forget_if_unused(&room);
                hub.broker.release(room);
            }
            departing.fetch_sub(1, Ordering::AcqRel);
        });
        true
    }

    /// A park that failed: the peer leaves its rooms.
    async fn unpark(&self, id: PeerId, rooms: &[Arc<str>]) {
        for room in rooms {
            let member = self.rooms.get_mut(room).and_then(|mut r| r.members.shift_remove(&id));
            let vacated = self.broker.leave(room, id).await;
            if let Some(member) = member {
                self.tell_left(room, &self.listed(id, member.shown), LeftReason::Disconnected, vacated);
            }
        }
    }

    fn forget_if_unused(&self, room_name: &str) {
        let unused = self.rooms.get(room_name).is_some_and(|room| room.is_unused());
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
    }

    /// Makes a session claimed from elsewhere local again: in each of its
    /// rooms its record moves here and it is a local member, sent the room's
    /// events after the move (it was told the earlier ones where it was).
    /// Returns the rooms it is still in (one closed meanwhile is not), and
    /// what changed in them while it was away as the events it missed.
    pub async fn adopt(
        &self,
        id: PeerId,
        outbox: &Arc<Outbox>,
        rooms: Vec<Arc<str>>,
        known: &Known,
    ) -> (Vec<Arc<str>>, Missed) {
        let mut kept = Vec::with_capacity(rooms.len());
        let mut missed = Missed::default();
        for room in rooms {
            let before = known.iter().find(|(name, _)| *name == room).map(|(_, peers)| peers.as_slice());
            match self.adopt_one(id, outbox, &room, before, &mut missed).await {
                Ok(true) => kept.push(room),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, %room, peer = %id, "could not move a resumed session's room here");
                }
            }
        }
        (kept, missed)
    }

    async fn adopt_one(
        &self,
        id: PeerId,
        outbox: &Arc<Outbox>,
        room: &Arc<str>,
        before: Option<&[PeerId]>,
        missed: &mut Missed,
    ) -> Result<bool, BrokerError> {
        self.broker.acquire(room).await?;
        self.prepare(room, Flavor::Signaling);
        match self.broker.adopt(room, id).await {
            Ok(Some(Adopted { seq, capacity, members })) => {
                if let Some(before) = before {
                    let now = |peer: &PeerId| members.iter().any(|m| m.id == *peer);
                    // After the relays delivered since the claim (the broker's adopt waited for
                    // the ones passed on), before the room's later events (`admit` below).
                    for gone in before.iter().filter(|peer| !now(peer)) {
                        let left = Message::Text(encode::peer_left(gone.as_str(), room).into());
                        missed.overflowed |= outbox.push(left).is_err();
                    }
                    for new in members.iter().filter(|m| m.id != id && !before.contains(&m.id)) {
                        let frame =
                            encode::peer_joined(new.id.as_str(), room, user_of(&new.shown), meta_of(&new.shown));
                        missed.joined.push(Message::Text(frame.into()));
                    }
                }
                let (shown, joined) =
                    members.iter().find(|m| m.id == id).map(|m| (m.shown.clone(), m.joined)).unwrap_or_default();
                let member = Listed { id, node: self.node, shown, joined };
                self.admit(member, outbox, room, capacity, seq, members, None, false);
                Ok(true)
            }
            other => {
                self.abandon(room);
                self.broker.release(room.clone());
                other.map(|_| false)
            }
        }
    }

    /// The server API removed a peer no node holds (its session is parked):
    /// it leaves its rooms now. Returns whether there was such a session.
    pub(super) async fn evict(&self, peer: PeerId) -> Result<bool, BrokerError> {
        let Some(left) = self.broker.evict(peer).await? else { return Ok(false) };
        for (room, member, vacated) in &left {
            self.tell_left(room, member, LeftReason::Kicked, *vacated);
        }
        Ok(true)
    }
}
