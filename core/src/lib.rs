//! floyd: what Kubernetes controllers do — keep N instances running, roll them to a new
//! version batch by batch, stop on failing health checks, roll back, route traffic to ready
//! instances — as one embeddable library without a cluster.
//!
//! Data flows one way (see `docs/ARCHITECTURE.md`):
//! `log → snapshot → store → informer → workqueue → controllers`; controllers write back
//! only through the store.

#![deny(unsafe_code)]

/// The README's example, compiled as a doctest so it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod clock;
#[cfg(not(loom))]
pub mod controller;
pub mod error;
pub mod failpoint;
#[cfg(not(loom))]
pub mod informer;
#[cfg(loom)]
#[path = "informer/loom.rs"]
pub mod informer;
#[cfg(not(loom))]
pub mod log;
#[cfg(loom)]
#[path = "log/loom.rs"]
pub mod log;
#[cfg(not(loom))]
pub mod runtime;
#[cfg(not(loom))]
pub mod snapshot;
#[cfg(not(loom))]
pub mod store;
pub(crate) mod sync;
pub mod workqueue;

pub use clock::{Clock, FakeClock, SharedClock, SystemClock};
#[cfg(not(loom))]
pub use controller::probe::{Probe, ProbeOutcome, ProbeType};
pub use error::{Error, ErrorKind, Result};
#[cfg(not(loom))]
pub use informer::{IndexFunc, Informer, InformerConfig, InformerFactory};
#[cfg(not(loom))]
pub use log::Durability;
#[cfg(not(loom))]
pub use runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, Started};
#[cfg(not(loom))]
pub use snapshot::{Snapshot, SnapshotInfo};
#[cfg(not(loom))]
pub use store::{
    EventType, LabelSelector, Limits, Object, ObjectMeta, OwnerReference, ResourceVersion, Store,
    StoreConfig, Watch, WatchEvent,
};
pub use workqueue::{RateLimiter, TypedRateLimiter, WorkQueue, WorkQueueConfig};
