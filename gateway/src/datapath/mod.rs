//! The data path: how an object's bytes become sealed, erasure-coded shards on providers
//! and back.

pub mod checksum;
pub mod cloud;
pub mod codec;
pub mod etag;
pub mod fleet;
pub mod layout;
pub mod observed;
pub mod placement;
pub mod provider;
pub mod stripes;
