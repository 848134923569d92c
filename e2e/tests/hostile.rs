//! The adversary plays: providers that lie, forge or stall, clients that stall or send
//! junk, a network that tampers. Real processes, bounded in time. Each part lives in
//! `hostile/`; every test ends by reading back what it wrote, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "hostile/acls.rs"]
mod acls;
#[path = "hostile/clients.rs"]
mod clients;
#[path = "hostile/market.rs"]
mod market;
#[path = "hostile/objlock.rs"]
mod objlock;
#[path = "hostile/policies.rs"]
mod policies;
#[path = "hostile/providers.rs"]
mod providers;
#[path = "hostile/rot.rs"]
mod rot;
#[path = "hostile/snapshots.rs"]
mod snapshots;
#[path = "hostile/unix_sockets.rs"]
mod unix_sockets;
