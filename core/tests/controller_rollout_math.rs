//! Property tests mirroring the `int_or_percent` and `rollout_math` fuzz oracles
//! (reliability.md §3(c)): fencepost resolution equals exact integer arithmetic; new-RS sizes
//! and proportional scaling equal a straight port of upstream; a rolling update never holds
//! more than R + S replicas in spec and never scales a ReplicaSet below zero; scaling keeps
//! Σ spec = R' + S' (K7).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use floyd::controller::deployment::util::*;
use floyd::controller::deployment::{
    DeploymentSpec, DeploymentStatus, DeploymentView, RollingStep, Strategy as RolloutStrategy,
    rolling_update_step,
};
use floyd::controller::intstr::IntOrString;
use floyd::controller::replicaset::{ReplicaSetSpec, ReplicaSetStatus, ReplicaSetView};
use proptest::prelude::*;

fn rs(name: String, created: u64, replicas: i32, available: i32) -> ReplicaSetView {
    ReplicaSetView {
        name,
        creation: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(created)),
        spec: ReplicaSetSpec {
            replicas,
            ..Default::default()
        },
        status: ReplicaSetStatus {
            replicas,
            available_replicas: available,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn value() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        (0i32..6).prop_map(IntOrString::Int),
        (0i64..=150).prop_map(|p| IntOrString::Str(format!("{p}%"))),
    ]
}

/// Exact integer oracle for `ceil`/`floor(n · total / 100)`.
fn exact(v: &IntOrString, total: i32, up: bool) -> i64 {
    match v {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::Str(s) => {
            let n: i64 = s.trim_end_matches('%').parse().unwrap();
            let x = n * i64::from(total);
            if up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn int_or_percent_matches_exact_arithmetic(
        surge in prop_oneof![(0i32..=i32::MAX).prop_map(IntOrString::Int), (0i64..=100_000).prop_map(|p| IntOrString::Str(format!("{p}%")))],
        unavail in prop_oneof![(0i32..=i32::MAX).prop_map(IntOrString::Int), (0i64..=100).prop_map(|p| IntOrString::Str(format!("{p}%")))],
        r in 0i32..=i32::MAX,
    ) {
        let (s, u) = resolve_fenceposts(&surge, &unavail, r).unwrap();
        let small = |v: &IntOrString| match v {
            IntOrString::Int(_) => true,
            IntOrString::Str(p) => p.trim_end_matches('%').parse::<i64>().unwrap() * i64::from(r) < (1 << 40),
        };
        if small(&surge) && small(&unavail) {
            let es = exact(&surge, r, true).min(i64::from(i32::MAX));
            let mut eu = exact(&unavail, r, false).min(i64::from(i32::MAX));
            if es == 0 && eu == 0 {
                eu = 1;
            }
            prop_assert_eq!((i64::from(s), i64::from(u)), (es, eu));
        }
        prop_assert!(s >= 0 && u >= 0);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,12}", r in 0i32..=i32::MAX) {
        let v = IntOrString::Str(s);
        let _ = v.scaled_value(r, true);
        let _ = floyd::controller::intstr::validate_rolling_update(&v, &v, "p");
    }
}

fn rolling_spec(r: i32, surge: IntOrString, unavail: IntOrString) -> Option<DeploymentSpec> {
    floyd::controller::intstr::validate_rolling_update(&surge, &unavail, "p").ok()?;
    Some(DeploymentSpec {
        replicas: r,
        strategy: RolloutStrategy::RollingUpdate {
            max_surge: surge,
            max_unavailable: unavail,
        },
        ..Default::default()
    })
}

/// Upstream `NewRSNewReplicas`, ported directly.
fn oracle_new_rs(d: &DeploymentSpec, new: i64, all: i64) -> i64 {
    let RolloutStrategy::RollingUpdate { max_surge, .. } = &d.strategy else {
        unreachable!()
    };
    let surge = exact(max_surge, d.replicas, true);
    let max_total = i64::from(d.replicas) + surge;
    if all >= max_total {
        return new;
    }
    new + (max_total - all).min(i64::from(d.replicas) - new)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn new_rs_new_replicas_equals_upstream(
        r in 0i32..60, surge in value(), unavail in value(),
        olds in prop::collection::vec(0i32..40, 0..4), new in 0i32..60,
    ) {
        let Some(d) = rolling_spec(r, surge, unavail) else { return Ok(()); };
        let old_rss: Vec<ReplicaSetView> = olds.iter().enumerate().map(|(i, &n)| rs(format!("o{i}"), i as u64, n, n)).collect();
        let all = i64::from(new) + olds.iter().map(|&n| i64::from(n)).sum::<i64>();
        let got = new_rs_new_replicas(&d, &rs("n".into(), 99, new, 0), &old_rss).unwrap();
        prop_assert_eq!(i64::from(got), oracle_new_rs(&d, i64::from(new), all));
    }

    /// A whole rolling update with arbitrary availability: Σ spec ≤ R + S after every step
    /// once it started there, no ReplicaSet negative, and with everything available the
    /// rollout completes.
    #[test]
    fn rolling_update_stays_within_surge(
        r in 0i32..40, surge in value(), unavail in value(),
        olds in prop::collection::vec(0i32..15, 1..4),
        avail_seeds in prop::collection::vec(0u32..1000, 64),
    ) {
        let Some(d) = rolling_spec(r, surge, unavail) else { return Ok(()); };
        let (s, _) = resolve_fenceposts(
            match &d.strategy { RolloutStrategy::RollingUpdate { max_surge, .. } => max_surge, _ => unreachable!() },
            match &d.strategy { RolloutStrategy::RollingUpdate { max_unavailable, .. } => max_unavailable, _ => unreachable!() },
            r,
        ).unwrap();
        let cap = i64::from(r) + i64::from(s);
        let mut old_rss: Vec<ReplicaSetView> = olds.iter().enumerate().map(|(i, &n)| rs(format!("o{i}"), i as u64, n, n)).collect();
        let mut new = rs("n".into(), 99, 0, 0);
        let total = |o: &[ReplicaSetView], n: &ReplicaSetView| o.iter().map(|x| i64::from(x.spec.replicas)).sum::<i64>() + i64::from(n.spec.replicas);
        let started_within = total(&old_rss, &new) <= cap;
        let mut all_available = false;
        // Seeded random availability for the first half of the seeds, then everything that
        // exists becomes available until the rollout settles (bounded: every other step
        // moves at least one replica).
        let settle = avail_seeds.len() + 4 * (cap as usize + olds.iter().map(|&n| n as usize).sum::<usize>()) + 8;
        for step in 0..settle {
            let seed = avail_seeds.get(step).copied().unwrap_or(0);
            if step == avail_seeds.len() / 2 { all_available = true; }
            let set_avail = |x: &mut ReplicaSetView, salt: u32| {
                let spec = x.spec.replicas;
                let a = if all_available || spec == 0 { spec } else { ((seed.wrapping_mul(2654435761) ^ salt) % (spec as u32 + 1)) as i32 };
                x.status.replicas = spec;
                x.status.available_replicas = a.min(spec);
            };
            set_avail(&mut new, 7);
            for (i, o) in old_rss.iter_mut().enumerate() { set_avail(o, i as u32); }
            match rolling_update_step(&d, &new, &old_rss).unwrap() {
                RollingStep::ScaleNew(sc) => { new.spec.replicas = sc.to; }
                RollingStep::ScaleOld { scales, .. } => {
                    for sc in scales {
                        let o = old_rss.iter_mut().find(|o| o.name == sc.name).unwrap();
                        prop_assert!(sc.to < o.spec.replicas, "old RSs only shrink");
                        o.spec.replicas = sc.to;
                    }
                }
                RollingStep::Idle => {}
            }
            prop_assert!(new.spec.replicas >= 0 && old_rss.iter().all(|o| o.spec.replicas >= 0));
            if started_within {
                prop_assert!(total(&old_rss, &new) <= cap, "Σ spec {} > R+S {}", total(&old_rss, &new), cap);
            }
        }
        if started_within {
            prop_assert_eq!(new.spec.replicas, r, "rollout completes");
            prop_assert_eq!(old_rss.iter().map(|o| o.spec.replicas).sum::<i32>(), 0);
        }
    }

    /// K7: proportional scaling from a consistent state gives Σ spec = R' + S', no RS
    /// negative, and equals a straight port of upstream.
    #[test]
    fn proportional_scaling_equals_upstream(
        sizes in prop::collection::vec(1i32..30, 2..5),
        new_r in 0i32..120, surge in value(), unavail in value(),
    ) {
        let Some(spec) = rolling_spec(new_r, surge, unavail) else { return Ok(()); };
        let before_max: i32 = sizes.iter().sum();
        let rss: Vec<ReplicaSetView> = sizes.iter().enumerate().map(|(i, &n)| {
            let mut r = rs(format!("r{i}"), i as u64, n, n);
            r.annotations = BTreeMap::from([
                (MAX_REPLICAS_ANNOTATION.to_string(), before_max.to_string()),
                (DESIRED_REPLICAS_ANNOTATION.to_string(), (before_max + 1).to_string()),
            ]);
            r
        }).collect();
        let d = DeploymentView { spec, status: DeploymentStatus { replicas: before_max, ..Default::default() }, ..Default::default() };
        let plan = scale_plan(&d, None, &rss);
        let allowed = if new_r > 0 { i64::from(new_r) + i64::from(max_surge(&d.spec)) } else { 0 };
        prop_assert!(plan.iter().all(|s| s.to >= 0));
        prop_assert_eq!(plan.iter().map(|s| i64::from(s.to)).sum::<i64>(), allowed);
        // Straight port of upstream's scale() for the proportional branch.
        let mut order: Vec<(i32, u64, String)> = rss.iter().enumerate().map(|(i, r)| (r.spec.replicas, i as u64, r.name.clone())).collect();
        let to_add = allowed - i64::from(before_max);
        if to_add > 0 {
            order.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        } else if to_add < 0 {
            order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let dmax = allowed as f64;
        let mut added = 0i64;
        let mut want: Vec<(String, i64)> = Vec::new();
        for (size, _, name) in &order {
            let size = i64::from(*size);
            let p = if to_add == 0 || to_add == added {
                0
            } else {
                let fraction = if new_r == 0 {
                    -size
                } else {
                    let f = (size as f64) * dmax / f64::from(before_max);
                    (if f < 0.0 { (f - 0.5) as i64 } else { (f + 0.5) as i64 }) - size
                };
                if to_add > 0 { fraction.min(to_add - added) } else { fraction.max(to_add - added) }
            };
            added += p;
            want.push((name.clone(), size + p));
        }
        if to_add != 0 {
            want[0].1 = (want[0].1 + to_add - added).max(0);
        }
        let got: Vec<(String, i64)> = plan.iter().map(|s| (s.name.clone(), i64::from(s.to))).collect();
        prop_assert_eq!(got, want);
    }
}
