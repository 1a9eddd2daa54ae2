//! Shared informers: one [`Informer`] per (kind, namespace, label selector) for every
//! controller in the process (client-go's `SharedInformerFactory`).
//!
//! Controllers ask the factory instead of building informers, so two controllers watching
//! Instances share one cache, one reflector and one notification ring; each adds its own
//! handler (with its own resync period) and indexes. Informers made after [`start`] are
//! started at once (client-go needs a second `Start` call; starting them is what every
//! caller wants).
//!
//! [`start`]: InformerFactory::start

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Informer, InformerConfig};
use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::store::{LabelSelector, Store};

type FactoryKey = (String, Option<String>, String);

/// Makes and shares informers over one store.
pub struct InformerFactory {
    store: Store,
    default_resync: Duration,
    clock: SharedClock,
    state: Mutex<FactoryState>,
}

struct FactoryState {
    informers: HashMap<FactoryKey, Informer>,
    started: bool,
    stopped: bool,
}

impl std::fmt::Debug for InformerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        f.debug_struct("InformerFactory")
            .field("informers", &st.informers.keys().collect::<Vec<_>>())
            .field("started", &st.started)
            .finish()
    }
}

impl InformerFactory {
    /// A factory whose informers use `default_resync` and the system clock.
    pub fn new(store: &Store, default_resync: Duration) -> InformerFactory {
        InformerFactory::with_clock(store, default_resync, SystemClock::shared())
    }

    pub fn with_clock(
        store: &Store,
        default_resync: Duration,
        clock: SharedClock,
    ) -> InformerFactory {
        InformerFactory {
            store: store.clone(),
            default_resync,
            clock,
            state: Mutex::new(FactoryState {
                informers: HashMap::new(),
                started: false,
                stopped: false,
            }),
        }
    }

    /// The shared informer for `(kind, namespace, selector)`, made on first use. Selectors
    /// are compared in their canonical string form; an empty selector is no selector.
    pub fn informer(
        &self,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&LabelSelector>,
    ) -> Result<Informer> {
        let sel = label_selector.filter(|s| !s.is_empty());
        let key = (
            kind.to_string(),
            namespace.map(str::to_string),
            sel.map(|s| s.to_string()).unwrap_or_default(),
        );
        let mut st = self.state.lock();
        if st.stopped {
            return Err(Error::ShutDown("the informer factory is shut down".into()));
        }
        if let Some(i) = st.informers.get(&key) {
            return Ok(i.clone());
        }
        let mut cfg = InformerConfig::new(kind);
        cfg.resync = self.default_resync;
        cfg.namespace = key.1.clone();
        cfg.label_selector = sel.cloned();
        cfg.clock = self.clock.clone();
        let inf = Informer::with_config(&self.store, cfg)?;
        if st.started {
            inf.start()?;
        }
        st.informers.insert(key, inf.clone());
        Ok(inf)
    }

    /// Starts every informer made so far (and, from now on, every new one).
    pub fn start(&self) -> Result<()> {
        let mut st = self.state.lock();
        if st.stopped {
            return Err(Error::ShutDown("the informer factory is shut down".into()));
        }
        st.started = true;
        for i in st.informers.values() {
            i.start()?;
        }
        Ok(())
    }

    /// Waits until every informer has synced; `Ok(false)` if they have not all synced
    /// within `timeout` (one timeout for all of them, on the factory's clock). `ShutDown`
    /// once the factory is shut down.
    pub fn wait_for_cache_sync(&self, timeout: Option<Duration>) -> Result<bool> {
        let all: Vec<Informer> = {
            let st = self.state.lock();
            if st.stopped {
                return Err(Error::ShutDown("the informer factory is shut down".into()));
            }
            st.informers.values().cloned().collect()
        };
        let deadline = timeout.and_then(|t| self.clock.now().checked_add(t));
        for i in all {
            let left = match (timeout, deadline) {
                (None, _) => None,
                (Some(t), None) => Some(t),
                (Some(_), Some(d)) => Some(d.saturating_duration_since(self.clock.now())),
            };
            if !i.wait_for_sync(left)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stops every informer; later calls fail with `ShutDown`.
    pub fn shutdown(&self) {
        let all: Vec<Informer> = {
            let mut st = self.state.lock();
            st.stopped = true;
            st.informers.drain().map(|(_, i)| i).collect()
        };
        for i in all {
            i.stop();
        }
    }

    /// How many distinct informers the factory holds.
    pub fn len(&self) -> usize {
        self.state.lock().informers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InformerFactory {
    fn drop(&mut self) {
        self.shutdown();
    }
}
