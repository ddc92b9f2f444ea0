//! The storage-node RPC: how insert and select call a storage node over
//! TCP. [`RpcServer`] serves a [`crate::cluster::LocalNode`]; [`RpcClient`]
//! implements [`crate::cluster::Node`], so code written against `Node` runs
//! unchanged over the network.
//!
//! # Byte layout (protocol version 2)
//!
//! Integers in headers are big-endian; `uvarint` is LEB128, `varint` is a
//! zigzag-mapped LEB128; `str` is `uvarint length | UTF-8 bytes`.
//!
//! ```text
//! handshake (12 bytes, each side sends one on connect; client first):
//!   magic "SRPC" | version u16 | max_frame_bytes u32 | max_in_flight u16
//!   The server answers a client of version 1 (OLDEST_CLIENT_VERSION) up
//!   to its own in the client's version: the connection speaks it, and
//!   every call of an older version is unchanged. Otherwise the server
//!   answers with its own version, then closes; a client refuses a server
//!   that does not answer in the client's version.
//!   Version 2 added search_ordered (0x0a).
//!
//! frame:
//!   length u32 | kind u8 | flags u8 | request id u32 | body
//!   length = bytes after the length field (6 + body); at most the
//!   receiver's max_frame_bytes, and so is a decompressed body.
//!   flags bit 0: body is one zstd frame declaring its size (sent when the
//!   body is at least 512 bytes and shrinks); other bits must be 0.
//!
//! kinds:
//!   0x01 write  0x02 search  0x03 series  0x04 label_names
//!   0x05 label_values  0x06 cardinality  0x07 delete_series
//!   0x08 tenants  0x09 status  0x0a search_ordered   requests, client -> server
//!   0x20 credit (body: uvarint n)                    client -> server
//!   0x21 cancel (empty body)                         client -> server
//!   0x40 reply   ends the call with its result       server -> client
//!   0x41 batch   one part of a search's result       server -> client
//!   0x42 error   ends the call: kind u8 | str text   server -> client
//!   0x43 goaway  (id 0) server stops; no new calls   server -> client
//!   error kinds: 1 unavailable, 2 deadline, 3 read-only, 4 remote, 5 protocol
//!
//! request body = timeout_ms u32 | call fields
//!   timeout_ms: time the server has, from when it reads the frame; 0 is
//!   already past. The server abandons the call at that point.
//!   write          tenant | uvarint n | (labels | samples)*n
//!   search         query | credit uvarint (batches the server may send unasked)
//!   search_ordered as search
//!   series         query
//!   label_names    query
//!   label_values   query | str name
//!   cardinality    tenant | range | uvarint limit
//!   delete_series  tenant | matchers
//!   tenants        range
//!   status         (nothing)
//!
//! reply bodies
//!   write          uvarint accepted | uvarint rejected
//!                  | uvarint n | (reason u8 | uvarint count)*n
//!                  | reason u8 (0: none) [| str series | varint timestamp]
//!                  reasons: 1 too old, 2 too new, 3 empty labels
//!   search         batch frames: uvarint n | (labels | samples)*n,
//!                  then a reply with an empty body
//!   search_ordered batch frames: uvarint n | (key u128 BE | labels | samples)*n,
//!                  then a reply with an empty body. key: xxh3-128 of the
//!                  labels as the index encodes them (`labels_key`); series
//!                  ascend by key across all batches, ties (hash
//!                  collisions) by label set, so every node answers one
//!                  query in one order
//!   series         uvarint n | labels*n
//!   label_names, label_values   uvarint n | str*n
//!   cardinality    uvarint total | counts (by metric) | counts (values by
//!                  label name) | counts (by label pair); counts = uvarint n | (str | uvarint)*n
//!   delete_series  uvarint deleted
//!   tenants        uvarint n | tenant*n
//!   status         read_only u8 | str reason | uvarint series
//!                  | uvarint free_disk_bytes | str version
//!
//! tenant   = uvarint account | uvarint project
//! range    = varint start | varint end (inclusive, milliseconds)
//! query    = tenant | matchers | range | uvarint limit
//! matchers = uvarint n | (op u8 | str name | str value)*n   op: 0 =, 1 !=, 2 =~, 3 !~
//! labels   = uvarint n | (str name | str value)*n
//! samples  = uvarint n | varint t0 | varint (t1-t0) | varint dod*(n-2)
//!            | uvarint reverse_bits(bits(v_i) ^ bits(v_i-1))*n   (bits(v_-1) = 0)
//! ```
//!
//! # Calls and flow control
//!
//! Request ids are chosen by the client and unique among its open calls
//! on a connection, so one connection carries many calls; replies come in
//! any order. A search (plain or ordered) streams batches: the request grants `credit`
//! batches, and the client sends a credit frame for each batch its caller
//! takes, so a slow reader holds at most that many batches in memory on
//! either side. The server lets `max_in_flight` calls be open per
//! connection (its hello tells the client, which waits for a slot), and runs
//! at most `--rpc.max-concurrent-calls` at once over all connections; when
//! those workers are busy it stops reading requests, so the client's
//! writes wait on TCP. A call whose deadline passes is abandoned on both
//! sides: the client answers `DeadlineExceeded` and sends cancel.
//!
//! Invariants the format test (`format_tests.rs`) guards: the bytes of a
//! hello, a frame header and every message for fixed inputs. Any change
//! there must raise [`PROTOCOL_VERSION`].

mod calls;
mod client;
mod codec;
mod conn;
mod frame;
mod messages;
mod metrics;
mod pool;
mod serve_conn;
mod server;

#[cfg(test)]
mod format_tests;

pub use client::{ClientConfig, RpcClient};
pub use frame::{FrameError, Hello, MAGIC, OLDEST_CLIENT_VERSION, PROTOCOL_VERSION};
pub use metrics::{ClientMetrics, ServerMetrics};
pub use server::{RpcServer, ServerConfig};

/// The wire encoding without a connection, for benches.
pub mod wire {
    pub use super::frame::{Kind, encode_frame, read_frame};
    pub use super::messages::{
        Method, Request, decode_batch, decode_keyed_batch, decode_request, encode_batch,
        encode_keyed_batch, encode_write, set_timeout,
    };
}
