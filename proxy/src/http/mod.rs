//! HTTP plumbing shared by both directions: error mapping, header rules,
//! the HTTP/1 framing guard, upstream clients and the body limit.

pub mod body;
pub mod error;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod server;
