//! `churn`: C concurrent loops of connect → `welcome` → `join` → `joined` →
//! `leave` → `left` → close, each loop in a room of its own. Checks every reply,
//! that every connection gets a peer id never seen before in the run, and that
//! nothing else arrives; reports cycles per second and the latency of a cycle.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{rate_limit_note, Ctx, Outcome};
use crate::cli::ChurnArgs;
use crate::protocol::{Event, Protocol, Purpose, Rx, Tx, UncleanClose};
use crate::stats::{Counter, Sampler, Violation};

/// How long one cycle may take before it counts as failed.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run<P: Protocol>(protocol: &P, args: &ChurnArgs, ctx: &Arc<Ctx>) -> Result<Outcome> {
    let common = &ctx.common;
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let unclean = Arc::new(Counter::default());
    let started = Instant::now();
    let end = started + common.duration;
    let sampler = Sampler::start(ctx.done.clone(), Sampler::interval_for(common.duration));
    ctx.cpu_mark_start();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let (protocol, ctx, ids, unclean) = (protocol.clone(), ctx.clone(), ids.clone(), unclean.clone());
            tokio::spawn(async move {
                let room = format!("churn-{worker}");
                while Instant::now() < end {
                    let cycle_start = Instant::now();
                    match tokio::time::timeout(CYCLE_TIMEOUT, cycle(&protocol, &room, &ctx, &ids, &unclean)).await {
                        Ok(Ok(())) => {
                            ctx.latencies.record(cycle_start.elapsed().as_micros() as u64);
                            ctx.done.add(1);
                        }
                        Ok(Err(err)) => {
                            if err.downcast_ref::<Recorded>().is_none() {
                                ctx.check.violation(Violation::Unexpected, || format!("worker {worker}: {err:#}"));
                            }
                            return;
                        }
                        Err(_) => {
                            ctx.check.violation(Violation::Lost, || {
                                format!("worker {worker}: a cycle did not finish within {CYCLE_TIMEOUT:?}")
                            });
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let measured = started.elapsed();
    let series = sampler.finish().await;
    ctx.cpu_mark_end();

    let leave = protocol.features().leave;
    let mut outcome = Outcome::new("churn", ctx, ctx.done.get(), measured, "cycles/s")
        .param("concurrency", args.concurrency)
        .param("cycle", if leave { "connect, join, leave, close" } else { "connect, join, close" });
    outcome.latency_label = "cycle";
    outcome.series = series;
    outcome.extra.insert("distinct_peer_ids".into(), ids.lock().unwrap_or_else(|e| e.into_inner()).len().into());
    let unclean = unclean.get();
    outcome.extra.insert("unclean_closes".into(), unclean.into());
    if unclean > 0 {
        outcome.notes.push(format!(
            "warning: {unclean} of {} closes were not answered with a close frame: the server dropped the \
             connection after our close frame (RFC 6455 section 5.5.1 requires a close frame in reply; the \
             client sees \"Connection reset without closing handshake\")",
            ctx.done.get()
        ));
    }
    outcome.notes.extend(rate_limit_note(ctx));
    Ok(outcome)
}

/// An error already counted in the run's [`crate::stats::Check`].
#[derive(Debug)]
struct Recorded;

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(recorded)")
    }
}

impl std::error::Error for Recorded {}

/// One connect-join-leave-close cycle. Connection failures and server errors are
/// recorded here and come back as [`Recorded`]; protocol surprises come back as
/// other errors, for the caller to record.
async fn cycle<P: Protocol>(
    protocol: &P,
    room: &str,
    ctx: &Ctx,
    ids: &Mutex<HashSet<String>>,
    unclean: &Counter,
) -> Result<()> {
    let check = &ctx.check;
    let mut connection = match protocol.connect_in(room, Purpose::Signaling).await {
        Ok((connection, _)) => connection,
        Err(err) => return Err(connection_failed(ctx, "connecting and joining", err)),
    };
    check.checked(2); // welcome, joined
    if !ids.lock().unwrap_or_else(|e| e.into_inner()).insert(connection.id.clone()) {
        check.violation(Violation::Duplicated, || format!("peer id {} was handed out twice", connection.id));
    }
    // Servers without a leave (matchbox_server, peerjs-server, the seed) leave
    // by closing.
    if protocol.features().leave {
        connection.tx.leave(room).await.map_err(|err| connection_failed(ctx, "leaving", err))?;
        match next(&mut connection.rx, ctx).await? {
            Event::Left { rooms } if rooms == [room] => check.checked(1),
            other => bail!("expected `left` for [{room:?}], got {other:?}"),
        }
    }
    connection.tx.close().await.map_err(|err| connection_failed(ctx, "closing", err))?;
    match connection.rx.next().await {
        Ok(None) => Ok(()),
        Err(err) if err.is::<UncleanClose>() => {
            unclean.add(1);
            Ok(())
        }
        Ok(Some(other)) => bail!("expected the server's close, got {other:?}"),
        Err(err) => Err(connection_failed(ctx, "closing", err)),
    }
}

/// The next event; server errors are recorded and returned as errors.
async fn next<R: Rx>(rx: &mut R, ctx: &Ctx) -> Result<Event> {
    let event = rx.next().await.map_err(|err| connection_failed(ctx, "receiving", err))?;
    match event {
        Some(Event::Error { code, message }) => {
            ctx.check.server_error(&code, &message, || "churn".into());
            Err(Recorded.into())
        }
        Some(event) => Ok(event),
        None => {
            ctx.check.violation(Violation::ConnectionFailure, || "churn: the server closed the connection".into());
            Err(Recorded.into())
        }
    }
}

/// Records a connection failure while `doing` something.
fn connection_failed(ctx: &Ctx, doing: &str, err: anyhow::Error) -> anyhow::Error {
    ctx.check.violation(Violation::ConnectionFailure, || format!("churn: {doing}: {err:#}"));
    Recorded.into()
}
