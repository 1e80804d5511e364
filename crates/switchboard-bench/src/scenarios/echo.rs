//! `echo`: C clients on the echo endpoint, each sending a text, waiting for the
//! server's `Server received: <text>`, and repeating. Every reply must be exactly
//! the text just sent; its round trip time is the latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{close_all, progress_bar, ramp, setup, Ctx, Outcome};
use crate::cli::EchoArgs;
use crate::protocol::{Event, Protocol, Rx, Tx};
use crate::stats::{Sampler, Violation};

/// How long a client waits for one reply before counting it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run<P: Protocol>(protocol: &P, args: &EchoArgs, ctx: &Arc<Ctx>) -> Result<Outcome> {
    let common = &ctx.common;
    let bar = progress_bar(args.clients, "connecting");
    let clients = ramp(args.clients, common.ramp_concurrency, |client| {
        let bar = bar.clone();
        async move {
            let connection = setup(|| format!("echo client {client}: connecting"), protocol.connect_echo()).await?;
            bar.inc(1);
            Ok(connection)
        }
    })
    .await?;
    bar.finish_and_clear();

    let started = Instant::now();
    let end = started + common.duration;
    let sampler = Sampler::start(ctx.done.clone(), Sampler::interval_for(common.duration));
    ctx.cpu_mark_start();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(client, connection)| {
            tokio::spawn(ping_pong(connection.tx, connection.rx, client, args.size as usize, end, ctx.clone()))
        })
        .collect();
    let mut connections = Vec::with_capacity(tasks.len());
    for task in tasks {
        connections.push(task.await?);
    }
    let measured = started.elapsed();
    let series = sampler.finish().await;
    ctx.cpu_mark_end();
    close_all(connections).await;

    let mut outcome = Outcome::new("echo", ctx, ctx.done.get(), measured, "round trips/s")
        .param("clients", args.clients)
        .param("size", args.size);
    outcome.latency_label = "round trip";
    outcome.series = series;
    Ok(outcome)
}

/// One client's loop: send, wait for the echo, check it, repeat until `end`.
async fn ping_pong<T: Tx, R: Rx>(
    mut tx: T,
    mut rx: R,
    client: usize,
    size: usize,
    end: Instant,
    ctx: Arc<Ctx>,
) -> (T, R) {
    let check = &ctx.check;
    let prefix = format!("client {client}: ");
    let mut text = String::with_capacity(size);
    let mut seq: u64 = 0;
    while Instant::now() < end {
        text.clear();
        text.push_str(&format!("{client}:{seq}:"));
        while text.len() < size {
            text.push(char::from(b'a' + (text.len() % 26) as u8));
        }
        let sent = Instant::now();
        if let Err(err) = async {
            tx.echo(&text).await?;
            tx.flush().await
        }
        .await
        {
            check.violation(Violation::ConnectionFailure, || format!("{prefix}{err:#}"));
            break;
        }
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, rx.next()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => {
                check.violation(Violation::ConnectionFailure, || format!("{prefix}the server closed the connection"));
                break;
            }
            Ok(Err(err)) => {
                check.violation(Violation::ConnectionFailure, || format!("{prefix}{err:#}"));
                break;
            }
            Err(_) => {
                check.violation(Violation::Lost, || {
                    format!("{prefix}no echo of message {seq} within {REPLY_TIMEOUT:?}")
                });
                break;
            }
        };
        check.checked(1);
        match reply {
            Event::Echo(echoed) if echoed == text => {
                ctx.latencies.record(sent.elapsed().as_micros() as u64);
                ctx.done.add(1);
            }
            Event::Echo(echoed) => {
                // Which message was this an echo of?
                let earlier = echoed
                    .strip_prefix(&format!("{client}:"))
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n < seq);
                let kind = if earlier.is_some() { Violation::Duplicated } else { Violation::OutOfOrder };
                check.violation(kind, || format!("{prefix}sent {:?}, echo was {:?}", short(&text), short(&echoed)));
                break;
            }
            Event::Error { code, message } => check.server_error(&code, &message, || prefix.clone()),
            other => {
                check.violation(Violation::Unexpected, || format!("{prefix}unexpected {other:?}"));
                break;
            }
        }
        seq += 1;
    }
    (tx, rx)
}

fn short(text: &str) -> &str {
    text.char_indices().nth(40).map_or(text, |(at, _)| &text[..at])
}
