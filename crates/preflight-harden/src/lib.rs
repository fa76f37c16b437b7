//! The only code that changes a host: the hardening check catalog (audit, plan, apply, verify,
//! rollback against a root prefix), backups, and firewall backends with commit-confirm.

pub mod catalog;
pub mod firewall;
