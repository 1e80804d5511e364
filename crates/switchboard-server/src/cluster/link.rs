//! The connection to Redis: one standalone server (or a replica set behind one
//! address) or a Redis Cluster, behind one type.
//!
//! Both reconnect on their own and resubscribe every channel after a
//! reconnection; messages on subscribed channels arrive as RESP3 pushes on the
//! channel given to [`Link::connect`]. The only difference the rest of the
//! broker sees is the publish command: `PUBLISH` for one server, sharded
//! `SPUBLISH` for a cluster, so a room's traffic stays on its shard.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc::UnboundedSender;

/// A Redis connection, standalone or cluster.
#[derive(Clone)]
pub enum Link {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Link {
    /// Connects to `url` (for a cluster: comma-separated seed URLs). Pushes from
    /// subscribed channels go to `pushes`. A standalone link connects lazily, so a
    /// node starts even while Redis is down; a cluster link needs its seeds up.
    pub async fn connect(
        url: &str,
        cluster: bool,
        timeout: Duration,
        pushes: UnboundedSender<PushInfo>,
    ) -> RedisResult<Link> {
        if cluster {
            let seeds: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            let client = ClusterClientBuilder::new(seeds)
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            return Ok(Link::Cluster(client.get_async_connection().await?));
        }
        let info = url.into_connection_info()?;
        let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(redis))?;
        let config = ConnectionManagerConfig::new()
            .set_push_sender(pushes)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        Ok(Link::Single(ConnectionManager::new_lazy_with_config(client, config)?))
    }

    /// The command that publishes to a room's or node's channel.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Link::Single(_) => "PUBLISH",
            Link::Cluster(_) => "SPUBLISH",
        }
    }

    /// Runs several commands, in order, in one round trip where possible: a
    /// pipeline on one server. A cluster refuses pipelines whose keys live in
    /// different slots, so there each command is routed on its own; they are
    /// all submitted before any answer is awaited, in order, so commands for
    /// the same slot (the same channel, say) still execute in order.
    pub async fn batch(&mut self, commands: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(connection) => {
                let mut pipe = Pipeline::with_capacity(commands.len());
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(connection).await
            }
            Link::Cluster(connection) => {
                let requests = commands.into_iter().map(|command| {
                    let mut connection = connection.clone();
                    async move { command.query_async::<Value>(&mut connection).await }
                });
                futures_util::future::try_join_all(requests).await
            }
        }
    }

    /// Subscribes to a channel; returns once Redis has confirmed it.
    pub async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Single(connection) => connection.subscribe(channel).await,
            Link::Cluster(connection) => connection.ssubscribe(channel).await,
        }
    }

    /// Unsubscribes from a channel.
    pub async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Link::Single(connection) => connection.unsubscribe(channel).await,
            Link::Cluster(connection) => connection.sunsubscribe(channel).await,
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
        }
    }
}
