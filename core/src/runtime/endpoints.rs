//! The endpoints controller and the load-balancing pickers. For every Service with a
//! selector, the `Endpoints` object of the same name lists the addresses of the matching
//! live instances: Ready ones under `addresses`, the others under `notReadyAddresses`
//! (the legacy Endpoints controller's rule, `k8s-semantics.md` §6.1: terminal instances,
//! instances without an address and deleted ones are left out). `pick` returns only ready
//! addresses: round robin, or a sticky choice per hint (session affinity, by rendezvous
//! hashing).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::Shared;
use crate::error::{Error, Result};
use crate::store::{Object, WatchEvent};

/// The most addresses one Endpoints object lists (upstream's cap); ready ones first.
pub const MAX_ENDPOINT_ADDRESSES: usize = 1000;

/// Round-robin positions per Service.
#[derive(Default)]
pub(crate) struct Pickers {
    next: Mutex<HashMap<String, usize>>,
}

/// A Service's selector: a plain label map, as in Kubernetes Services.
pub(crate) fn service_selector(svc: &Object) -> Option<BTreeMap<String, String>> {
    let m = svc.spec.get("selector")?.as_object()?;
    if m.is_empty() {
        return None;
    }
    Some(
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The first Ready condition says True (upstream's `GetPodReadyCondition` reads the first).
fn is_ready(i: &Object) -> bool {
    i.status["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .find(|c| c["type"] == "Ready")
            .is_some_and(|c| c["status"] == "True")
    })
}

fn is_terminal(i: &Object) -> bool {
    matches!(i.status["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The annotation upstream sets on an Endpoints object that had to leave addresses out.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// The Endpoints subsets for `svc` over `instances` (pure).
pub fn endpoints_for(svc: &Object, instances: &[Arc<Object>]) -> Value {
    endpoints_and_overflow(svc, instances).0
}

/// [`endpoints_for`], and whether addresses were left out over the cap.
///
/// With `spec.publishNotReadyAddresses`, as upstream's Endpoints controller: every address
/// is listed as ready, and instances being deleted are still included.
fn endpoints_and_overflow(svc: &Object, instances: &[Arc<Object>]) -> (Value, bool) {
    let Some(sel) = service_selector(svc) else {
        return (json!({"addresses": [], "notReadyAddresses": []}), false);
    };
    let publish_not_ready = svc.spec["publishNotReadyAddresses"] == true;
    let mut ready = vec![];
    let mut not_ready = vec![];
    for i in instances {
        if !selects(&sel, &i.metadata.labels)
            || is_terminal(i)
            || (i.metadata.deletion_timestamp.is_some() && !publish_not_ready)
        {
            continue;
        }
        let Some(addr) = i.status["address"].as_str().filter(|a| !a.is_empty()) else {
            continue;
        };
        let entry = json!({"address": addr, "targetRef": {"kind": "Instance", "name": i.metadata.name, "uid": i.metadata.uid}});
        if publish_not_ready || is_ready(i) {
            ready.push(entry);
        } else {
            not_ready.push(entry);
        }
    }
    let over = ready.len() + not_ready.len() > MAX_ENDPOINT_ADDRESSES;
    ready.truncate(MAX_ENDPOINT_ADDRESSES);
    not_ready.truncate(MAX_ENDPOINT_ADDRESSES - ready.len());
    (
        json!({"addresses": ready, "notReadyAddresses": not_ready}),
        over,
    )
}

impl Shared {
    /// Services to resync after an event.
    pub(crate) fn on_event_for_endpoints(&self, ev: &WatchEvent) {
        let o = &ev.object;
        match o.kind.as_str() {
            "Service" => self.svc_queue.add(o.key()),
            "Instance" => {
                for svc in self.cache.list("Service", Some(&o.metadata.namespace)) {
                    if service_selector(&svc).is_some_and(|s| selects(&s, &o.metadata.labels)) {
                        self.svc_queue.add(svc.key());
                    }
                }
                // Labels may have changed: the Services that listed it before also resync.
                for ep in self.cache.list("Endpoints", Some(&o.metadata.namespace)) {
                    let listed = ["addresses", "notReadyAddresses"].iter().any(|f| {
                        ep.spec[f].as_array().is_some_and(|a| {
                            a.iter()
                                .any(|e| e["targetRef"]["uid"] == o.metadata.uid.as_str())
                        })
                    });
                    if listed {
                        self.svc_queue.add(ep.key());
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn process_service(self: &Arc<Self>, key: &str) {
        self.process_key(&self.svc_queue, "endpoints", key, None, |k| {
            self.sync_endpoints(k)
        });
    }

    fn sync_endpoints(&self, key: &str) -> Result<()> {
        let Some(svc) = self.cache.get("Service", key) else {
            // The Service is gone: so are its Endpoints and its round-robin position.
            self.pickers.next.lock().remove(key);
            return match self.store.delete("Endpoints", key, None) {
                Err(e) if e.kind() != crate::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        if service_selector(&svc).is_none() {
            return Ok(()); // Services without a selector are not managed (upstream).
        }
        let instances = self.cache.list("Instance", Some(&svc.metadata.namespace));
        let (subsets, over) = endpoints_and_overflow(&svc, &instances);
        let mark = |ann: &mut BTreeMap<String, String>| {
            if over {
                ann.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
            } else {
                ann.remove(OVER_CAPACITY_ANNOTATION);
            }
        };
        match self.store.get("Endpoints", key)? {
            Some(cur)
                if cur.spec == subsets
                    && cur
                        .metadata
                        .annotations
                        .contains_key(OVER_CAPACITY_ANNOTATION)
                        == over =>
            {
                Ok(())
            }
            Some(cur) => {
                let mut next = (*cur).clone();
                next.spec = subsets;
                mark(&mut next.metadata.annotations);
                next.metadata.resource_version.clear();
                self.store.update(next)?;
                self.count(|c| c.store_writes += 1);
                Ok(())
            }
            None => {
                let mut ep = Object {
                    kind: "Endpoints".into(),
                    spec: subsets,
                    ..Object::default()
                };
                ep.metadata.name = svc.metadata.name.clone();
                ep.metadata.namespace = svc.metadata.namespace.clone();
                ep.metadata.labels = svc.metadata.labels.clone();
                mark(&mut ep.metadata.annotations);
                match self.store.create(ep) {
                    Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => Err(Error::Conflict(
                        format!("Endpoints {key} appeared concurrently"),
                    )),
                    Err(e) => Err(e),
                    Ok(_) => {
                        self.count(|c| c.store_writes += 1);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Ready addresses of a Service, from the cache.
    pub(crate) fn ready_addresses(&self, key: &str) -> Result<Vec<String>> {
        if self.cache.get("Service", key).is_none() {
            return Err(Error::NotFound(format!("Service {key}")));
        }
        let Some(ep) = self.cache.get("Endpoints", key) else {
            return Ok(vec![]);
        };
        Ok(ep.spec["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// One ready address: round robin without a hint, a stable choice for a hint.
    pub(crate) fn pick(&self, key: &str, hint: Option<&str>) -> Result<Option<String>> {
        let addrs = self.ready_addresses(key)?;
        if addrs.is_empty() {
            return Ok(None);
        }
        let i = match hint {
            Some(h) => sticky_choice(h, &addrs),
            None => {
                let mut next = self.pickers.next.lock();
                let n = next.entry(key.to_string()).or_insert(0);
                let i = *n % addrs.len();
                *n = n.wrapping_add(1);
                i
            }
        };
        Ok(Some(addrs[i].clone()))
    }
}

/// The address a `hint` sticks to: the one whose hash with the hint is highest
/// (rendezvous hashing). A hint keeps its address while that address stays ready, whatever
/// else joins or leaves; when it leaves, only its hints move, spread over the rest. (Hashing
/// the hint modulo the count would move most hints whenever the count changed.)
fn sticky_choice(hint: &str, addrs: &[String]) -> usize {
    let weight = |addr: &str| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (hint, addr).hash(&mut hasher);
        hasher.finish()
    };
    (0..addrs.len())
        .max_by_key(|&i| (weight(&addrs[i]), std::cmp::Reverse(i)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str, app: &str, ready: bool, phase: &str, addr: Option<&str>) -> Arc<Object> {
        let mut o = Object::from_json(&json!({
            "kind": "Instance",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": app}},
            "status": {"phase": phase, "address": addr,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap();
        o.apply_defaults();
        Arc::new(o)
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_and_skip_the_rest() {
        let svc = Object::from_json(&json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}})).unwrap();
        let is = vec![
            inst("a", "web", true, "Running", Some("10.0.0.1:80")),
            inst("b", "web", false, "Running", Some("10.0.0.2:80")),
            inst("c", "web", true, "Failed", Some("10.0.0.3:80")),
            inst("d", "web", true, "Running", None),
            inst("e", "db", true, "Running", Some("10.0.0.5:80")),
        ];
        let ep = endpoints_for(&svc, &is);
        let addrs = |f: &str| {
            ep[f]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["address"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs("addresses"), ["10.0.0.1:80"]);
        assert_eq!(addrs("notReadyAddresses"), ["10.0.0.2:80"]);
        let no_sel =
            Object::from_json(&json!({"kind": "Service", "metadata": {"name": "x"}, "spec": {}}))
                .unwrap();
        assert_eq!(endpoints_for(&no_sel, &is)["addresses"], json!([]));
    }

    fn addresses(ep: &Value, field: &str) -> Vec<String> {
        ep[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["address"].as_str().unwrap().to_string())
            .collect()
    }

    /// §6.1: with publishNotReadyAddresses every live address is listed as ready, and an
    /// instance being deleted stays listed; without it, a deleted one is left out.
    #[test]
    fn publish_not_ready_addresses_lists_everything_as_ready() {
        let svc = |publish: bool| {
            Object::from_json(&json!({"kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish}}))
            .unwrap()
        };
        let mut leaving = (*inst("c", "web", true, "Running", Some("10.0.0.3:80"))).clone();
        leaving.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        let is = vec![
            inst("a", "web", true, "Running", Some("10.0.0.1:80")),
            inst("b", "web", false, "Running", Some("10.0.0.2:80")),
            Arc::new(leaving),
        ];
        let ep = endpoints_for(&svc(true), &is);
        assert_eq!(
            addresses(&ep, "addresses"),
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
        );
        assert!(addresses(&ep, "notReadyAddresses").is_empty());
        let ep = endpoints_for(&svc(false), &is);
        assert_eq!(addresses(&ep, "addresses"), ["10.0.0.1:80"]);
        assert_eq!(addresses(&ep, "notReadyAddresses"), ["10.0.0.2:80"]);
    }

    /// No address (empty) is no endpoint, and readiness is the first Ready condition's.
    #[test]
    fn empty_addresses_are_skipped_and_the_first_ready_condition_decides() {
        let svc = Object::from_json(&json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}})).unwrap();
        let mut twice = (*inst("b", "web", false, "Running", Some("10.0.0.2:80"))).clone();
        twice.status["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Ready", "status": "True"}));
        let is = vec![inst("a", "web", true, "Running", Some("")), Arc::new(twice)];
        let ep = endpoints_for(&svc, &is);
        assert!(addresses(&ep, "addresses").is_empty());
        assert_eq!(addresses(&ep, "notReadyAddresses"), ["10.0.0.2:80"]);
    }

    /// A hint sticks to its address while that address stays: adding addresses moves only
    /// the hints the new one wins, and removing one moves only the hints it had.
    #[test]
    fn a_hint_keeps_its_address_while_the_set_changes_around_it() {
        let addrs: Vec<String> = (0..10).map(|n| format!("10.0.0.{n}:80")).collect();
        let hints: Vec<String> = (0..2000).map(|n| format!("client-{n}")).collect();
        let picks = |set: &[String]| -> Vec<String> {
            hints
                .iter()
                .map(|h| set[sticky_choice(h, set)].clone())
                .collect()
        };
        let before = picks(&addrs);
        // Every address gets a fair share (2000 hints over 10: 200 each on average).
        for a in &addrs {
            let n = before.iter().filter(|p| *p == a).count();
            assert!((100..=300).contains(&n), "{a}: {n}");
        }
        let mut grown = addrs.clone();
        grown.push("10.0.0.10:80".into());
        for (b, g) in before.iter().zip(picks(&grown)) {
            assert!(g == *b || g == "10.0.0.10:80", "{b} -> {g}");
        }
        let shrunk: Vec<String> = addrs[1..].to_vec();
        for (b, s) in before.iter().zip(picks(&shrunk)) {
            assert!(s == *b || *b == addrs[0], "{b} -> {s}");
        }
    }

    /// A deleted Service leaves no round-robin position behind (Services come and go with
    /// the host's applications; positions kept for gone ones would pile up).
    #[test]
    fn a_deleted_service_forgets_its_round_robin_position() {
        use crate::runtime::test_support::{run, stepped_plane};
        use crate::runtime::{Driver, DriverError, Started};

        struct Addressed;
        impl Driver for Addressed {
            fn start(&self, _: &Object) -> std::result::Result<Started, DriverError> {
                Ok(Started {
                    address: Some("10.0.0.1:80".into()),
                })
            }
            fn stop(&self, _: &Object) -> std::result::Result<(), DriverError> {
                Ok(())
            }
        }
        let (store, clock, cp) = stepped_plane(Arc::new(Addressed));
        let steps = || run(&cp, &clock, 20);
        for o in [
            json!({"kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}}}),
            json!({"kind": "Instance", "metadata": {"name": "i0", "labels": {"app": "web"}},
                   "spec": {}}),
        ] {
            store.create(Object::from_json(&o).unwrap()).unwrap();
        }
        steps();
        assert_eq!(
            cp.pick("default/web", None).unwrap().as_deref(),
            Some("10.0.0.1:80")
        );
        assert_eq!(cp.shared.pickers.next.lock().len(), 1);
        store.delete("Service", "default/web", None).unwrap();
        steps();
        assert!(cp.shared.pickers.next.lock().is_empty());
        let after = cp.pick("default/web", None);
        assert!(!matches!(after, Ok(Some(_))), "{after:?}");
        assert!(
            cp.shared.pickers.next.lock().is_empty(),
            "a pick after the delete adds none"
        );
    }

    /// Over the cap of 1000 addresses: ready ones are kept first, and the object is marked.
    #[test]
    fn over_the_cap_ready_addresses_are_kept_first_and_it_is_marked() {
        let svc = Object::from_json(&json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}})).unwrap();
        let is: Vec<Arc<Object>> = (0..1100)
            .map(|n| {
                let addr = format!("10.0.{}.{}:80", n / 256, n % 256);
                inst(&format!("i{n}"), "web", n % 2 == 0, "Running", Some(&addr))
            })
            .collect();
        let (ep, over) = endpoints_and_overflow(&svc, &is);
        assert!(over);
        assert_eq!(addresses(&ep, "addresses").len(), 550);
        assert_eq!(addresses(&ep, "notReadyAddresses").len(), 450);
        let (_, over) = endpoints_and_overflow(&svc, &is[..1000]);
        assert!(!over);
    }
}
