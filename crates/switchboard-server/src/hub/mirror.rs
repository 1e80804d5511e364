//! What the broker hands back to the hub: a room's numbered events, relays
//! from other nodes, and the reconciliation after an outage. Together they keep
//! this node's mirror of the members on other nodes (the
//! [`Location::Remote`](super::room::Location::Remote) entries, kept for routing) and are the only place
//! local members are told `peer-joined` / `peer-left`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::value::RawValue;
use switchboard_protocol::server::encode;
use switchboard_protocol::ErrorCode;

use super::activity::{Activity, LeftReason};
use super::room::{Location, Member, Recent, Room};
use super::{server_sender, Hub};
use crate::broker::{Command, Listed, NodeInfo, RoomEvent, RoomEvents, Undelivered};
use crate::peer_id::PeerId;

impl RoomEvents for Hub {
    fn apply(&self, room_name: &str, event: RoomEvent<'_>) {
        let Some(mut room) = self.rooms.get_mut(room_name) else {
            // Nobody here is in the room or watches it any more.
            return;
        };
        match event {
            RoomEvent::Joined { seq, member, restored } => {
                let peer = member.id;
                if restored && room.members.contains_key(&peer) {
                    // Written back after the broker lost it: this node never forgot it.
                    return;
                }
                let event = room.flavor.joined_event(room_name, peer, &member.shown);
                let remote = (member.node != self.node).then(|| Member::remote(member.node, member.shown));
                if room.pending_joins > 0 {
                    let joined = remote.clone();
                    room.recent.push(Recent {
                        seq,
                        peer,
                        joined,
                        left: false,
                        closed: false,
                        moved: None,
                        frame: event.clone(),
                    });
                }
                if let (Some(member), false) = (remote, room.members.contains_key(&peer)) {
                    room.members.insert(peer, member);
                }
                if let Some(event) = &event {
                    self.fan_out(&room, Some(peer), event, "peer-joined", Some(seq));
                    room.notify_observers(event);
                }
                room.notify_arrival();
            }
            RoomEvent::Left { seq, peer } => {
                // A local member that left is removed here, under the lock its
                // `peer-left` goes out under (see `Hub::leave_here`); not one
                // that joined again after this event.
                let local_left = room.members.get(&peer).map(|m| (m.is_local(), m.since < seq));
                match local_left {
                    Some((false, _)) => {
                        room.members.shift_remove(&peer);
                    }
                    Some((true, true)) => {
                        room.members.shift_remove(&peer);
                        if !room.members.values().any(Member::is_local) {
                            self.metrics.rooms.decrement(1.0);
                        }
                    }
                    _ => {}
                }
                let event = room.flavor.left_event(room_name, peer);
                if room.pending_joins > 0 {
                    room.recent.push(Recent {
                        seq,
                        peer,
                        joined: None,
                        left: true,
                        closed: false,
                        moved: None,
                        frame: event.clone(),
                    });
                }
                if let Some(event) = &event {
                    self.fan_out(&room, Some(peer), event, "peer-left", Some(seq));
                    room.notify_observers(event);
                }
            }
            RoomEvent::Closed { seq } => {
                let had_local = room.members.values().any(Member::is_local);
                // The dialects' rooms are never closed by the server API (their names are
                // not native names): a closed room speaks the native protocol.
                let closed = Utf8Bytes::from(encode::room_closed(room_name));
                let gone: Vec<PeerId> =
                    room.members.iter().filter(|(_, m)| !m.is_local() || m.since < seq).map(|(id, _)| *id).collect();
                for id in &gone {
                    if let Some(Member { location: super::room::Location::Local(outbox), .. }) =
                        room.members.shift_remove(id)
                    {
                        outbox.remove_from(room_name.into(), Message::Text(closed.clone()));
                        self.metrics.messages_out("room-closed", 1);
                    }
                    if let Some(event) = room.flavor.left_event(room_name, *id) {
                        room.notify_observers(&event);
                    }
                }
                if had_local && !room.members.values().any(Member::is_local) {
                    self.metrics.rooms.decrement(1.0);
                }
                if room.pending_joins > 0 {
                    let peer = server_sender();
                    room.recent.push(Recent {
                        seq,
                        peer,
                        joined: None,
                        left: false,
                        closed: true,
                        moved: None,
                        frame: None,
                    });
                }
                let unused = room.is_unused();
                drop(room);
                if unused {
                    self.rooms.remove_if(room_name, |_, room| room.is_unused());
                }
            }
            RoomEvent::Moved { seq, peer, from: _, to } => {
                // The node that claims a session makes it local itself (`Hub::adopt`).
                if to != self.node {
                    if let Some(member) = room.members.get_mut(&peer).filter(|m| !m.is_local()) {
                        member.location = Location::Remote(to);
                    }
                }
                if room.pending_joins > 0 {
                    room.recent.push(Recent {
                        seq,
                        peer,
                        joined: None,
                        left: false,
                        closed: false,
                        moved: Some(to),
                        frame: None,
                    });
                }
            }
            RoomEvent::Broadcast { node, sender, frame } => {
                // This node delivered its own broadcasts when they were sent.
                if node != self.node {
                    self.fan_out(&room, Some(sender), &Utf8Bytes::from(frame), "broadcast", None);
                }
            }
        }
    }

    fn deliver(&self, target: PeerId, frame: &str) -> Result<(), Undelivered> {
        let outbox = self.peers.get(&target).ok_or(Undelivered::Gone)?;
        outbox.push(Message::Text(frame.into())).map_err(|_| Undelivered::Full)
    }

    fn tell_error(&self, peer: PeerId, code: ErrorCode, message: &str, rid: Option<&RawValue>) -> bool {
        let Some(outbox) = self.peers.get(&peer) else { return false };
        self.metrics.error(code);
        self.metrics.messages_out("error", 1);
        let _ = outbox.push(Message::Text(encode::error(code, message, rid).into()));
        true
    }

    fn local_members(&self) -> Vec<(Arc<str>, Vec<Listed>)> {
        self.rooms
            .iter()
            .map(|room| {
                let members = room
                    .members
                    .iter()
                    .filter(|(_, m)| m.is_local())
                    .map(|(id, m)| self.listed(*id, m.shown.clone()))
                    .collect();
                (room.key().clone(), members)
            })
            .collect()
    }

    /// Adds the members the broker lists (as of event `seq`) that this node did
    /// not know, telling local members, and from now on sends them every event
    /// after `seq` (the broker may have restarted its count). Members on other
    /// nodes that the list lacks may have left, or their node may not have
    /// written them back yet: they are returned, for [`RoomEvents::forget`] to
    /// settle later.
    fn resync(&self, room_name: &str, seq: u64, members: Vec<Listed>) -> Vec<PeerId> {
        let Some(mut room) = self.rooms.get_mut(room_name) else { return Vec::new() };
        let listed: HashSet<PeerId> = members.iter().map(|m| m.id).collect();
        let missing =
            room.members.iter().filter(|(id, m)| !m.is_local() && !listed.contains(id)).map(|(id, _)| *id).collect();
        for member in members {
            if member.node == self.node || room.members.contains_key(&member.id) {
                continue;
            }
            if let Some(event) = room.flavor.joined_event(room_name, member.id, &member.shown) {
                self.fan_out(&room, None, &event, "peer-joined", None);
                room.notify_observers(&event);
            }
            room.members.insert(member.id, Member::remote(member.node, member.shown));
        }
        for member in room.members.values_mut() {
            member.since = seq;
        }
        missing
    }

    fn reaped(&self, room: &str, members: Vec<Listed>, emptied: bool) {
        for member in &members {
            self.tell(Activity::PeerLeft { room, member, reason: LeftReason::NodeLost });
        }
        if emptied {
            self.tell(Activity::RoomFinished { room });
        }
    }

    fn expired(&self, room: &str, member: Listed, emptied: bool) {
        self.tell(Activity::PeerLeft { room, member: &member, reason: LeftReason::TimedOut });
        if emptied {
            self.tell(Activity::RoomFinished { room });
        }
    }

    fn command(&self, peer: PeerId, command: &Command) -> bool {
        if *command == Command::HandOver {
            return self.suspended.get().is_some_and(|suspended| suspended.hand_over(peer));
        }
        let Some(outbox) = self.peers.get(&peer).map(|outbox| outbox.clone()) else {
            return false;
        };
        match command {
            Command::Send(frame) => {
                // A queue that overflows closes the peer as a slow consumer: it is still "sent".
                let _ = outbox.push(Message::Text(frame.as_str().into()));
                self.metrics.messages_out("server-message", 1);
            }
            Command::HandOver => {}
            Command::Remove(removal) => {
                outbox.remove(removal.clone());
                // A session waiting for a resume has no connection to close: end it here.
                if let Some(rooms) = self.suspended.get().and_then(|suspended| suspended.end(peer)) {
                    if let Some(hub) = self.me() {
                        hub.disconnect(peer, rooms, LeftReason::Kicked);
                    }
                }
            }
        }
        true
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node,
            address: self.address.get().cloned().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: self.started,
            connections: self.peers.len() as u64,
            rooms: self.rooms.iter().filter(|room| room.members.values().any(Member::is_local)).count() as u64,
            messages_in: self.metrics.received(),
        }
    }

    fn forget(&self, room_name: &str, gone: &[PeerId]) {
        let Some(mut room) = self.rooms.get_mut(room_name) else { return };
        for id in gone {
            if room.members.get(id).is_some_and(|m| !m.is_local()) {
                room.members.shift_remove(id);
                if let Some(event) = room.flavor.left_event(room_name, *id) {
                    self.fan_out(&room, None, &event, "peer-left", None);
                    room.notify_observers(&event);
                }
            }
        }
    }
}

impl Hub {
    /// Replaces the members on other nodes with those `members` lists (local
    /// ones are this node's own business), silently: for a room's snapshot.
    pub(super) fn replace_mirror(&self, room: &mut Room, members: Vec<Listed>) {
        let listed: HashSet<PeerId> = members.iter().map(|m| m.id).collect();
        room.members.retain(|id, m| m.is_local() || listed.contains(id));
        for listed in members {
            if listed.node == self.node || room.members.contains_key(&listed.id) {
                continue;
            }
            room.members.insert(listed.id, Member::remote(listed.node, listed.shown));
        }
    }
}
