//! Bearer tokens for people: random 256-bit secrets, stored only as SHA-256 (a slow password
//! hash buys nothing for a secret of full entropy), checked against the caller's role on every
//! RPC.

use preflight_core::role::Role;
use preflight_store::UserRecord;
use ring::rand::SecureRandom;
use tonic::{Request, Status};

use crate::Shared;

/// A new random secret, `PREFIX_` followed by 64 hex digits.
pub fn new_secret(prefix: &str) -> String {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random generator works");
    format!("{prefix}_{}", hex::encode(b))
}

/// SHA-256 of a token, hex: the only form in which tokens are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

const HOW: &str = "pass --token or set PREFLIGHT_TOKEN (the first admin token is printed by \
`preflight serve --init`; an admin makes more with `preflight user add`)";

/// The user making `req`, if they hold one of `allowed` roles. Every refusal is logged (warn,
/// with the source address, the method and the reason; never the token).
pub(crate) fn authorize<T>(
    shared: &Shared,
    req: &Request<T>,
    allowed: &[Role],
) -> Result<(UserRecord, Role), Status> {
    check(shared, req, allowed).inspect_err(|s| {
        let source = req
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let method = req
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map(|m| format!("{}/{}", m.service(), m.method()))
            .unwrap_or_default();
        tracing::warn!(%source, %method, code = ?s.code(), reason = %s.message(), "request refused");
    })
}

fn check<T>(
    shared: &Shared,
    req: &Request<T>,
    allowed: &[Role],
) -> Result<(UserRecord, Role), Status> {
    let Some(v) = req.metadata().get("authorization") else {
        return Err(Status::unauthenticated(format!("no bearer token: {HOW}")));
    };
    let token = v
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| Status::unauthenticated(format!("malformed authorization header: {HOW}")))?;
    let user = shared
        .store
        .user_by_token(&hash_token(token))
        .map_err(|e| Status::unavailable(e.to_string()))?
        .ok_or_else(|| Status::unauthenticated(format!("unknown token: {HOW}")))?;
    if let Some(exp) = user.expires_at_ms {
        if shared.now_ms() >= exp {
            return Err(Status::unauthenticated(format!(
                "the token of user {} has expired: an admin makes a new one with `preflight user token rotate {}`",
                user.name, user.name
            )));
        }
    }
    if user.disabled {
        return Err(Status::unauthenticated(format!(
            "user {} is disabled: an admin enables it again with `preflight user enable {}`",
            user.name, user.name
        )));
    }
    let role: Role = user
        .role
        .parse()
        .map_err(|e: preflight_core::role::UnknownRole| Status::permission_denied(e.to_string()))?;
    if !allowed.contains(&role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(Status::permission_denied(format!(
            "user {} has role {role}; this needs one of: {}",
            user.name,
            names.join(", ")
        )));
    }
    Ok((user, role))
}
