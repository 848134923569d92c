//! Who may call: this provider's own gateways (an allowed node id or the cluster token) see
//! every shard; a market tenant sees its own namespace.

use std::collections::HashSet;

use tonic::{Request, Status};

use super::conn::PeerInfo;
use crate::Error;
use crate::identity::NodeId;
use crate::market::ContractedClients;

pub use crate::TOKEN_METADATA;

/// Who is calling, and so which shards it may see.
#[derive(Clone, Debug)]
pub(super) enum Caller {
    /// This provider's own gateways (an allowed node id or the cluster token): every shard.
    Owner,
    /// A demander's gateway admitted by a market contract: the shards of its namespace only,
    /// up to its contracts' reservation.
    Tenant {
        namespace: String,
        tenancy: crate::market::Tenancy,
    },
}

impl Caller {
    /// The id under which the caller's shard `id` is stored.
    pub(super) fn scope(&self, id: &str) -> Result<String, Status> {
        match self {
            Caller::Owner => Ok(id.to_owned()),
            Caller::Tenant { namespace, .. } => {
                crate::store::validate_shard_id(id)?;
                let full = format!("{namespace}{id}");
                if full.len() > crate::store::MAX_ID_LEN {
                    return Err(Status::invalid_argument(format!(
                        "shard id {:?} is too long: a market tenant's shard ids are at most {} characters",
                        id.chars().take(64).collect::<String>(),
                        crate::store::MAX_ID_LEN - namespace.len()
                    )));
                }
                Ok(full)
            }
        }
    }

    /// The caller's name for the stored shard `id`.
    pub(super) fn unscope(&self, id: String) -> String {
        match self {
            Caller::Owner => id,
            Caller::Tenant { namespace, .. } => id
                .strip_prefix(namespace.as_str())
                .map_or(id.clone(), str::to_owned),
        }
    }

    pub(super) fn contract(&self) -> Option<&str> {
        match self {
            Caller::Owner => None,
            Caller::Tenant { tenancy, .. } => Some(&tenancy.contract),
        }
    }
}

/// Who sent `request`: an owner (a node id in `allowed`, or the token hashing to
/// `token_hash`), a tenant admitted by a contract in `contracted`, or nobody allowed.
pub(super) fn authorize<T>(
    request: &Request<T>,
    allowed: &HashSet<NodeId>,
    token_hash: Option<blake3::Hash>,
    contracted: &ContractedClients,
) -> Result<Caller, Status> {
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.node_id);
    if let Some(id) = peer
        && allowed.contains(&id)
    {
        return Ok(Caller::Owner);
    }
    if let (Some(expected), Some(token)) = (token_hash, request.metadata().get(TOKEN_METADATA))
        && blake3::hash(token.as_bytes()) == expected
    {
        return Ok(Caller::Owner);
    }
    if let Some(id) = peer
        && let Some(tenancy) = contracted.get(&id)
    {
        return Ok(Caller::Tenant {
            namespace: crate::market::tenant_namespace(&id),
            tenancy,
        });
    }
    let who = peer.map_or_else(
        || "a client without certificate".to_string(),
        |id| format!("client {id}"),
    );
    Err(Error::Unauthenticated(format!(
        "{who} is not an allowed client and presented no valid {TOKEN_METADATA}"
    ))
    .into())
}
