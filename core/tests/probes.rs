//! Health probes (`k8s-semantics.md` §5): the agent's probe workers on a fake clock with a
//! driver that answers probes itself (thresholds, initial delay, startup gating, liveness
//! restarts, errors, timeouts), the built-in `tcpSocket`, `httpGet` and `exec` handlers
//! against real sockets and processes, and a rollout that stops because the new version
//! fails its readiness probe.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floyd::clock::{Clock, FakeClock};
use floyd::controller::probe::Probes;
use floyd::runtime::probe::run_builtin;
use floyd::runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, Started};
use floyd::{ErrorKind, Object, Probe, ProbeOutcome, Store};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Answers probes from a per-type script (`Ok(true)` unless set) and records each call's
/// type and fake-clock time since `t0`.
struct Scripted {
    clock: Arc<FakeClock>,
    t0: Instant,
    answers: Mutex<HashMap<String, Result<bool, String>>>,
    calls: Mutex<Vec<(String, u64)>>,
    starts: Mutex<u32>,
    stops: Mutex<u32>,
}

impl Scripted {
    fn new(clock: &Arc<FakeClock>) -> Arc<Scripted> {
        Arc::new(Scripted {
            clock: clock.clone(),
            t0: clock.now(),
            answers: Mutex::default(),
            calls: Mutex::default(),
            starts: Mutex::default(),
            stops: Mutex::default(),
        })
    }
    fn answer(&self, t: &str, a: Result<bool, String>) {
        self.answers.lock().insert(t.to_string(), a);
    }
    /// Fake-clock seconds of each call of type `t`.
    fn times(&self, t: &str) -> Vec<u64> {
        self.calls
            .lock()
            .iter()
            .filter(|(ty, _)| ty == t)
            .map(|(_, s)| *s)
            .collect()
    }
}

impl Driver for Scripted {
    fn start(&self, _: &Object) -> Result<Started, DriverError> {
        *self.starts.lock() += 1;
        Ok(Started {
            address: Some("127.0.0.1:1".into()),
        })
    }
    fn stop(&self, _: &Object) -> Result<(), DriverError> {
        *self.stops.lock() += 1;
        Ok(())
    }
    fn probe(&self, _: &Object, p: &Probe) -> Result<ProbeOutcome, DriverError> {
        let t = p.spec["type"].as_str().unwrap().to_string();
        let at = (self.clock.now() - self.t0).as_secs();
        self.calls.lock().push((t.clone(), at));
        match self.answers.lock().get(&t).cloned().unwrap_or(Ok(true)) {
            Ok(true) => Ok(ProbeOutcome::Success),
            Ok(false) => Ok(ProbeOutcome::Failure(format!("{t} says no"))),
            Err(e) => Err(DriverError(e)),
        }
    }
}

/// A stepped control plane on a fake clock running one instance `a` with `probes`, whose
/// probes answer `answers` (others succeed). `run`: run the first probes too (otherwise
/// only the start, and the probes stay queued).
fn plane_with(
    probes: Value,
    answers: &[(&str, Result<bool, String>)],
    run: bool,
) -> (Arc<FakeClock>, Store, Arc<Scripted>, ControlPlane) {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let driver = Scripted::new(&clock);
    for (t, a) in answers {
        driver.answer(t, a.clone());
    }
    let cfg = ControlPlaneConfig {
        clock: clock.clone(),
        driver_threads: 1,
        ..ControlPlaneConfig::default()
    };
    let cp = ControlPlane::stepped(store.clone(), driver.clone(), cfg).unwrap();
    let mut spec = json!({"version": "1"});
    spec.as_object_mut()
        .unwrap()
        .extend(probes.as_object().unwrap().clone());
    store
        .create(
            Object::from_json(
                &json!({"kind": "Instance", "metadata": {"name": "a"}, "spec": spec}),
            )
            .unwrap(),
        )
        .unwrap();
    if run {
        run_all(&cp);
    } else {
        while cp.step().unwrap() {}
        assert!(cp.run_driver_call(), "the start");
        while cp.step().unwrap() {}
    }
    (clock, store, driver, cp)
}

fn plane(probes: Value) -> (Arc<FakeClock>, Store, Arc<Scripted>, ControlPlane) {
    plane_with(probes, &[], true)
}

/// Steps the control plane and runs every queued driver call until nothing is left.
fn run_all(cp: &ControlPlane) {
    while cp.step().unwrap() {}
    while cp.run_driver_call() {
        while cp.step().unwrap() {}
    }
}

/// Advances `secs` one second at a time, running everything at each.
fn pass(clock: &FakeClock, cp: &ControlPlane, secs: u64) {
    for _ in 0..secs {
        clock.advance(Duration::from_secs(1));
        run_all(cp);
    }
}

fn ready(store: &Store) -> Value {
    let i = store.get("Instance", "default/a").unwrap().unwrap();
    i.status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap()
}

fn is_ready(store: &Store) -> bool {
    ready(store)["status"] == "True"
}

#[test]
fn readiness_is_written_after_its_thresholds_in_a_row() {
    let (clock, store, driver, cp) = plane(json!({"readinessProbe": {
        "exec": {"command": ["check"]}, "periodSeconds": 5,
        "successThreshold": 2, "failureThreshold": 3}}));
    // Started, probed once at once (one success of two): not ready yet.
    assert_eq!(
        store.get("Instance", "default/a").unwrap().unwrap().status["phase"],
        "Running"
    );
    assert_eq!(driver.times("readiness"), vec![0]);
    assert_eq!(ready(&store)["reason"], "ReadinessProbePending");
    pass(&clock, &cp, 5);
    assert!(is_ready(&store), "two successes in a row");
    assert_eq!(driver.times("readiness"), vec![0, 5]);

    driver.answer("readiness", Ok(false));
    pass(&clock, &cp, 10);
    assert!(is_ready(&store), "two failures of three keep it ready");
    pass(&clock, &cp, 5);
    let r = ready(&store);
    assert_eq!(
        (r["status"].as_str(), r["reason"].as_str()),
        (Some("False"), Some("ReadinessProbeFailed"))
    );
    assert_eq!(r["message"], "readiness says no");
    // Readiness failing never restarts anything.
    assert_eq!((*driver.starts.lock(), *driver.stops.lock()), (1, 0));
    let s = cp.stats();
    assert_eq!((s.probes, s.probe_failures, s.probe_restarts), (5, 3, 0));
}

#[test]
fn probes_wait_out_the_initial_delay_on_the_period_ticks() {
    // Upstream's worker ticks every period from the start and skips the probe while
    // `now - startedAt < initialDelaySeconds`: with 15 s and 10 s, the first probe is at 20 s.
    let (clock, _store, driver, cp) = plane(json!({"livenessProbe": {
        "tcpSocket": {"port": 1}, "initialDelaySeconds": 15, "periodSeconds": 10}}));
    pass(&clock, &cp, 45);
    assert_eq!(driver.times("liveness"), vec![20, 30, 40]);
}

#[test]
fn a_failing_liveness_probe_restarts_the_instance_with_a_fresh_threshold() {
    let (clock, store, driver, cp) = plane(json!({"livenessProbe": {
        "exec": {"command": ["check"]}, "periodSeconds": 10, "failureThreshold": 2}}));
    assert!(is_ready(&store), "no readiness probe: ready once running");
    driver.answer("liveness", Ok(false));
    pass(&clock, &cp, 10);
    assert_eq!(*driver.stops.lock(), 0, "one failure of two");
    pass(&clock, &cp, 10);
    assert_eq!(*driver.stops.lock(), 1, "killed after the second failure");
    let st = store
        .get("Instance", "default/a")
        .unwrap()
        .unwrap()
        .status
        .clone();
    assert_eq!(ready(&store)["reason"], "LivenessProbeFailed", "{st}");
    assert_eq!(st["restartCount"], 1);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("restarting in 10s"),
        "{st}"
    );
    // The crash-loop backoff (10 s), then a new start whose worker needs two failures again.
    pass(&clock, &cp, 10);
    assert_eq!(*driver.starts.lock(), 2);
    assert!(is_ready(&store));
    // The fresh worker probes at once (30 s): one failure of a fresh two.
    assert_eq!(driver.times("liveness"), vec![0, 10, 20, 30]);
    assert_eq!(*driver.stops.lock(), 1);
    pass(&clock, &cp, 10);
    assert_eq!(*driver.stops.lock(), 2);
    assert_eq!(cp.stats().probe_restarts, 2);
    // Deleting it stops it for good.
    store.delete("Instance", "default/a", None).unwrap();
    pass(&clock, &cp, 30);
    assert!(cp.running_instances().is_empty());
}

#[test]
fn the_startup_probe_gates_liveness_and_readiness() {
    let (clock, store, driver, cp) = plane_with(
        json!({
            "startupProbe": {"exec": {"command": ["s"]}, "periodSeconds": 2, "failureThreshold": 30},
            "livenessProbe": {"exec": {"command": ["l"]}, "periodSeconds": 5},
            "readinessProbe": {"exec": {"command": ["r"]}, "periodSeconds": 5}}),
        &[("startup", Ok(false))],
        true,
    );
    pass(&clock, &cp, 6);
    assert_eq!(driver.times("startup"), vec![0, 2, 4, 6]);
    assert!(driver.times("liveness").is_empty() && driver.times("readiness").is_empty());
    assert_eq!(ready(&store)["reason"], "StartupProbePending");
    driver.answer("startup", Ok(true));
    pass(&clock, &cp, 2);
    // Started at 8 s; the other workers probe on their own next tick (10 s), and the
    // startup worker is on hold.
    assert!(!is_ready(&store));
    pass(&clock, &cp, 12);
    assert_eq!(driver.times("startup"), vec![0, 2, 4, 6, 8]);
    assert_eq!(driver.times("readiness"), vec![10, 15, 20]);
    assert_eq!(driver.times("liveness"), vec![10, 15, 20]);
    assert!(is_ready(&store));
}

#[test]
fn a_startup_probe_that_fails_its_threshold_restarts_the_instance() {
    let (clock, store, driver, cp) = plane_with(
        json!({"startupProbe": {"exec": {"command": ["s"]}, "periodSeconds": 1,
                                "failureThreshold": 3}}),
        &[("startup", Ok(false))],
        true,
    );
    pass(&clock, &cp, 2);
    assert_eq!(*driver.stops.lock(), 1);
    assert_eq!(ready(&store)["reason"], "StartupProbeFailed");
}

#[test]
fn probe_errors_are_tried_three_times_and_count_for_nothing() {
    let (clock, store, driver, cp) = plane_with(
        json!({"livenessProbe": {"exec": {"command": ["l"]}, "periodSeconds": 10,
                                 "failureThreshold": 1}}),
        &[("liveness", Err("cannot reach the host".into()))],
        true,
    );
    pass(&clock, &cp, 20);
    // Three ticks (0, 10, 20 s), three attempts each; no failure, no restart.
    assert_eq!(driver.times("liveness").len(), 9);
    assert_eq!(*driver.stops.lock(), 0);
    assert!(is_ready(&store));
    let s = cp.stats();
    assert_eq!((s.probes, s.probe_failures), (3, 0));
}

#[test]
fn a_probe_that_does_not_return_fails_a_second_after_its_timeout() {
    let (clock, _store, driver, cp) = plane_with(
        json!({"livenessProbe": {"exec": {"command": ["l"]}, "periodSeconds": 10,
                                 "timeoutSeconds": 3, "failureThreshold": 1}}),
        &[],
        false,
    );
    // The probe queued at 0 s never runs (driver calls are left queued).
    let settle = |secs| {
        for _ in 0..secs {
            clock.advance(Duration::from_secs(1));
            while cp.step().unwrap() {}
        }
    };
    settle(3);
    assert_eq!(cp.stats().probe_failures, 0);
    settle(1);
    assert_eq!(cp.stats().probe_failures, 1, "failed at timeout + 1 s");
    // The kill is queued behind the timed-out probe, which is skipped.
    run_all(&cp);
    assert!(
        driver.times("liveness").is_empty(),
        "the timed-out call never ran"
    );
    assert_eq!(*driver.stops.lock(), 1);
}

#[test]
fn an_instance_with_an_invalid_probe_is_not_started() {
    let (_clock, store, driver, _cp) = plane(json!({"readinessProbe": {"tcpSocket": {"port": 0}}}));
    assert_eq!(*driver.starts.lock(), 0);
    let st = store
        .get("Instance", "default/a")
        .unwrap()
        .unwrap()
        .status
        .clone();
    assert_eq!(ready(&store)["reason"], "InvalidProbe", "{st}");
    assert!(
        ready(&store)["message"]
            .as_str()
            .unwrap()
            .contains("spec.readinessProbe.tcpSocket.port"),
        "{st}"
    );
}

#[test]
fn templates_with_invalid_probes_are_invalid() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let cp = ControlPlane::stepped(
        store.clone(),
        Scripted::new(&clock),
        ControlPlaneConfig {
            clock: clock.clone(),
            ..ControlPlaneConfig::default()
        },
    )
    .unwrap();
    store
        .create(
            Object::from_json(&json!({
                "kind": "ReplicaSet", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"livenessProbe": {"httpGet": {"port": "http"}}}}}
            }))
            .unwrap(),
        )
        .unwrap();
    run_all(&cp);
    assert_eq!(cp.stats().sync_errors, 1);
    assert!(store.list("Instance", None, None).unwrap().0.is_empty());
}

// ---------------------------------------------------------------------------------------
// Built-in handlers, against real sockets and processes

fn probe(spec: Value) -> Probe {
    let p = Probes::from_instance_spec(&json!({"readinessProbe": spec}), "spec").unwrap();
    p.readiness.unwrap()
}

fn instance_at(addr: &str) -> Object {
    let mut o = Object::from_json(&json!({"kind": "Instance", "metadata": {"name": "a"}})).unwrap();
    o.status = json!({"address": addr});
    o
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn tcp_probes_succeed_on_a_listening_port_only() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let inst = instance_at(&format!("127.0.0.1:{port}"));
    assert_eq!(
        run_builtin(&inst, &probe(json!({"tcpSocket": {"port": port}}))).unwrap(),
        ProbeOutcome::Success
    );
    let closed = closed_port();
    match run_builtin(
        &inst,
        &probe(json!({"tcpSocket": {"port": closed, "host": "127.0.0.1"}})),
    )
    .unwrap()
    {
        ProbeOutcome::Failure(m) => assert!(m.contains(&format!("127.0.0.1:{closed}")), "{m}"),
        o => panic!("{o:?}"),
    }
}

/// A tiny HTTP server: answers each connection from `route(path, request)` with
/// `(status, extra headers)`, and records the requests.
fn http_server(
    route: impl Fn(&str) -> (u16, String) + Send + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = Vec::new();
            let mut b = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf).to_string();
            let path = req.split(' ').nth(1).unwrap_or("").to_string();
            s.lock().push(req);
            let (code, extra) = route(&path);
            let _ = write!(
                c,
                "HTTP/1.1 {code} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, seen)
}

#[test]
fn http_probes_follow_upstreams_status_and_redirect_rules() {
    let (port, seen) = http_server(|path| match path {
        "/ok" => (200, String::new()),
        "/moved" => (302, "Location: /ok\r\n".into()),
        "/away" => (301, "Location: http://elsewhere.invalid/x\r\n".into()),
        "/loop" => (302, "Location: /loop\r\n".into()),
        _ => (500, String::new()),
    });
    let inst = instance_at(&format!("127.0.0.1:{port}"));
    let run = |path: &str| {
        run_builtin(
            &inst,
            &probe(json!({"httpGet": {"port": port, "path": path,
                                     "httpHeaders": [{"name": "X-Check", "value": "yes"}]}})),
        )
        .unwrap()
    };
    assert_eq!(run("/ok"), ProbeOutcome::Success);
    let first = seen.lock()[0].clone();
    assert!(first.starts_with("GET /ok HTTP/1.1\r\n"), "{first}");
    assert!(
        first.contains("X-Check: yes\r\n") && first.contains("User-Agent: floyd-probe/"),
        "{first}"
    );
    assert_eq!(
        run("/broken"),
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    seen.lock().clear();
    assert_eq!(run("/moved"), ProbeOutcome::Success);
    assert_eq!(seen.lock().len(), 2, "the same-host redirect was followed");
    seen.lock().clear();
    assert_eq!(
        run("/away"),
        ProbeOutcome::Success,
        "an off-host redirect is its 3xx"
    );
    assert_eq!(seen.lock().len(), 1);
    seen.lock().clear();
    assert_eq!(
        run("/loop"),
        ProbeOutcome::Failure("stopped after 10 redirects".into())
    );
    assert_eq!(seen.lock().len(), 11);
}

#[test]
fn an_http_probe_against_a_silent_server_fails_at_its_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accepts (the kernel does) but never answers.
    let inst = instance_at(&format!("127.0.0.1:{port}"));
    match run_builtin(
        &inst,
        &probe(json!({"httpGet": {"port": port}, "timeoutSeconds": 1})),
    )
    .unwrap()
    {
        ProbeOutcome::Failure(m) => assert!(
            m.starts_with(&format!("Get \"http://127.0.0.1:{port}/\"")),
            "{m}"
        ),
        o => panic!("{o:?}"),
    }
    drop(l);
}

#[test]
fn exec_probes_use_the_exit_status_and_are_killed_at_the_timeout() {
    let inst = instance_at("10.1.2.3:80");
    let run = |cmd: Value| run_builtin(&inst, &probe(json!({"exec": {"command": cmd}}))).unwrap();
    assert_eq!(run(json!(["true"])), ProbeOutcome::Success);
    assert!(matches!(run(json!(["false"])), ProbeOutcome::Failure(_)));
    assert_eq!(
        run(json!([
            "sh",
            "-c",
            "test \"$FLOYD_INSTANCE\" = default/a && test \"$FLOYD_ADDRESS\" = 10.1.2.3:80 \
                    && test \"$FLOYD_PROBE\" = readiness"
        ])),
        ProbeOutcome::Success
    );
    match run(json!(["/nonexistent/floyd-probe"])) {
        ProbeOutcome::Failure(m) => assert!(m.contains("could not run"), "{m}"),
        o => panic!("{o:?}"),
    }
    match run(json!(["sleep", "30"])) {
        ProbeOutcome::Failure(m) => assert!(m.contains("timed out"), "{m}"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn https_and_grpc_need_the_drivers_own_probe() {
    let inst = instance_at("127.0.0.1:1");
    let e = run_builtin(
        &inst,
        &probe(json!({"httpGet": {"port": 1, "scheme": "HTTPS"}})),
    )
    .unwrap_err();
    assert!(e.0.contains("HTTPS"), "{e}");
    let e = run_builtin(&inst, &probe(json!({"grpc": {"port": 1}}))).unwrap_err();
    assert!(e.0.contains("gRPC"), "{e}");
}

// ---------------------------------------------------------------------------------------
// A rollout stopped by a failing readiness probe (threaded, real clock, built-in probes)

/// Starts nothing; the probes go to real ports on 127.0.0.1.
struct Nothing;
impl Driver for Nothing {
    fn start(&self, _: &Object) -> Result<Started, DriverError> {
        Ok(Started {
            address: Some("127.0.0.1".into()),
        })
    }
    fn stop(&self, _: &Object) -> Result<(), DriverError> {
        Ok(())
    }
}

#[test]
fn a_rollout_whose_new_version_fails_readiness_stops_and_keeps_the_old_instances() {
    let healthy = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = healthy.local_addr().unwrap().port();
    let bad = closed_port();
    let store = Store::memory();
    let cp = ControlPlane::new(
        store.clone(),
        Arc::new(Nothing),
        ControlPlaneConfig::default(),
    )
    .unwrap();
    cp.start().unwrap();
    let template = |version: &str, port: u16| {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"version": version, "ports": [{"name": "http", "port": port}],
                        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}})
    };
    let d = store
        .create(
            Object::from_json(&json!({
                "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                         "progressDeadlineSeconds": 60,
                         "strategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                         "template": template("1", good)}
            }))
            .unwrap(),
        )
        .unwrap();
    let st = cp
        .wait_for_rollout("default/web", Duration::from_secs(30))
        .unwrap();
    assert_eq!(st["readyReplicas"], 3, "{st}");

    let mut next = (*store.get("Deployment", "default/web").unwrap().unwrap()).clone();
    next.spec["template"] = template("2", bad);
    // A short deadline for the broken version only: v1's own rollout may take a while on a
    // loaded machine.
    next.spec["progressDeadlineSeconds"] = json!(3);
    store.update(next).unwrap();
    let err = cp
        .wait_for_rollout("default/web", Duration::from_secs(30))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Expired, "{err}");
    assert!(
        err.to_string().contains("ProgressDeadlineExceeded"),
        "{err}"
    );
    // maxUnavailable 0: the three old instances still serve; one new one is not ready.
    let insts = store.list("Instance", None, None).unwrap().0;
    let ready_of = |v: &str| {
        insts
            .iter()
            .filter(|i| i.spec["version"] == v)
            .filter(|i| i.status["conditions"][0]["status"] == "True")
            .count()
    };
    assert_eq!((ready_of("1"), ready_of("2")), (3, 0));
    let new = insts
        .iter()
        .find(|i| i.spec["version"] == "2")
        .expect("a surge instance");
    assert_eq!(
        new.status["conditions"][0]["reason"],
        "ReadinessProbeFailed"
    );
    cp.stop().unwrap();
    drop((d, healthy));
}
