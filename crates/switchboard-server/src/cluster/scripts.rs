//! The Lua scripts that change a room's membership in Redis.
//!
//! Each runs atomically on the one key of its room, and publishes the event that
//! tells every node about the change in the same step: no node can see the hash
//! and the events disagree in order, and a capacity check cannot race another
//! node's join. Events are JSON built here, so one Redis round trip does it all:
//!
//! * `{"k":"j","s":<seq>,"p":"<peer>","d":<record>}`: a peer joined;
//! * `{"k":"r",...}`, the same for a peer its node wrote back after Redis lost
//!   it: news only to nodes that had forgotten it;
//! * `{"k":"l","s":<seq>,"p":"<peer>"}`: a peer left;
//! * `{"k":"c","s":<seq>}`: the room was closed (every member is out);
//! * `{"k":"m","s":<seq>,"p":"<peer>","f":"<node>","n":"<node>"}`: a member's
//!   session moved (parked, or claimed by another node); members are not told.
//!
//! `seq` numbers a room's events (the hash's `\0seq` field). A node that admits
//! a peer learns the seq of its join, and only sends it later events: the stream
//! may still carry older ones, which its `joined` list already covers.
//!
//! A member's record is `{"n":"<node>","u":<user>,"m":<meta>,"t":<joined, ms>,"o":<seq of its join>}`.
//! Callers pass it without the closing `,"o":N}`, which the script appends.

use std::sync::LazyLock;

use redis::Script;

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local function members(room)
  local n = redis.call('HLEN', room)
  if redis.call('HEXISTS', room, '\0seq') == 1 then n = n - 1 end
  if redis.call('HEXISTS', room, '\0cap') == 1 then n = n - 1 end
  if redis.call('HEXISTS', room, '\0seal') == 1 then n = n - 1 end
  if redis.call('HEXISTS', room, '\0born') == 1 then n = n - 1 end
  return n
end
local function drop_if_empty(room)
  if members(room) == 0 then redis.call('DEL', room) end
end
local function add(room, peer, prefix, channel, publish, kind)
  local seq = redis.call('HINCRBY', room, '\0seq', 1)
  local record = prefix .. ',"o":' .. seq .. '}'
  redis.call('HSET', room, peer, record)
  redis.call(publish, channel, '{"k":"' .. kind .. '","s":' .. seq .. ',"p":"' .. peer .. '","d":' .. record .. '}')
  return seq
end
local function remove(room, peer, channel, publish)
  redis.call('HDEL', room, peer)
  local seq = redis.call('HINCRBY', room, '\0seq', 1)
  redis.call(publish, channel, '{"k":"l","s":' .. seq .. ',"p":"' .. peer .. '"}')
end
local function seq(room)
  return tonumber(redis.call('HGET', room, '\0seq') or '0')
end
"#;

/// Joins a peer if the room has space.
///
/// KEYS: the room. ARGV: peer, record prefix, capacity asked ("" for none; set
/// only by the join that creates the room), server-wide max peers, channel,
/// publish command, "1" to seal the room once full (likewise), the time now (ms,
/// the room's creation time if this join creates it). Returns
/// `{"ok", capacity or "", seq of the join, HGETALL, 1 if it created the room}`,
/// `{"full", limit}` or `{"already"}`. A sealed room's `\0seal` field is "1" until it is full, then
/// "sealed": it admits nobody again until it is empty (and so deleted).
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local room, peer = KEYS[1], ARGV[1]
if redis.call('HEXISTS', room, peer) == 1 then return {'already'} end
local count = members(room)
local cap = redis.call('HGET', room, '\0cap')
if count == 0 then
  redis.call('HSET', room, '\0born', ARGV[8])
  redis.call('HDEL', room, '\0seal')
  if ARGV[7] == '1' then redis.call('HSET', room, '\0seal', '1') end
  if ARGV[3] ~= '' then
    cap = ARGV[3]
    redis.call('HSET', room, '\0cap', cap)
  elseif cap then
    cap = false
    redis.call('HDEL', room, '\0cap')
  end
end
local limit = tonumber(ARGV[4])
if cap and tonumber(cap) < limit then limit = tonumber(cap) end
if count >= limit or redis.call('HGET', room, '\0seal') == 'sealed' then return {'full', limit} end
local joined = add(room, peer, ARGV[2], ARGV[5], ARGV[6], 'j')
if count + 1 >= limit and redis.call('HEXISTS', room, '\0seal') == 1 then
  redis.call('HSET', room, '\0seal', 'sealed')
end
return {'ok', cap or '', joined, redis.call('HGETALL', room), count == 0 and 1 or 0}
"#
    ))
});

/// Removes a peer, if it is there and belongs to the calling node.
///
/// KEYS: the room. ARGV: peer, node, channel, publish command. Returns `{0}` if
/// it was not there, `{1, record}` if removed, `{2, record}` if removed and the
/// room is gone with it.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local room, peer = KEYS[1], ARGV[1]
local record = redis.call('HGET', room, peer)
if not record or cjson.decode(record).n ~= ARGV[2] then return {0} end
remove(room, peer, ARGV[3], ARGV[4])
if members(room) == 0 then
  redis.call('DEL', room)
  return {2, record}
end
return {1, record}
"#
    ))
});

/// Removes every member a (dead) node had in the room.
///
/// KEYS: the room. ARGV: node, channel, publish command. Returns `{emptied (0
/// or 1), peer, record, peer, record, ...}`: who was removed, and whether the
/// room went with them.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local room = KEYS[1]
local all = redis.call('HGETALL', room)
local removed = {0}
for i = 1, #all, 2 do
  if string.byte(all[i], 1) ~= 0 and cjson.decode(all[i + 1]).n == ARGV[1] then
    remove(room, all[i], ARGV[2], ARGV[3])
    table.insert(removed, all[i])
    table.insert(removed, all[i + 1])
  end
end
if #removed > 1 and members(room) == 0 then removed[1] = 1 end
drop_if_empty(room)
return removed
"#
    ))
});

/// Moves a member's record to another node (or to parking), keeping its place
/// and profile, and publishes `moved`.
///
/// KEYS: the room. ARGV: peer, the node it moves to, channel, publish command.
/// Returns `{"gone"}` if it is not a member, else `{"ok", capacity or "", seq
/// of the move, HGETALL}`.
pub static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local room, peer, to = KEYS[1], ARGV[1], ARGV[2]
local record = redis.call('HGET', room, peer)
if not record then return {'gone'} end
local from = cjson.decode(record).n
-- Records start with {"n":"<node>": only the node changes.
local moved = '{"n":"' .. to .. '"' .. string.sub(record, 8 + string.len(from))
redis.call('HSET', room, peer, moved)
local seq = redis.call('HINCRBY', room, '\0seq', 1)
redis.call(ARGV[4], ARGV[3], '{"k":"m","s":' .. seq .. ',"p":"' .. peer .. '","f":"' .. from .. '","n":"' .. to .. '"}')
return {'ok', redis.call('HGET', room, '\0cap') or '', seq, redis.call('HGETALL', room)}
"#
    ))
});

/// Closes a room: every member is removed at once and one `close` event
/// tells every node.
///
/// KEYS: the room. ARGV: channel, publish command. Returns the room's
/// `HGETALL` before (empty: there was no room).
pub static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local room = KEYS[1]
if members(room) == 0 then return {} end
local all = redis.call('HGETALL', room)
local seq = redis.call('HINCRBY', room, '\0seq', 1)
redis.call('DEL', room)
redis.call(ARGV[2], ARGV[1], '{"k":"c","s":' .. seq .. '}')
return all
"#
    ))
});

/// Makes a node's members of the room exactly the given ones, after Redis lost
/// them (a restart without persistence) or the node was taken for dead; removes
/// members the node no longer has (they left while Redis was unreachable).
/// Capacity is not checked: these peers were admitted before.
///
/// KEYS: the room. ARGV: node, channel, publish command, then pairs of peer and
/// record prefix. Returns `{seq, HGETALL}`: events after `seq` are news.
pub static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local room, node = KEYS[1], ARGV[1]
local wanted, order = {}, {}
for i = 4, #ARGV, 2 do
  wanted[ARGV[i]] = ARGV[i + 1]
  table.insert(order, ARGV[i])
end
local all = redis.call('HGETALL', room)
for i = 1, #all, 2 do
  local field = all[i]
  if string.byte(field, 1) ~= 0 then
    if wanted[field] then
      wanted[field] = nil
    elseif cjson.decode(all[i + 1]).n == node then
      remove(room, field, ARGV[2], ARGV[3])
    end
  end
end
for _, peer in ipairs(order) do
  if wanted[peer] then add(room, peer, wanted[peer], ARGV[2], ARGV[3], 'r') end
end
local now = seq(room)
drop_if_empty(room)
return {now, redis.call('HGETALL', room)}
"#
    ))
});
