//! Keeping the node's view of users and access keys fresh: reloaded every
//! [`REFRESH_INTERVAL`] (changes made through another gateway on the same database take
//! effect within it) and usage recounted every [`USAGE_INTERVAL`].

use std::sync::Arc;

use crate::node::Node;
use crate::node::users::{REFRESH_INTERVAL, USAGE_INTERVAL};

/// Loads the view once now (so keys work from the first request), then refreshes it until
/// `stop` changes.
pub async fn spawn_refresh(
    gateway: Arc<Node>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    refresh(&gateway, true).await;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut count = tokio::time::interval(USAGE_INTERVAL);
        count.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let recount = tokio::select! {
                _ = tick.tick() => false,
                _ = count.tick() => true,
                _ = stop.changed() => return,
            };
            refresh(&gateway, recount).await;
        }
    })
}

async fn refresh(gateway: &Arc<Node>, recount: bool) {
    let accounts = Arc::clone(gateway.accounts());
    let done = tokio::task::spawn_blocking(move || {
        accounts.reload()?;
        if recount {
            accounts.recount()?;
        }
        Ok::<_, crate::node::users::UsersError>(())
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "reloading users and access keys failed"),
        Err(e) => tracing::warn!(error = %e, "reloading users and access keys failed"),
    }
}
