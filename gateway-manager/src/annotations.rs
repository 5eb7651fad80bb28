//! The tunnel annotations moved to the tunnel contract in
//! [`offload_wire::tunnel::annotations`]; re-exported here so existing paths
//! keep compiling until every caller imports them from `offload_wire`.

pub use offload_wire::tunnel::annotations::{
    AnnotationError, TunnelAnnotations, decode_ports, encode_ports, split_host_port,
};
