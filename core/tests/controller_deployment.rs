//! Table-driven tests for the pure Deployment controller core (`floyd::controller::
//! deployment`): fenceposts, new-ReplicaSet sizes, old-ReplicaSet reconciliation,
//! proportional scaling (K7), saturation, status and the progress predicates (K8, K9),
//! cleanup, rollback, Recreate (K11) and BlueGreen.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use floyd::controller::deployment::util::*;
use floyd::controller::deployment::*;
use floyd::controller::intstr::IntOrString;
use floyd::controller::replicaset::{ReplicaSetSpec, ReplicaSetStatus, ReplicaSetView};
use floyd::controller::{Condition, InstanceView, parse_time};
use floyd::store::Object;
use serde_json::{Value, json};

fn t0() -> SystemTime {
    parse_time("2026-01-01T00:00:00Z").unwrap()
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

fn ios(v: Value) -> IntOrString {
    IntOrString::from_json(&v, "x").unwrap()
}

fn spec(replicas: i32, surge: Value, unavail: Value) -> DeploymentSpec {
    DeploymentSpec {
        replicas,
        strategy: Strategy::RollingUpdate {
            max_surge: ios(surge),
            max_unavailable: ios(unavail),
        },
        revision_history_limit: Some(10),
        progress_deadline_seconds: Some(600),
        template: json!({"metadata": {"labels": {"app": "web"}}, "spec": {"version": "2"}}),
        ..Default::default()
    }
}

fn dep(s: DeploymentSpec) -> DeploymentView {
    DeploymentView {
        name: "web".into(),
        namespace: "default".into(),
        generation: 1,
        spec: s,
        ..Default::default()
    }
}

fn rs(name: &str, created: u64, replicas: i32, available: i32) -> ReplicaSetView {
    ReplicaSetView {
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        creation: Some(at(created)),
        spec: ReplicaSetSpec {
            replicas,
            ..Default::default()
        },
        status: ReplicaSetStatus {
            replicas,
            ready_replicas: available,
            available_replicas: available,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn with_ann(mut r: ReplicaSetView, pairs: &[(&str, &str)]) -> ReplicaSetView {
    for (k, v) in pairs {
        r.annotations.insert(k.to_string(), v.to_string());
    }
    r
}

#[test]
fn fenceposts_table() {
    // (maxSurge, maxUnavailable, replicas, resolved (surge, unavailable))
    let cases = [
        (json!("25%"), json!("25%"), 10, (3, 2)),
        (json!("25%"), json!("25%"), 4, (1, 1)),
        (json!("25%"), json!("25%"), 1, (1, 0)),
        (json!("25%"), json!("25%"), 0, (0, 1)),
        (json!(0), json!("10%"), 5, (0, 1)), // both resolve to 0 → unavailable 1
        (json!("1%"), json!(0), 10, (1, 0)), // surge rounds up
        (json!(0), json!("19%"), 10, (0, 1)),
        (json!(0), json!("20%"), 10, (0, 2)),
        (json!(1), json!(0), 3, (1, 0)),
        (json!("50%"), json!("50%"), 3, (2, 1)),
        (json!("150%"), json!(0), 3, (5, 0)),
        (json!(0), json!("100%"), 7, (0, 7)),
        (json!(5), json!(10), 3, (5, 10)), // ints are not capped here
    ];
    for (s, u, r, want) in cases {
        let got = resolve_fenceposts(&ios(s.clone()), &ios(u.clone()), r).unwrap();
        assert_eq!(got, want, "{s}/{u} of {r}");
    }
    assert!(resolve_fenceposts(&ios(json!("x")), &ios(json!(1)), 3).is_err());
    // MaxUnavailable is capped at replicas, and 0 for replicas 0 or non-rolling strategies.
    assert_eq!(max_unavailable(&spec(3, json!(5), json!(10))), 3);
    assert_eq!(max_unavailable(&spec(0, json!(1), json!(1))), 0);
    assert_eq!(min_available(&spec(10, json!("25%"), json!("25%"))), 8);
    let recreate = DeploymentSpec {
        replicas: 5,
        strategy: Strategy::Recreate,
        ..Default::default()
    };
    assert_eq!(
        (
            max_surge(&recreate),
            max_unavailable(&recreate),
            min_available(&recreate)
        ),
        (0, 0, 0)
    );
}

#[test]
fn new_rs_new_replicas_table() {
    // (replicas, maxSurge, Σ old spec, new spec, expected)
    let cases = [
        (10, json!("25%"), 10, 0, 3),
        (10, json!("25%"), 10, 3, 3), // at replicas + surge: unchanged
        (10, json!("25%"), 8, 3, 5),  // 11 of 13: +2
        (10, json!("25%"), 0, 9, 10), // never beyond replicas
        (10, json!("25%"), 12, 2, 2), // above the cap (after a scale-down): unchanged
        (3, json!(1), 3, 0, 1),
        (3, json!(0), 3, 0, 0),
        (3, json!("100%"), 3, 0, 3),
        (1, json!("25%"), 1, 0, 1),
    ];
    for (r, surge, old, new, want) in cases {
        let d = spec(r, surge.clone(), json!(1));
        let olds = if old > 0 {
            vec![rs("old", 0, old, old)]
        } else {
            vec![]
        };
        let got = new_rs_new_replicas(&d, &rs("new", 1, new, 0), &olds).unwrap();
        assert_eq!(got, want, "R={r} surge={surge} old={old} new={new}");
    }
    let mut recreate = spec(7, json!(1), json!(1));
    recreate.strategy = Strategy::Recreate;
    assert_eq!(
        new_rs_new_replicas(&recreate, &rs("new", 1, 0, 0), &[rs("o", 0, 7, 7)]).unwrap(),
        7
    );
    // reconcileNewReplicaSet
    let d = spec(3, json!(1), json!(0));
    assert_eq!(
        reconcile_new_replica_set(&d, &rs("n", 1, 3, 0), &[]).unwrap(),
        None
    );
    assert_eq!(
        reconcile_new_replica_set(&d, &rs("n", 1, 5, 0), &[]).unwrap(),
        Some(3)
    );
    assert_eq!(
        reconcile_new_replica_set(&d, &rs("n", 1, 0, 0), &[rs("o", 0, 3, 3)]).unwrap(),
        Some(1)
    );
    assert_eq!(
        reconcile_new_replica_set(&d, &rs("n", 1, 1, 0), &[rs("o", 0, 3, 3)]).unwrap(),
        None
    );
}

#[test]
fn reconcile_old_replica_sets_table() {
    let d = spec(3, json!(1), json!(0));
    // New RS not yet available: nothing may go down.
    let p = reconcile_old_replica_sets(&d, &rs("n", 9, 1, 0), &[rs("o", 0, 3, 3)]);
    assert_eq!(p, OldRsPlan::default());
    assert_eq!(
        max_scaled_down(&d, &rs("n", 9, 1, 0), &[rs("o", 0, 3, 3)]),
        0
    );
    // New RS has one available: one old goes.
    let p = reconcile_old_replica_sets(&d, &rs("n", 9, 1, 1), &[rs("o", 0, 3, 3)]);
    assert_eq!((p.cleaned, p.scaled_down), (0, 1));
    assert_eq!(
        p.scales,
        vec![Scale {
            name: "o".into(),
            from: 3,
            to: 2
        }]
    );
    // Unhealthy old replicas are cleaned up first, within maxScaledDown.
    let p = reconcile_old_replica_sets(&d, &rs("n", 9, 1, 1), &[rs("o", 0, 3, 1)]);
    assert_eq!((p.cleaned, p.scaled_down), (1, 0));
    assert_eq!(
        p.scales,
        vec![Scale {
            name: "o".into(),
            from: 3,
            to: 2
        }]
    );
    // Oldest first, both in cleanup and in scale-down (ties by name).
    let d10 = spec(10, json!("25%"), json!("25%"));
    let olds = [rs("b", 5, 3, 0), rs("a", 5, 2, 2), rs("z", 1, 4, 4)];
    let new = rs("n", 9, 3, 3);
    // all = 12, min = 8, newUnavailable = 0 → maxScaledDown 4.
    assert_eq!(max_scaled_down(&d10, &new, &olds), 4);
    let p = reconcile_old_replica_sets(&d10, &new, &olds);
    // Cleanup: z healthy, a healthy, b 3 unhealthy → b to 0 (3). Scale-down: available
    // 0+2+4+3 = 9 > 8 → budget 1 → oldest with replicas: z 4 → 3.
    assert_eq!(
        p.scales,
        vec![
            Scale {
                name: "b".into(),
                from: 3,
                to: 0
            },
            Scale {
                name: "z".into(),
                from: 4,
                to: 3
            },
        ]
    );
    assert!(p.scaled());
    // Upstream's error: more available than spec on an old RS aborts with no scaling reported.
    let p = reconcile_old_replica_sets(&d, &rs("n", 9, 2, 2), &[rs("o", 0, 2, 3)]);
    assert!(p.error.is_some() && !p.scaled());
    // No old replicas: nothing.
    assert_eq!(
        reconcile_old_replica_sets(&d, &rs("n", 9, 3, 3), &[]),
        OldRsPlan::default()
    );
    // The rolling step combines both.
    assert_eq!(
        rolling_update_step(&d, &rs("n", 9, 0, 0), &[rs("o", 0, 3, 3)]).unwrap(),
        RollingStep::ScaleNew(Scale {
            name: "n".into(),
            from: 0,
            to: 1
        })
    );
    assert_eq!(
        rolling_update_step(&d, &rs("n", 9, 1, 1), &[rs("o", 0, 3, 3)]).unwrap(),
        RollingStep::ScaleOld {
            scales: vec![Scale {
                name: "o".into(),
                from: 3,
                to: 2
            }],
            scaled: true
        }
    );
    assert_eq!(
        rolling_update_step(&d, &rs("n", 9, 3, 3), &[rs("o", 0, 0, 0)]).unwrap(),
        RollingStep::Idle
    );
}

fn sizes(plan: &[Scale]) -> BTreeMap<String, i32> {
    plan.iter().map(|s| (s.name.clone(), s.to)).collect()
}

#[test]
fn k7_proportional_scaling_8_5_0_from_10_to_30() {
    // R=10, 25%/25% → max-replicas 13 = 8 + 5 + 0.
    let ann = [
        (DESIRED_REPLICAS_ANNOTATION, "10"),
        (MAX_REPLICAS_ANNOTATION, "13"),
    ];
    let a = with_ann(rs("a", 0, 8, 8), &ann);
    let b = with_ann(rs("b", 1, 5, 0), &ann);
    let c = with_ann(rs("c", 2, 0, 0), &ann);
    let mut d = dep(spec(30, json!("25%"), json!("25%")));
    d.status.replicas = 13;
    assert!(is_scaling_event(&d.spec, Some(&c), &[a.clone(), b.clone()]));
    // allowed = 30 + 8 = 38, toAdd 25: a → round(8·38/13)=23 (+15), b → round(5·38/13)=15
    // (+10), leftover 0; c (empty) stays out.
    let plan = scale_plan(&d, Some(&c), &[a.clone(), b.clone()]);
    assert_eq!(
        sizes(&plan),
        BTreeMap::from([("a".into(), 23), ("b".into(), 15)])
    );
    assert_eq!(plan.iter().map(|s| s.to).sum::<i32>(), 38);
    assert_eq!(get_proportion(&a, &d, 25, 0), 15);
    assert_eq!(get_proportion(&b, &d, 25, 15), 10);
    assert_eq!(get_proportion(&c, &d, 25, 25), 0);
    // And back down 30 → 10: allowed 13, toAdd −25, largest first (ties older first).
    let ann38 = [
        (DESIRED_REPLICAS_ANNOTATION, "30"),
        (MAX_REPLICAS_ANNOTATION, "38"),
    ];
    let a2 = with_ann(rs("a", 0, 23, 23), &ann38);
    let b2 = with_ann(rs("b", 1, 15, 0), &ann38);
    let d10 = dep(spec(10, json!("25%"), json!("25%")));
    let plan = scale_plan(&d10, None, &[a2, b2]);
    // a: round(23·13/38)=round(7.87)=8 → −15; b: round(15·13/38)=round(5.13)=5 → −10.
    assert_eq!(
        sizes(&plan),
        BTreeMap::from([("a".into(), 8), ("b".into(), 5)])
    );
}

#[test]
fn proportional_scaling_leftovers_ties_and_zero() {
    // Three equal RSs of 1 (max 3), scale 3 → 4 with surge 0: each fraction rounds to 0, the
    // leftover 1 goes to the first in order: equal sizes while growing → newest first.
    let ann = [
        (DESIRED_REPLICAS_ANNOTATION, "3"),
        (MAX_REPLICAS_ANNOTATION, "3"),
    ];
    let rss: Vec<ReplicaSetView> = (0..3)
        .map(|i| with_ann(rs(&format!("r{i}"), i, 1, 1), &ann))
        .collect();
    let d = dep(spec(4, json!(0), json!(1)));
    let plan = scale_plan(&d, None, &rss);
    assert_eq!(plan[0].name, "r2");
    assert_eq!(
        sizes(&plan),
        BTreeMap::from([("r0".into(), 1), ("r1".into(), 1), ("r2".into(), 2)])
    );
    // Shrinking 3 → 2: equal sizes → oldest first takes the leftover −1.
    let d2 = dep(spec(2, json!(0), json!(1)));
    let plan = scale_plan(&d2, None, &rss);
    assert_eq!(plan[0].name, "r0");
    assert_eq!(
        sizes(&plan),
        BTreeMap::from([("r0".into(), 0), ("r1".into(), 1), ("r2".into(), 1)])
    );
    // Scaling to zero: every active RS to 0.
    let d0 = dep(spec(0, json!(1), json!(1)));
    assert!(scale_plan(&d0, None, &rss).iter().all(|s| s.to == 0));
    // Missing annotation → deployment.status.replicas; 0 there → no proportion.
    let bare = rs("x", 0, 4, 4);
    let mut dx = dep(spec(10, json!(0), json!(1)));
    dx.status.replicas = 5;
    assert_eq!(get_replica_set_fraction(&bare, &dx), 4); // round(4·10/5) − 4
    dx.status.replicas = 0;
    assert_eq!(get_replica_set_fraction(&bare, &dx), 0);
    // Round half away from zero.
    assert_eq!(
        (
            round_to_i32(2.5),
            round_to_i32(-2.5),
            round_to_i32(2.49),
            round_to_i32(-0.5)
        ),
        (3, -3, 2, -1)
    );
}

#[test]
fn saturation_and_active_or_latest() {
    let d = spec(3, json!(1), json!(0));
    let sat = with_ann(rs("n", 5, 3, 3), &[(DESIRED_REPLICAS_ANNOTATION, "3")]);
    assert!(is_saturated(&d, Some(&sat)));
    assert!(!is_saturated(&d, None));
    assert!(!is_saturated(&d, Some(&rs("n", 5, 3, 3))), "no annotation");
    assert!(!is_saturated(
        &d,
        Some(&with_ann(
            rs("n", 5, 3, 2),
            &[(DESIRED_REPLICAS_ANNOTATION, "3")]
        ))
    ));
    assert!(!is_saturated(
        &d,
        Some(&with_ann(
            rs("n", 5, 3, 3),
            &[(DESIRED_REPLICAS_ANNOTATION, "4")]
        ))
    ));
    // Saturated new RS: old active ones go to 0 (scale path step 2).
    let dv = dep(d.clone());
    let plan = scale_plan(
        &dv,
        Some(&sat),
        &[rs("o1", 0, 1, 1), rs("o2", 1, 0, 0), rs("o3", 2, 2, 2)],
    );
    assert_eq!(
        sizes(&plan),
        BTreeMap::from([("o1".into(), 0), ("o3".into(), 0)])
    );
    // FindActiveOrLatest.
    let olds = [rs("o1", 0, 0, 0), rs("o2", 3, 0, 0), rs("o3", 1, 0, 0)];
    assert_eq!(find_active_or_latest(None, &[]), None);
    assert_eq!(
        find_active_or_latest(None, &olds).unwrap().name,
        "o2",
        "newest old"
    );
    let n0 = rs("n", 9, 0, 0);
    assert_eq!(find_active_or_latest(Some(&n0), &olds).unwrap().name, "n");
    let one = [rs("o1", 0, 0, 0), rs("o2", 3, 2, 2)];
    assert_eq!(find_active_or_latest(Some(&n0), &one).unwrap().name, "o2");
    let n1 = rs("n", 9, 1, 0);
    assert_eq!(find_active_or_latest(Some(&n1), &one), None);
    // The only active RS is set to replicas (scale path step 1); equal → no write.
    assert_eq!(
        scale_plan(&dv, Some(&n0), &one),
        vec![Scale {
            name: "o2".into(),
            from: 2,
            to: 3
        }]
    );
    let three = [rs("o", 0, 3, 3)];
    assert!(scale_plan(&dv, None, &three).is_empty());
}

fn progressing(reason: &str, status: &str, updated: u64) -> Condition {
    Condition {
        type_: PROGRESSING.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        last_update_time: Some(at(updated)),
        last_transition_time: Some(at(updated)),
    }
}

fn dstatus(
    replicas: i32,
    updated: i32,
    ready: i32,
    available: i32,
    generation: i64,
) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: generation,
        replicas,
        updated_replicas: updated,
        ready_replicas: ready,
        available_replicas: available,
        ..Default::default()
    }
}

#[test]
fn completion_and_progress_predicates() {
    let d = dep(spec(3, json!(1), json!(0)));
    // (status, complete)
    for (s, want) in [
        (dstatus(3, 3, 3, 3, 1), true),
        (dstatus(3, 3, 3, 3, 2), true),
        (dstatus(3, 3, 3, 3, 0), false),
        (dstatus(4, 3, 3, 3, 1), false),
        (dstatus(3, 2, 3, 3, 1), false),
        (dstatus(3, 3, 3, 2, 1), false),
    ] {
        assert_eq!(deployment_complete(&d, &s), want, "{s:?}");
    }
    let mut d = dep(spec(3, json!(1), json!(0)));
    d.status = dstatus(4, 1, 3, 3, 1);
    // (new status, progressing)
    for (s, want) in [
        (dstatus(4, 1, 3, 3, 1), false),
        (dstatus(4, 2, 3, 3, 1), true),  // more updated
        (dstatus(3, 1, 3, 3, 1), true),  // fewer old
        (dstatus(4, 1, 4, 3, 1), true),  // more ready
        (dstatus(4, 1, 3, 4, 1), true),  // more available
        (dstatus(5, 1, 2, 2, 1), false), // worse
    ] {
        assert_eq!(deployment_progressing(&d, &s), want, "{s:?}");
    }
}

#[test]
fn timeout_predicate_table() {
    let d = dep(spec(3, json!(1), json!(0))); // deadline 600 s
    let with = |c: Option<Condition>| DeploymentStatus {
        conditions: c.into_iter().collect(),
        ..Default::default()
    };
    // (condition, now, timed out)
    let cases = [
        (None, 10_000, false),
        (
            Some(progressing(NEW_RS_AVAILABLE_REASON, "True", 0)),
            10_000,
            false,
        ),
        (
            Some(progressing(TIMED_OUT_REASON, "False", 9_999)),
            10_000,
            true,
        ),
        (Some(progressing(RS_UPDATED_REASON, "True", 0)), 600, false), // at the deadline: not yet
        (Some(progressing(RS_UPDATED_REASON, "True", 0)), 601, true),
        (
            Some(progressing(FOUND_NEW_RS_REASON, "True", 100)),
            650,
            false,
        ),
        (Some(progressing(RESUMED_REASON, "Unknown", 100)), 701, true),
    ];
    for (c, now, want) in cases {
        assert_eq!(
            deployment_timed_out(&d, &with(c.clone()), at(now)),
            want,
            "{c:?} at {now}"
        );
    }
    let mut none = dep(spec(3, json!(1), json!(0)));
    none.spec.progress_deadline_seconds = Some(i32::MAX);
    assert!(!has_progress_deadline(&none.spec));
    assert!(!deployment_timed_out(
        &none,
        &with(Some(progressing(RS_UPDATED_REASON, "True", 0))),
        at(1 << 40)
    ));
}

#[test]
fn sync_rollout_status_reasons() {
    let mut d = dep(spec(3, json!(1), json!(0)));
    let new = rs("web-new", 10, 3, 3);
    // Complete → NewReplicaSetAvailable, Available True.
    d.status = dstatus(4, 2, 3, 3, 1);
    d.status.conditions = vec![progressing(RS_UPDATED_REASON, "True", 5)];
    let s = sync_rollout_status(&d, Some(&new), &[], at(20));
    let p = s
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .unwrap();
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("True", NEW_RS_AVAILABLE_REASON)
    );
    assert_eq!(
        p.message,
        "ReplicaSet \"web-new\" has successfully progressed."
    );
    assert_eq!(
        p.last_transition_time,
        Some(at(5)),
        "status unchanged keeps the transition time"
    );
    let a = s.conditions.iter().find(|c| c.type_ == AVAILABLE).unwrap();
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("True", MINIMUM_REPLICAS_AVAILABLE)
    );
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (3, 3, 3, 0)
    );
    // Progress → ReplicaSetUpdated with a fresh lastUpdateTime, transition kept from True.
    let mut d = dep(spec(3, json!(1), json!(0)));
    d.status = dstatus(4, 1, 3, 3, 1);
    d.status.conditions = vec![progressing(RS_UPDATED_REASON, "True", 5)];
    let new = rs("web-new", 10, 2, 1);
    let old = rs("web-old", 0, 2, 2);
    let s = sync_rollout_status(&d, Some(&new), std::slice::from_ref(&old), at(30));
    let p = s
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .unwrap();
    assert_eq!(p.reason, RS_UPDATED_REASON);
    assert_eq!(
        (p.last_update_time, p.last_transition_time),
        (Some(at(30)), Some(at(5)))
    );
    assert_eq!(p.message, "ReplicaSet \"web-new\" is progressing.");
    // No progress and past the deadline → ProgressDeadlineExceeded, False.
    d.status = dstatus(4, 2, 3, 3, 1);
    d.status.conditions = vec![progressing(RS_UPDATED_REASON, "True", 5)];
    let s = sync_rollout_status(&d, Some(&new), std::slice::from_ref(&old), at(606));
    let p = s
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .unwrap();
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("False", TIMED_OUT_REASON)
    );
    assert_eq!(
        p.message,
        "ReplicaSet \"web-new\" has timed out progressing."
    );
    // Before the deadline: unchanged, and the requeue lands on the deadline (K9).
    let s = sync_rollout_status(&d, Some(&new), std::slice::from_ref(&old), at(300));
    assert_eq!(
        s.conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap()
            .reason,
        RS_UPDATED_REASON
    );
    assert_eq!(
        requeue_stuck_deployment(&d, &s, at(300)),
        StuckRequeue::After(Duration::from_secs(305))
    );
    // No deadline → Progressing removed.
    let mut nd = d.clone();
    nd.spec.progress_deadline_seconds = Some(i32::MAX);
    let s = sync_rollout_status(&nd, Some(&new), std::slice::from_ref(&old), at(300));
    assert!(s.conditions.iter().all(|c| c.type_ != PROGRESSING));
    // Available False below replicas − maxUnavailable.
    let s = sync_rollout_status(&d, Some(&rs("n", 10, 3, 0)), &[rs("o", 0, 1, 1)], at(1));
    let a = s.conditions.iter().find(|c| c.type_ == AVAILABLE).unwrap();
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("False", MINIMUM_REPLICAS_UNAVAILABLE)
    );
    assert_eq!(s.unavailable_replicas, 3);
    // ReplicaFailure copied from the new RS first, else any RS; removed when none.
    let mut failing = rs("n", 10, 3, 0);
    failing.status.conditions = vec![Condition {
        type_: "ReplicaFailure".into(),
        status: "True".into(),
        reason: "FailedCreate".into(),
        message: "quota".into(),
        last_update_time: None,
        last_transition_time: Some(at(7)),
    }];
    let s = sync_rollout_status(&d, Some(&rs("n2", 10, 3, 0)), &[failing.clone()], at(8));
    let f = s
        .conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure")
        .unwrap();
    assert_eq!(
        (f.reason.as_str(), f.last_update_time),
        ("FailedCreate", Some(at(7)))
    );
    let mut with_failure = d.clone();
    with_failure.status.conditions.push(f.clone());
    let s = sync_rollout_status(&with_failure, Some(&new), &[old], at(8));
    assert!(s.conditions.iter().all(|c| c.type_ != "ReplicaFailure"));
}

#[test]
fn replica_failure_falls_back_to_the_oldest_old_replica_set() {
    // getReplicaFailures: the new ReplicaSet's ReplicaFailure first; else the first among
    // the old ReplicaSets in creation order (FindOldReplicaSets keeps FindNewReplicaSet's
    // sort), not in name order.
    let d = dep(spec(3, json!(1), json!(0)));
    let failure = |message: &str| Condition {
        type_: "ReplicaFailure".into(),
        status: "True".into(),
        reason: "FailedCreate".into(),
        message: message.into(),
        last_update_time: None,
        last_transition_time: Some(at(7)),
    };
    let mut younger = rs("web-a", 20, 1, 0);
    younger.status.conditions = vec![failure("younger")];
    let mut older = rs("web-b", 10, 1, 0);
    older.status.conditions = vec![failure("older")];
    let new = rs("web-new", 30, 1, 0);
    // Name order first, as the store lists them.
    let s = sync_rollout_status(&d, Some(&new), &[younger, older], at(8));
    let f = s
        .conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure")
        .unwrap();
    assert_eq!(f.message, "older");
}

#[test]
fn k8_a_completed_rollout_never_times_out_on_a_late_template_change() {
    // A rollout completed at t=0 with PDS 60 s; at t=1 h the template changes and a new RS
    // appears. The condition must not be ProgressDeadlineExceeded before lastUpdate + 60 s of
    // the *new* rollout.
    let mut d = dep(spec(3, json!(1), json!(0)));
    d.spec.progress_deadline_seconds = Some(60);
    d.status = dstatus(3, 3, 3, 3, 1);
    d.status.conditions = vec![progressing(NEW_RS_AVAILABLE_REASON, "True", 0)];
    d.generation = 2;
    // getNewReplicaSet: a created RS sets NewReplicaSetCreated at t=3600.
    let mut status = d.status.clone();
    set_deployment_condition(&mut status, new_rs_created_condition("web-2", at(3600)));
    d.status = status;
    let new = rs("web-2", 3600, 1, 0);
    let old = rs("web-1", 0, 3, 3);
    for now in [3600, 3630, 3660] {
        let s = sync_rollout_status(&d, Some(&new), std::slice::from_ref(&old), at(now));
        let p = s
            .conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap();
        assert_ne!(p.reason, TIMED_OUT_REASON, "at {now}");
    }
    let s = sync_rollout_status(&d, Some(&new), std::slice::from_ref(&old), at(3661));
    let p = s
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .unwrap();
    assert_eq!(p.reason, TIMED_OUT_REASON);
}

#[test]
fn k9_deadline_detected_on_time_without_resync() {
    // PDS 120 s, last update at t=1000, nothing ever progresses. Each sync that finds no
    // change asks to be requeued; following those requeues alone reaches the timeout in
    // [1120, 1121 + one cycle].
    let mut d = dep(spec(1, json!(1), json!(0)));
    d.spec.progress_deadline_seconds = Some(120);
    d.status = dstatus(1, 0, 0, 0, 1);
    d.status.conditions = vec![progressing(NEW_RS_CREATED_REASON, "True", 1000)];
    let new = rs("web-2", 1000, 1, 0);
    let old = rs("web-1", 0, 0, 0);
    let mut now = at(1000);
    let mut syncs = 0;
    loop {
        syncs += 1;
        let s = sync_rollout_status(&d, Some(&new), std::slice::from_ref(&old), now);
        let p = s
            .conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap();
        if p.reason == TIMED_OUT_REASON {
            break;
        }
        // Only Available is new on the first pass; store it, then requeue.
        d.status = s.clone();
        match requeue_stuck_deployment(&d, &s, now) {
            StuckRequeue::After(after) => {
                let delay = StuckRequeue::After(after).enqueue_delay().unwrap();
                assert_eq!(delay, after + Duration::from_secs(1));
                now += delay;
            }
            StuckRequeue::Now => now += Duration::from_millis(5),
            StuckRequeue::Never => panic!("a stuck rollout must be requeued"),
        }
        assert!(syncs < 10);
    }
    assert!(
        now >= at(1120) && now <= at(1121) + Duration::from_millis(5),
        "{now:?}"
    );
    // Never requeued once timed out, complete, or without a deadline.
    let mut timed = d.clone();
    timed.status.conditions = vec![progressing(TIMED_OUT_REASON, "False", 0)];
    assert_eq!(
        requeue_stuck_deployment(&timed, &timed.status, at(5000)),
        StuckRequeue::Never
    );
    assert_eq!(
        requeue_stuck_deployment(&d, &dstatus(1, 1, 1, 1, 1), at(1000)),
        StuckRequeue::Never
    );
    let mut bare = d.clone();
    bare.status.conditions.clear();
    assert_eq!(
        requeue_stuck_deployment(&bare, &bare.status, at(1000)),
        StuckRequeue::Never
    );
    // Less than a second left: rate-limited now.
    assert_eq!(
        requeue_stuck_deployment(&d, &d.status, at(1119) + Duration::from_millis(500)),
        StuckRequeue::Now
    );
}

#[test]
fn set_condition_and_paused_conditions() {
    let mut s = DeploymentStatus::default();
    set_deployment_condition(&mut s, progressing(RS_UPDATED_REASON, "True", 1));
    set_deployment_condition(
        &mut s,
        Condition {
            message: "x".into(),
            ..progressing(RS_UPDATED_REASON, "True", 2)
        },
    );
    assert_eq!(
        s.conditions[0].last_update_time,
        Some(at(1)),
        "same status+reason: untouched"
    );
    set_deployment_condition(&mut s, progressing(NEW_RS_AVAILABLE_REASON, "True", 3));
    assert_eq!(
        (
            s.conditions[0].last_update_time,
            s.conditions[0].last_transition_time
        ),
        (Some(at(3)), Some(at(1)))
    );
    set_deployment_condition(&mut s, progressing(TIMED_OUT_REASON, "False", 4));
    assert_eq!(s.conditions[0].last_transition_time, Some(at(4)));
    // Paused / resumed.
    let mut d = dep(spec(1, json!(1), json!(0)));
    d.spec.paused = true;
    let st = check_paused_conditions(&d, at(9)).unwrap();
    let p = &st.conditions[0];
    assert_eq!(
        (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
        ("Unknown", PAUSED_REASON, "Deployment is paused")
    );
    d.status = st;
    assert_eq!(check_paused_conditions(&d, at(10)), None);
    d.spec.paused = false;
    let st = check_paused_conditions(&d, at(11)).unwrap();
    assert_eq!(
        (
            st.conditions[0].reason.as_str(),
            st.conditions[0].last_update_time
        ),
        (RESUMED_REASON, Some(at(11)))
    );
    d.spec.progress_deadline_seconds = Some(i32::MAX);
    d.spec.paused = true;
    assert_eq!(check_paused_conditions(&d, at(12)), None);
    // A reported lack of progress is not overwritten by pausing (upstream's
    // checkPausedConditions returns early on ProgressDeadlineExceeded).
    let mut d = dep(spec(1, json!(1), json!(0)));
    d.status.conditions = vec![progressing(TIMED_OUT_REASON, "False", 4)];
    d.spec.paused = true;
    assert_eq!(check_paused_conditions(&d, at(13)), None);
    d.spec.paused = false;
    assert_eq!(check_paused_conditions(&d, at(14)), None);
}

#[test]
fn cleanup_selection_table() {
    let old = |name: &str, created: u64, rev: &str, spec: i32, status: i32| {
        let mut r = with_ann(rs(name, created, spec, 0), &[(REVISION_ANNOTATION, rev)]);
        r.status.replicas = status;
        r
    };
    let olds = vec![
        old("r3", 30, "3", 0, 0),
        old("r1", 10, "1", 0, 0),
        old("r2", 20, "2", 1, 1), // not safe: skipped, not replaced
        old("r4", 40, "4", 0, 0),
        old("r5", 50, "5", 0, 0),
    ];
    assert_eq!(cleanup_plan(&olds, Some(2)), vec!["r1", "r3"]);
    assert_eq!(cleanup_plan(&olds, Some(5)), Vec::<String>::new());
    assert_eq!(cleanup_plan(&olds, None), Vec::<String>::new());
    assert_eq!(cleanup_plan(&olds, Some(0)), vec!["r1", "r3", "r4", "r5"]);
    // Being deleted: not a candidate; unobserved generation: unsafe.
    let mut dying = old("r0", 0, "0", 0, 0);
    dying.deleting = true;
    let mut unobserved = old("r6", 5, "1", 0, 0);
    unobserved.generation = 2;
    unobserved.status.observed_generation = 1;
    let plan = cleanup_plan(&[dying, unobserved, old("r7", 60, "7", 0, 0)], Some(1));
    assert!(plan.is_empty(), "{plan:?}");
    // By revision, not creation time (a rolled-back RS is old by creation, new by revision).
    let olds = vec![
        old("early-but-rev9", 0, "9", 0, 0),
        old("late-rev2", 100, "2", 0, 0),
    ];
    assert_eq!(cleanup_plan(&olds, Some(1)), vec!["late-rev2"]);
}

#[test]
fn hash_and_templates() {
    let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"version": "1", "env": {}}});
    let h = compute_hash(&t, None);
    assert!(
        !h.is_empty() && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{h}"
    );
    assert_eq!(h, compute_hash(&t.clone(), None), "deterministic");
    assert_ne!(
        h,
        compute_hash(&t, Some(1)),
        "collision count changes the hash"
    );
    assert_ne!(compute_hash(&t, Some(1)), compute_hash(&t, Some(2)));
    let t2 = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"version": "2"}});
    assert_ne!(h, compute_hash(&t2, None));
    // Key order and empty members do not matter.
    let same: Value = serde_json::from_str(
        r#"{"spec": {"version": "1"}, "metadata": {"labels": {"app": "web"}, "annotations": {}}}"#,
    )
    .unwrap();
    assert_eq!(h, compute_hash(&same, None));
    assert_eq!(safe_encode("0123456789"), "456789bcdf");
    let hashed = template_with_hash(&t, "abc");
    assert_eq!(
        hashed.pointer("/metadata/labels/pod-template-hash"),
        Some(&json!("abc"))
    );
    assert!(equal_ignore_hash(&hashed, &t));
    assert!(equal_ignore_hash(
        &template_with_hash(&json!({}), "x"),
        &json!({"metadata": {"labels": {}}})
    ));
    assert!(!equal_ignore_hash(&hashed, &t2));
    assert_eq!(
        template_without_hash(&hashed).pointer("/metadata/labels"),
        Some(&json!({"app": "web"}))
    );
}

#[test]
fn new_and_old_replica_sets_and_revisions() {
    let tmpl = |v: &str| json!({"metadata": {"labels": {"app": "web"}}, "spec": {"version": v}});
    let mk = |name: &str, created: u64, v: &str, replicas: i32, rev: &str| {
        let mut r = with_ann(
            rs(name, created, replicas, replicas),
            &[(REVISION_ANNOTATION, rev)],
        );
        r.spec.template = template_with_hash(&tmpl(v), name);
        r
    };
    let rss = vec![
        mk("c", 30, "2", 1, "3"),
        mk("a", 10, "1", 2, "1"),
        mk("b", 20, "2", 0, "2"),
        mk("d", 40, "3", 0, "x"),
    ];
    // Oldest with an equal template wins.
    assert_eq!(find_new_rs(&tmpl("2"), &rss).unwrap().name, "b");
    assert!(find_new_rs(&tmpl("9"), &rss).is_none());
    let (active, all) = find_old_rss(&tmpl("2"), &rss);
    assert_eq!(
        all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "c", "d"]
    );
    assert_eq!(
        active.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
    assert_eq!(max_revision(&rss), 3);
    assert_eq!(last_revision(&rss), 2);
    let dup = vec![
        mk("a", 1, "1", 0, "4"),
        mk("b", 2, "1", 0, "4"),
        mk("c", 3, "1", 0, "1"),
    ];
    assert_eq!(last_revision(&dup), 4, "a duplicate highest counts as last");
    assert_eq!(max_revision(&[] as &[ReplicaSetView]), 0);
    // SetNewReplicaSetAnnotations: copy, bump, history.
    let mut d = dep(spec(3, json!(1), json!(0)));
    d.annotations = BTreeMap::from([
        ("note".to_string(), "x".to_string()),
        (REVISION_ANNOTATION.to_string(), "99".to_string()),
        (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
    ]);
    let mut a = BTreeMap::from([(REVISION_ANNOTATION.to_string(), "2".to_string())]);
    assert!(set_new_replica_set_annotations(&d, &mut a, "5", true, 2000));
    assert_eq!(a.get("note").map(String::as_str), Some("x"));
    assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("5"));
    assert_eq!(
        a.get(REVISION_HISTORY_ANNOTATION).map(String::as_str),
        Some("2")
    );
    assert!(!a.contains_key(LAST_APPLIED_ANNOTATION));
    assert!(
        !a.contains_key(DESIRED_REPLICAS_ANNOTATION),
        "exists: no replicas annotations"
    );
    assert!(set_new_replica_set_annotations(&d, &mut a, "7", true, 2000));
    assert_eq!(
        a.get(REVISION_HISTORY_ANNOTATION).map(String::as_str),
        Some("2,5")
    );
    assert!(
        !set_new_replica_set_annotations(&d, &mut a, "6", true, 2000),
        "never lowered"
    );
    // History trimmed from the front to the limit.
    let mut h = BTreeMap::from([
        (REVISION_ANNOTATION.to_string(), "10".to_string()),
        (REVISION_HISTORY_ANNOTATION.to_string(), "1,2,3".to_string()),
    ]);
    set_new_replica_set_annotations(&d, &mut h, "11", true, 6);
    assert_eq!(
        h.get(REVISION_HISTORY_ANNOTATION).map(String::as_str),
        Some("2,3,10"),
        "oldest entries dropped to fit 6 chars"
    );
    let mut fresh = BTreeMap::new();
    set_new_replica_set_annotations(&d, &mut fresh, "1", false, 2000);
    assert_eq!(
        fresh.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str),
        Some("3")
    );
    assert_eq!(
        fresh.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
        Some("4")
    );
    assert!(!fresh.contains_key(REVISION_HISTORY_ANNOTATION));
    let mut bad = BTreeMap::from([(REVISION_ANNOTATION.to_string(), "x".to_string())]);
    assert!(!set_new_replica_set_annotations(
        &d, &mut bad, "2", true, 2000
    ));
    assert!(!replicas_annotations_need_update(&fresh, 3, 4));
    assert!(replicas_annotations_need_update(&fresh, 3, 5));
    // SetDeploymentRevision: a missing annotation reads as "".
    let mut da = BTreeMap::new();
    assert!(!set_deployment_revision(&mut da, ""));
    assert!(da.is_empty());
    assert!(set_deployment_revision(&mut da, "4"));
    assert!(!set_deployment_revision(&mut da, "4"));
    assert_eq!(da[REVISION_ANNOTATION], "4");
}

#[test]
fn blue_green_bookkeeping_stays_on_the_deployment() {
    // floyd's BlueGreen annotations describe the Deployment now; neither a new ReplicaSet
    // nor a rollback copies them (docs/semantics.md).
    let mut d = dep(spec(3, json!(1), json!(0)));
    d.annotations = BTreeMap::from([
        ("note".to_string(), "x".to_string()),
        (ACTIVE_HASH_ANNOTATION.to_string(), "h2".to_string()),
        (
            SWITCHED_AT_ANNOTATION.to_string(),
            "2026-01-01T00:00:00Z".to_string(),
        ),
        (PROMOTE_ANNOTATION.to_string(), "h3".to_string()),
    ]);
    let mut a = BTreeMap::new();
    set_new_replica_set_annotations(&d, &mut a, "3", true, 2000);
    assert_eq!(
        a.keys().map(String::as_str).collect::<Vec<_>>(),
        ["deployment.kubernetes.io/revision", "note"]
    );
    let stale = BTreeMap::from([
        (ACTIVE_HASH_ANNOTATION.to_string(), "h1".to_string()),
        (PROMOTE_ANNOTATION.to_string(), "h1".to_string()),
        ("note".to_string(), "y".to_string()),
    ]);
    let back = set_deployment_annotations_to(&d.annotations, &stale);
    assert_eq!(back[ACTIVE_HASH_ANNOTATION], "h2");
    assert_eq!(back[PROMOTE_ANNOTATION], "h3");
    assert!(back.contains_key(SWITCHED_AT_ANNOTATION));
    assert_eq!(back["note"], "y");
}

#[test]
fn new_replica_set_object() {
    let owner =
        Object::from_json(&json!({"kind": "Deployment", "metadata": {"name": "web", "uid": "d1"}}))
            .unwrap();
    let mut d = dep(spec(4, json!(1), json!(0)));
    d.spec.selector_json = json!({"matchLabels": {"app": "web"}});
    d.spec.template_labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    d.spec.min_ready_seconds = 5;
    let old = with_ann(rs("web-old", 0, 4, 4), &[(REVISION_ANNOTATION, "3")]);
    let obj = new_replica_set(&owner, &d, &[old]).unwrap();
    let hash = compute_hash(&d.spec.template, None);
    assert_eq!(obj.metadata.name, format!("web-{hash}"));
    assert_eq!(
        obj.metadata.labels.get(POD_TEMPLATE_HASH_LABEL),
        Some(&hash)
    );
    assert_eq!(obj.spec["replicas"], json!(1), "4 old + 1 surge");
    assert_eq!(obj.spec["minReadySeconds"], json!(5));
    assert_eq!(
        obj.spec["selector"]["matchLabels"][POD_TEMPLATE_HASH_LABEL],
        json!(hash)
    );
    assert_eq!(
        obj.spec["template"]["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL],
        json!(hash)
    );
    assert_eq!(
        obj.metadata
            .annotations
            .get(REVISION_ANNOTATION)
            .map(String::as_str),
        Some("4")
    );
    assert_eq!(obj.metadata.owner_references[0].uid, "d1");
    // It decodes as a valid ReplicaSet whose template equals the deployment's.
    let back = ReplicaSetView::from_object(&obj).unwrap();
    assert!(equal_ignore_hash(&back.spec.template, &d.spec.template));
    d.status.collision_count = Some(1);
    assert_ne!(
        new_replica_set(&owner, &d, &[]).unwrap().metadata.name,
        obj.metadata.name
    );
}

#[test]
fn rollback_outcomes() {
    let tmpl = |v: &str| json!({"metadata": {"labels": {"app": "web"}}, "spec": {"version": v}});
    let mk = |name: &str, created: u64, v: &str, rev: &str| {
        let mut r = with_ann(
            rs(name, created, 0, 0),
            &[(REVISION_ANNOTATION, rev), ("change-cause", name)],
        );
        r.spec.template = template_with_hash(&tmpl(v), name);
        r
    };
    let mut d = dep(spec(3, json!(1), json!(0)));
    d.spec.template = tmpl("3");
    d.annotations = BTreeMap::from([
        (REVISION_ANNOTATION.to_string(), "3".to_string()),
        ("change-cause".to_string(), "v3".to_string()),
        (ROLLBACK_TO_ANNOTATION.to_string(), "0".to_string()),
    ]);
    assert_eq!(rollback_to(&d), Some(0));
    let olds = vec![mk("v1", 1, "1", "1"), mk("v2", 2, "2", "2")];
    let new = mk("v3", 3, "3", "3");
    match rollback_plan(&d, 0, Some(&new), &olds) {
        RollbackOutcome::RolledBack {
            revision,
            template,
            annotations,
            message,
        } => {
            assert_eq!(revision, 2);
            assert_eq!(template, tmpl("2"), "hash label dropped");
            assert_eq!(
                annotations.get("change-cause").map(String::as_str),
                Some("v2")
            );
            assert_eq!(
                annotations.get(REVISION_ANNOTATION).map(String::as_str),
                Some("3"),
                "skip list kept"
            );
            assert_eq!(message, "Rolled back deployment \"web\" to revision 2");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rollback_plan(&d, 1, Some(&new), &olds),
        RollbackOutcome::RolledBack { revision: 1, .. }
    ));
    assert!(matches!(
        rollback_plan(&d, 3, Some(&new), &olds),
        RollbackOutcome::TemplateUnchanged { revision: 3, .. }
    ));
    assert_eq!(
        rollback_plan(&d, 7, Some(&new), &olds),
        RollbackOutcome::NotFound {
            message: "Unable to find the revision to rollback to.".into()
        }
    );
    assert_eq!(
        rollback_plan(&d, 0, Some(&new), &[]),
        RollbackOutcome::NotFound {
            message: "Unable to find last revision.".into()
        }
    );
    d.annotations
        .insert(ROLLBACK_TO_ANNOTATION.into(), "x".into());
    assert_eq!(rollback_to(&d), None);
}

fn instance(owner: &str, phase: &str, deleting: bool) -> InstanceView {
    InstanceView {
        phase: phase.into(),
        deleting,
        controller_uid: Some(format!("uid-{owner}")),
        ..Default::default()
    }
}

#[test]
fn recreate_steps_and_k11() {
    let d = DeploymentSpec {
        replicas: 3,
        strategy: Strategy::Recreate,
        ..Default::default()
    };
    let new = rs("new", 9, 0, 0);
    let mut old = rs("old", 0, 3, 3);
    assert_eq!(
        recreate_step(&d, Some(&new), std::slice::from_ref(&old), &[]),
        RecreateStep::ScaleOldToZero(vec![Scale {
            name: "old".into(),
            from: 3,
            to: 0
        }])
    );
    // Scaled to 0 but the RS still reports replicas: wait.
    old.spec.replicas = 0;
    assert_eq!(
        recreate_step(&d, Some(&new), std::slice::from_ref(&old), &[]),
        RecreateStep::WaitForOld
    );
    old.status.replicas = 0;
    // (K11a) an old instance still stopping (deletionTimestamp, Running) blocks.
    let stopping = [instance("old", "Running", true)];
    assert_eq!(
        recreate_step(&d, Some(&new), std::slice::from_ref(&old), &stopping),
        RecreateStep::WaitForOld
    );
    assert_eq!(
        recreate_step(
            &d,
            None,
            std::slice::from_ref(&old),
            &[instance("old", "Unknown", false)]
        ),
        RecreateStep::WaitForOld
    );
    assert_eq!(
        recreate_step(
            &d,
            None,
            std::slice::from_ref(&old),
            &[instance("old", "Pending", false)]
        ),
        RecreateStep::WaitForOld
    );
    // (K11b) terminal instances do not block.
    let terminal = [
        instance("old", "Failed", false),
        instance("old", "Succeeded", false),
    ];
    assert_eq!(
        recreate_step(&d, None, std::slice::from_ref(&old), &terminal),
        RecreateStep::CreateNew
    );
    // The new RS's own instances never block.
    let own = [instance("new", "Running", false)];
    assert_eq!(
        recreate_step(&d, Some(&new), std::slice::from_ref(&old), &own),
        RecreateStep::ScaleNew(Some(Scale {
            name: "new".into(),
            from: 0,
            to: 3
        }))
    );
    assert_eq!(
        recreate_step(&d, Some(&rs("new", 9, 3, 3)), &[old], &own),
        RecreateStep::ScaleNew(None)
    );
}

#[test]
fn blue_green_plan_table() {
    let d = DeploymentSpec {
        replicas: 3,
        strategy: Strategy::BlueGreen {
            auto_promote: true,
            scale_down_delay_seconds: 30,
        },
        ..Default::default()
    };
    let old = [rs("blue", 0, 3, 3)];
    // Preview grows to full size beside the old one; no switch yet.
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 0, 0),
        &old,
        0,
        at(100),
        None,
        false,
        false,
    );
    assert_eq!(
        p.scale_new,
        Some(Scale {
            name: "green".into(),
            from: 0,
            to: 3
        })
    );
    assert!(!p.promote && p.scale_old.is_empty() && p.scale_old_to_zero_at.is_none());
    // Full size but only 2 available: wait.
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 3, 2),
        &old,
        2,
        at(100),
        None,
        false,
        false,
    );
    assert_eq!(p, BlueGreenPlan::default());
    // All available: promote now; old scales down 30 s later.
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 3, 3),
        &old,
        3,
        at(100),
        None,
        false,
        false,
    );
    assert!(p.promote);
    assert_eq!(p.scale_old_to_zero_at, Some(at(130)));
    assert!(p.scale_old.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
    // After the switch, before the delay: nothing; at the delay: old to zero.
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 3, 3),
        &old,
        3,
        at(129),
        Some(at(100)),
        false,
        false,
    );
    assert!(!p.promote && p.scale_old.is_empty());
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 3, 3),
        &old,
        3,
        at(130),
        Some(at(100)),
        false,
        false,
    );
    assert_eq!(
        p.scale_old,
        vec![Scale {
            name: "blue".into(),
            from: 3,
            to: 0
        }]
    );
    // Manual promotion.
    let manual = DeploymentSpec {
        strategy: Strategy::BlueGreen {
            auto_promote: false,
            scale_down_delay_seconds: 0,
        },
        ..d.clone()
    };
    let p = blue_green_plan(
        &manual,
        &rs("green", 9, 3, 3),
        &old,
        3,
        at(100),
        None,
        false,
        false,
    );
    assert!(!p.promote);
    let p = blue_green_plan(
        &manual,
        &rs("green", 9, 3, 3),
        &old,
        3,
        at(100),
        None,
        true,
        false,
    );
    assert!(p.promote);
    assert_eq!(
        p.scale_old,
        vec![Scale {
            name: "blue".into(),
            from: 3,
            to: 0
        }],
        "zero delay"
    );
    // Deadline passed before the switch: abort; after the switch a timeout changes nothing.
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 3, 1),
        &old,
        1,
        at(900),
        None,
        false,
        true,
    );
    assert!(p.abort && !p.promote);
    let p = blue_green_plan(
        &d,
        &rs("green", 9, 3, 1),
        &old,
        1,
        at(900),
        Some(at(0)),
        false,
        true,
    );
    assert!(!p.abort);
}

#[test]
fn termination_complete_counts_stopping_instances() {
    // K5 / KEP-3973: R = 15, 25 %/25 % (S = 4). Old at 12 spec with 3 still stopping, new
    // at 4: Σ spec = 16 leaves room for 3 under upstream's default, none once the stopping
    // instances count.
    let d = spec(15, json!("25%"), json!("25%"));
    let (old, new) = (rs("old", 0, 12, 12), rs("new", 1, 4, 4));
    let olds = std::slice::from_ref(&old);
    assert_eq!(new_rs_new_replicas(&d, &new, olds).unwrap(), 7);
    let count = |live, stopping| InstanceCount { live, stopping };
    let instances = BTreeMap::from([
        ("old".to_string(), count(12, 3)),
        ("new".to_string(), count(4, 0)),
    ]);
    let surplus = instance_surplus(&[old.clone(), new.clone()], &instances);
    assert_eq!(surplus, 3);
    assert_eq!(
        new_rs_new_replicas_with(&d, &new, olds, surplus).unwrap(),
        4
    );
    assert_eq!(new_rs_new_replicas_with(&d, &new, olds, 1).unwrap(), 6);
    // A negative surplus is no surplus.
    assert_eq!(new_rs_new_replicas_with(&d, &new, olds, -5).unwrap(), 7);
    // When the new ReplicaSet cannot grow, the old ones are still reconciled: 4 new
    // available lets the old one shrink (min available 12 of 16 available).
    assert_eq!(
        rolling_update_step_with(&d, &new, olds, surplus).unwrap(),
        RollingStep::ScaleOld {
            scales: vec![Scale {
                name: "old".into(),
                from: 12,
                to: 8
            }],
            scaled: true
        }
    );
    assert!(matches!(
        rolling_update_step(&d, &new, olds).unwrap(),
        RollingStep::ScaleNew(Scale { to: 7, .. })
    ));

    // A growing ReplicaSet's own stopping instances add to its size, not to its live ones.
    let growing = BTreeMap::from([
        ("old".to_string(), count(12, 0)),
        ("new".to_string(), count(2, 1)),
    ]);
    assert_eq!(instance_surplus(&[old.clone(), new.clone()], &growing), 1);

    // cap_scale_ups: (sizes, instances as (name, live, stopping), scales as (name, from,
    // to), limit, expected `to`s)
    type Case<'a> = (
        &'a [(&'a str, i32)],
        &'a [(&'a str, i64, i64)],
        &'a [(&'a str, i32, i32)],
        i64,
        &'a [i32],
    );
    let cases: &[Case] = &[
        // Nothing stopping: the scale-up stands.
        (&[("a", 2)], &[("a", 2, 0)], &[("a", 2, 5)], 5, &[5]),
        // 5 → 2 while 3 still stop, then back to 5: waits for them.
        (&[("a", 2)], &[("a", 2, 3)], &[("a", 2, 5)], 5, &[2]),
        (&[("a", 2)], &[("a", 2, 2)], &[("a", 2, 5)], 5, &[3]),
        // Another ReplicaSet's stopping instances take room too.
        (
            &[("a", 3), ("b", 0)],
            &[("a", 3, 0), ("b", 0, 2)],
            &[("a", 3, 6)],
            6,
            &[4],
        ),
        // In order: the first scale-up takes the room, the second keeps its size; a
        // scale-down passes unchanged.
        (
            &[("a", 2), ("b", 2), ("c", 2)],
            &[("a", 2, 0), ("b", 2, 0), ("c", 2, 1)],
            &[("a", 2, 4), ("b", 2, 4), ("c", 2, 1)],
            8,
            &[3, 2, 1],
        ),
        // Already above the limit: never shrunk by the cap.
        (&[("a", 4)], &[("a", 4, 5)], &[("a", 4, 6)], 5, &[4]),
    ];
    for (sizes, inst, scales, limit, want) in cases {
        let rss: Vec<ReplicaSetView> = sizes
            .iter()
            .enumerate()
            .map(|(i, (n, r))| rs(n, i as u64, *r, *r))
            .collect();
        let instances: BTreeMap<String, InstanceCount> = inst
            .iter()
            .map(|(n, l, st)| (n.to_string(), count(*l, *st)))
            .collect();
        let scales: Vec<Scale> = scales
            .iter()
            .map(|(n, from, to)| Scale {
                name: n.to_string(),
                from: *from,
                to: *to,
            })
            .collect();
        let got: Vec<i32> = cap_scale_ups(&scales, &rss, &instances, *limit)
            .iter()
            .map(|s| s.to)
            .collect();
        assert_eq!(&got, want, "{sizes:?} {inst:?} {scales:?} ≤ {limit}");
    }

    // The limit per strategy; only TerminationComplete waits.
    let mut d = spec(15, json!("25%"), json!("25%"));
    assert_eq!(d.instance_limit(), Some(19));
    assert!(!d.waits_for_termination());
    d.pod_replacement_policy = Some(PodReplacementPolicy::TerminationStarted);
    assert!(!d.waits_for_termination());
    d.pod_replacement_policy = Some(PodReplacementPolicy::TerminationComplete);
    assert!(d.waits_for_termination());
    d.strategy = Strategy::Recreate;
    assert_eq!(d.instance_limit(), Some(15));
    d.strategy = Strategy::BlueGreen {
        auto_promote: true,
        scale_down_delay_seconds: 30,
    };
    assert_eq!(d.instance_limit(), None);
}

#[test]
fn deployment_spec_validation() {
    let ok = json!({"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "1"}}});
    let s = DeploymentSpec::from_spec(&ok).unwrap();
    assert_eq!(s.replicas, 3);
    assert_eq!(s.strategy, Strategy::default());
    assert_eq!(
        (
            s.revision_history_limit,
            s.progress_deadline_seconds,
            s.paused
        ),
        (Some(10), Some(600), false)
    );
    let with = |path: &str, v: Value| {
        let mut s = ok.clone();
        let (parent, key) = path.rsplit_once('/').unwrap();
        s.pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_string(), v);
        s
    };
    let field = |s: Value| {
        DeploymentSpec::from_spec(&s)
            .unwrap_err()
            .field()
            .unwrap()
            .to_string()
    };
    for v in [
        json!(-1),
        json!(2147483648u64),
        json!(1.5),
        json!("3"),
        json!(true),
    ] {
        assert_eq!(field(with("/replicas", v)), "spec.replicas");
    }
    // podReplacementPolicy (KEP-3973): absent is the strategy's default; unknown values and
    // non-strings are Invalid naming the field.
    assert_eq!(s.pod_replacement_policy, None);
    for (v, want) in [
        (
            json!("TerminationStarted"),
            Some(PodReplacementPolicy::TerminationStarted),
        ),
        (
            json!("TerminationComplete"),
            Some(PodReplacementPolicy::TerminationComplete),
        ),
        (Value::Null, None),
    ] {
        let got = DeploymentSpec::from_spec(&with("/podReplacementPolicy", v)).unwrap();
        assert_eq!(got.pod_replacement_policy, want);
    }
    for v in [
        json!("terminationComplete"),
        json!(""),
        json!(1),
        json!(["TerminationComplete"]),
    ] {
        let e = DeploymentSpec::from_spec(&with("/podReplacementPolicy", v)).unwrap_err();
        assert_eq!(e.kind(), floyd::ErrorKind::Invalid);
        assert_eq!(e.field(), Some("spec.podReplacementPolicy"));
    }
    let ru = |surge: Value, unavail: Value| {
        with(
            "/strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}),
        )
    };
    assert_eq!(
        field(ru(json!(0), json!(0))),
        "spec.strategy.rollingUpdate.maxUnavailable"
    );
    assert_eq!(
        field(ru(json!("0%"), json!(0))),
        "spec.strategy.rollingUpdate.maxUnavailable"
    );
    assert_eq!(
        field(ru(json!(1), json!("101%"))),
        "spec.strategy.rollingUpdate.maxUnavailable"
    );
    assert_eq!(
        field(ru(json!("abc%"), json!(1))),
        "spec.strategy.rollingUpdate.maxSurge"
    );
    assert_eq!(
        field(ru(json!("-1"), json!(1))),
        "spec.strategy.rollingUpdate.maxSurge"
    );
    assert_eq!(
        field(ru(json!(""), json!(1))),
        "spec.strategy.rollingUpdate.maxSurge"
    );
    assert_eq!(
        field(ru(json!(true), json!(1))),
        "spec.strategy.rollingUpdate.maxSurge"
    );
    assert!(DeploymentSpec::from_spec(&ru(json!("150%"), json!(0))).is_ok());
    let partial = with("/strategy", json!({"rollingUpdate": {"maxSurge": 2}}));
    assert_eq!(
        DeploymentSpec::from_spec(&partial).unwrap().strategy,
        Strategy::RollingUpdate {
            max_surge: IntOrString::Int(2),
            max_unavailable: IntOrString::Str("25%".into())
        }
    );
    assert_eq!(
        field(with(
            "/strategy",
            json!({"type": "Recreate", "rollingUpdate": {}})
        )),
        "spec.strategy.rollingUpdate"
    );
    assert_eq!(
        field(with("/strategy", json!({"type": "Canary"}))),
        "spec.strategy.type"
    );
    assert_eq!(
        DeploymentSpec::from_spec(&with("/strategy", json!({"type": "Recreate"})))
            .unwrap()
            .strategy,
        Strategy::Recreate
    );
    let bg = DeploymentSpec::from_spec(&with("/strategy", json!({"type": "BlueGreen"}))).unwrap();
    assert_eq!(
        bg.strategy,
        Strategy::BlueGreen {
            auto_promote: true,
            scale_down_delay_seconds: 30
        }
    );
    let bg = DeploymentSpec::from_spec(&with("/strategy", json!({"type": "BlueGreen", "blueGreen": {"autoPromote": false, "scaleDownDelaySeconds": 0}}))).unwrap();
    assert_eq!(
        bg.strategy,
        Strategy::BlueGreen {
            auto_promote: false,
            scale_down_delay_seconds: 0
        }
    );
    assert_eq!(
        field(with(
            "/strategy",
            json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": -1}})
        )),
        "spec.strategy.blueGreen.scaleDownDelaySeconds"
    );
    assert_eq!(
        field(with(
            "/strategy",
            json!({"type": "BlueGreen", "blueGreen": {"autoPromote": "yes"}})
        )),
        "spec.strategy.blueGreen.autoPromote"
    );
    assert_eq!(
        field(with("/minReadySeconds", json!(-1))),
        "spec.minReadySeconds"
    );
    assert_eq!(
        field(with("/revisionHistoryLimit", json!(-1))),
        "spec.revisionHistoryLimit"
    );
    assert_eq!(
        field(with("/progressDeadlineSeconds", json!(0))),
        "spec.progressDeadlineSeconds"
    );
    let mrs = with("/minReadySeconds", json!(600));
    assert_eq!(
        field(mrs),
        "spec.progressDeadlineSeconds",
        "must exceed minReadySeconds"
    );
    assert_eq!(field(with("/paused", json!("no"))), "spec.paused");
    assert_eq!(field(with("/selector", json!({}))), "spec.selector");
    assert_eq!(
        field(with(
            "/template",
            json!({"metadata": {"labels": {"app": "x"}}})
        )),
        "spec.template.metadata.labels"
    );
    let obj = Object::from_json(&json!({"kind": "Deployment", "metadata": {"name": "web", "generation": 2},
        "spec": ok, "status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True"}]}})).unwrap();
    let v = DeploymentView::from_object(&obj).unwrap();
    assert_eq!(
        (v.generation, v.status.replicas, v.status.conditions.len()),
        (2, 3, 1)
    );
    assert_eq!(
        DeploymentStatus::from_json(&v.status.to_json()).unwrap(),
        v.status
    );
}
