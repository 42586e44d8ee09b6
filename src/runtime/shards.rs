//! A worker process with several nodes: one thread and event loop per
//! node (shard), wired to each other by in-process ring links.

use std::sync::Arc;

use mio::Poll;

use super::conn::WAKER;
use super::error::{io_err, WorkerError};
use super::link::ShardLinks;
use super::metrics::{self, Hub};
use super::os::request_stop;
use super::worker::Worker;
use crate::config::NodeToml;

/// Bytes per in-process ring (each direction of each shard pair).
const LINK_RING_BYTES: usize = 4 << 20;

/// Runs the nodes of one worker process until SIGTERM/SIGINT: one thread
/// per shard, each with its own event loop, journal and data directory,
/// wired to each other by in-process ring links (one per direction of each
/// pair). The first shard to fail stops the others; its error is returned.
pub fn run_shards(cfgs: Vec<NodeToml>) -> Result<(), WorkerError> {
    let n = cfgs.len();
    let hub = serve_metrics(&cfgs)?;
    if n <= 1 {
        let Some(cfg) = cfgs.into_iter().next() else {
            return Ok(());
        };
        pin(&cfg)?;
        tag(&cfg);
        let mut w = Worker::start(cfg)?;
        if let Some(h) = hub {
            w.attach_metrics(h, 0);
        }
        return w.run();
    }
    let ids: Vec<u32> = cfgs.iter().map(|c| c.node_id).collect();
    let mut links = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new().map_err(io_err("cannot create an event loop"))?;
        let waker =
            mio::Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create a waker"))?;
        let waker = std::sync::Arc::new(waker);
        wakers.push(waker.clone());
        links.push(ShardLinks {
            poll: Some(poll),
            waker: Some(waker),
            ..ShardLinks::default()
        });
    }
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            // Channel a → b: a produces on its end, b consumes on its end.
            let (ea, eb) = super::link::link(LINK_RING_BYTES, wakers[a].clone(), wakers[b].clone())
                .map_err(|e| WorkerError::Replay(format!("ring: {e:?}")))?;
            links[a].to.push((ids[b], ea));
            links[b].from.push((ids[a], eb));
        }
    }
    let mut threads = Vec::with_capacity(n);
    for (slot, (cfg, l)) in cfgs.into_iter().zip(links).enumerate() {
        let id = cfg.node_id;
        let hub = hub.clone();
        let t = std::thread::Builder::new()
            .name(format!("node-{id}"))
            .spawn(move || {
                tag(&cfg);
                let r = pin(&cfg)
                    .and_then(|()| Worker::start_shard(cfg, l))
                    .and_then(|mut w| {
                        if let Some(h) = hub {
                            w.attach_metrics(h, slot);
                        }
                        w.run()
                    });
                if let Err(e) = &r {
                    tracing::error!(event = "failed", "node {id} stopped on error: {e}");
                    request_stop();
                }
                r
            })
            .map_err(io_err("cannot start a shard thread"))?;
        threads.push(t);
    }
    let mut first = Ok(());
    for t in threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(WorkerError::Replay("a shard thread panicked".into())));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Starts the process's metrics endpoint when `metrics_listen` is set (the
/// same for every shard of a worker): the hub the shards publish to.
fn serve_metrics(cfgs: &[NodeToml]) -> Result<Option<Arc<Hub>>, WorkerError> {
    let Some(addr) = cfgs.first().and_then(|c| c.metrics_listen) else {
        return Ok(None);
    };
    let hub = Hub::new(cfgs.len(), env!("VERITY_VERSION"));
    metrics::serve(addr, hub.clone()).map_err(io_err(format!(
        "cannot serve metrics on {addr} (metrics_listen)"
    )))?;
    tracing::info!(
        event = "metrics",
        "metrics on http://{addr}/metrics (and /healthz, /readyz)"
    );
    Ok(Some(hub))
}

/// The calling thread's log lines name `cfg`'s node.
fn tag(cfg: &NodeToml) {
    match &cfg.cluster {
        None => super::logging::set_node(cfg.node_id, "", 0),
        Some(c) => super::logging::set_node(cfg.node_id, &c.worker, c.shard),
    }
}

/// Pins the calling thread (the node's event loop) to its `cpu_affinity`.
fn pin(cfg: &NodeToml) -> Result<(), WorkerError> {
    let Some(cpu) = cfg.cpu else {
        return Ok(());
    };
    super::os::pin_to_cpu(cpu).map_err(io_err(format!(
        "cannot pin node {} to CPU {cpu} (cpu_affinity)",
        cfg.node_id
    )))?;
    tracing::info!(
        event = "pinned",
        cpu,
        "node {} pinned to CPU {cpu} (cpu_affinity)",
        cfg.node_id
    );
    Ok(())
}
