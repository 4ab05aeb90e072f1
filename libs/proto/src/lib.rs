//! Generated types for every Strata concern's gRPC API and events.
//!
//! Each concern lives in its own module (`compute::v1`, ...). Messages carry
//! prost encodings for gRPC and proto3-JSON serde impls (from pbjson) for the
//! `data` of CloudEvents. [`FILE_DESCRIPTOR_SET`] feeds server reflection.

#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

/// The encoded `FileDescriptorSet` of all Strata protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));

pub mod compute {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/strata.compute.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/strata.compute.v1.serde.rs"));
    }
}

pub mod data {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/strata.data.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/strata.data.v1.serde.rs"));
    }
}

pub mod traffic {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/strata.traffic.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/strata.traffic.v1.serde.rs"));
    }
}

pub mod gateway {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/strata.gateway.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/strata.gateway.v1.serde.rs"));
    }
}

pub mod observe {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/strata.observe.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/strata.observe.v1.serde.rs"));
    }
}

pub use pbjson_types;
