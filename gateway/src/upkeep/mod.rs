//! Keeping data alive: audits, scrubs, repairs, re-encoding, draining pools, garbage
//! collection, snapshots.

pub mod audit;
pub mod drain;
pub mod lifecycle;
pub mod reencode;
pub mod repair;
pub mod scrub;
pub mod snapshot;
pub mod users;
