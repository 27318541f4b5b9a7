//! Sign-in and what it must not leak: certificates, workload and managed identity, the
//! token's roles, the outbound proxy, and no secret anywhere.

mod identity;
mod permissions;
mod proxy;
mod secrets;
